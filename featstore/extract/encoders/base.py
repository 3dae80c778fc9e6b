"""The encoder contract and the registry of encoders by name.

The registry follows lhotse's feature-writer registry: a dict filled by a class
decorator, so ``--video-encoder r2plus1d_18`` and the store attribute
``modalities.video.encoder == "r2plus1d_18"`` are the same string, and adding an
encoder is one decorated class.

Every encoder declares

* ``modality`` (``audio``/``video``) and the decode preprocessing it needs
  (:class:`~featstore.extract.decode.VideoSpec` / :class:`~featstore.extract.decode.AudioSpec`);
* its ``config``: every number that affects the output (frame count, crop, fbank
  parameters, normalisation constants, pooling) -- saved in the store so a store can
  refuse to be continued with something else;
* its weights identity (``weights_id``): the torchvision/torchaudio enum name for the
  library's own weights, ``sha256:<hex>`` for a local checkpoint, ``random`` for
  seeded random initialisation (``pretrained=False``), ``none`` for weightless
  front ends.

Outputs are deterministic: random initialisation is seeded, models run in eval mode
under ``torch.inference_mode``, and per-clip results never depend on which other
clips share a batch for the weightless encoders; for the neural ones the extraction
loop always forms the same batches (rows of one chunk, in order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from featstore.errors import InputError
from featstore.extract.specs import AudioSpec, VideoSpec
from featstore.store.schema import ModalitySpec

_REGISTRY: dict[str, type[Encoder]] = {}


def register_encoder(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator adding an encoder under ``name`` (lhotse-style registry)."""

    def wrap(cls: type[Encoder]) -> type[Encoder]:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def encoder_class(name: str) -> type[Encoder]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(
            f"unknown encoder {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_encoder(
    name: str, *, weights: str = "default", device: str = "cpu", **config: Any
) -> Encoder:
    """Instantiate a registered encoder; ``config`` overrides its preprocessing defaults."""
    return encoder_class(name)(weights=weights, device=device, **config)


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    modality: str
    dim: int
    weightless: bool
    default_weights: str
    description: str
    config: dict[str, Any]


def list_encoders(modality: str | None = None) -> list[EncoderInfo]:
    """Registered encoders (optionally of one modality) with their default config."""
    out = []
    for name in sorted(_REGISTRY):
        cls = _REGISTRY[name]
        if modality is not None and cls.modality != modality:
            continue
        cfg = {**cls.defaults}
        out.append(
            EncoderInfo(
                name=name,
                modality=cls.modality,
                dim=cls.output_dim(cfg),
                weightless=cls.weightless,
                default_weights="none" if cls.weightless else cls.default_weights_name,
                description=(cls.__doc__ or "").strip().splitlines()[0],
                config=cfg,
            )
        )
    return out


class Encoder:
    """Base class.  Subclasses set the class attributes and implement ``_encode``."""

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    weightless: ClassVar[bool] = False
    default_weights_name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, weights: str = "default", device: str = "cpu", **overrides: Any):
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise InputError(
                f"encoder {self.name!r}: unknown option(s) {sorted(unknown)}; it accepts {sorted(self.defaults)}"
            )
        self.config: dict[str, Any] = {**self.defaults, **overrides}
        self.device = device
        self.requested_weights = weights
        if self.weightless:
            if weights not in ("default", "none", "random"):
                raise InputError(f"encoder {self.name!r} has no weights; got weights={weights!r}")
            self.weights_id, self.pretrained = "none", False
        else:
            self.weights_id, self.pretrained = "", False  # set by _load
        self.dim = self.output_dim(self.config)

    @classmethod
    def output_dim(cls, config: dict[str, Any]) -> int:
        raise NotImplementedError

    @property
    def video_spec(self) -> VideoSpec | None:
        return None

    @property
    def audio_spec(self) -> AudioSpec | None:
        return None

    def spec(self) -> ModalitySpec:
        """What goes into the store attributes for this modality."""
        spec = self.video_spec or self.audio_spec
        if spec is None:
            raise TypeError(f"encoder {self.name!r} declares neither a video nor an audio spec")
        pre = spec.to_json()
        cfg = {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()},
            "preprocessing": pre,
        }
        return ModalitySpec(
            encoder=self.name,
            dim=self.dim,
            weights=self.weights_id,
            pretrained=self.pretrained,
            config=cfg,
        )

    def encode(self, items: Sequence[np.ndarray]) -> np.ndarray:
        """Embed decoded clips (frames (T,H,W,3) uint8 or audio (S,) float32) -> (B, dim) float32."""
        if len(items) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(self._encode(items), dtype=np.float32)
        if out.shape != (len(items), self.dim):
            raise RuntimeError(
                f"encoder {self.name} produced {out.shape}, expected {(len(items), self.dim)}"
            )
        return out

    def _encode(self, items: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError
