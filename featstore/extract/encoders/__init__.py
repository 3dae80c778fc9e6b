"""Encoders: clip -> one fixed-size embedding per modality, registered by name.

The registry follows lhotse's feature-writer registry (``lhotse/features/io.py``): a
dict filled by a class decorator, so
``--video-encoder r2plus1d_18`` and the store attribute
``modalities.video.encoder == "r2plus1d_18"`` are the same string, and adding an
encoder is one decorated class in ``audio.py`` or ``video.py``.

* ``base``: the :class:`Encoder` contract and the registry (:func:`register_encoder`,
  :func:`get_encoder`, :func:`list_encoders`);
* ``torch_base``: :class:`TorchEncoder`, the default/local/random weights contract;
* ``audio``: kaldi-fbank, hubert_base, wav2vec2_base;
* ``video``: frame-stats, r2plus1d_18, r3d_18, s3d, mvit_v2_s, resnet18.

Importing the package registers every encoder; torch is imported only when an
encoder is built or used.
"""

from featstore.extract.encoders import audio, video  # noqa: F401  (register the encoders)
from featstore.extract.encoders.base import (
    Encoder,
    EncoderInfo,
    encoder_class,
    get_encoder,
    list_encoders,
    register_encoder,
)
from featstore.extract.encoders.torch_base import (
    TorchEncoder,
    load_hub_state_dict,
    load_local_checkpoint,
    offline,
)

__all__ = [
    "Encoder",
    "EncoderInfo",
    "TorchEncoder",
    "encoder_class",
    "get_encoder",
    "list_encoders",
    "load_hub_state_dict",
    "load_local_checkpoint",
    "offline",
    "register_encoder",
]
