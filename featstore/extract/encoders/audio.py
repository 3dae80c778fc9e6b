"""Audio encoders: the Kaldi fbank front end (weightless) and wav2vec 2.0 / HuBERT."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from featstore.errors import InputError
from featstore.extract.encoders.base import Encoder, register_encoder
from featstore.extract.encoders.torch_base import TorchEncoder
from featstore.extract.specs import AudioSpec


@register_encoder("kaldi-fbank")
class KaldiFbankEncoder(Encoder):
    """Kaldi log-mel filterbank (the CAV-MAE/AST front end), mean+std pooled over time.

    The fbank follows CAV-MAE's ``_wav2fbank``: waveform mean removed, 128 mel bins,
    25 ms Hanning window, 10 ms shift, ``htk_compat``, no dither; the log-mel values
    are normalised as ``(x - norm_mean) / (2 * norm_std)`` with CAV-MAE's AudioSet
    statistics (-5.081, 4.4849).  Instead of padding to 1024 frames we pool over the
    clip's real frames: the per-bin mean and standard deviation, concatenated
    (dim = 2 x num_mel_bins = 256), so clip length does not leak into the embedding.
    Clips shorter than one window (400 samples) are zero-padded to one window.
    """

    modality = "audio"
    weightless = True
    defaults = {
        "sample_rate": 16000,
        "num_mel_bins": 128,
        "frame_length_ms": 25.0,
        "frame_shift_ms": 10.0,
        "window_type": "hanning",
        "htk_compat": True,
        "dither": 0.0,
        "norm_mean": -5.081,
        "norm_std": 4.4849,
        "pooling": "mean+std",
        "max_seconds": None,
    }

    @classmethod
    def output_dim(cls, config):
        return 2 * int(config["num_mel_bins"])

    @property
    def audio_spec(self):
        return AudioSpec(
            sample_rate=int(self.config["sample_rate"]), max_seconds=self.config["max_seconds"]
        )

    def _encode(self, items):
        import torch
        from torchaudio.compliance import kaldi

        c = self.config
        window = int(round(c["frame_length_ms"] * c["sample_rate"] / 1000))
        out = []
        with torch.inference_mode():
            for wav in items:
                x = torch.from_numpy(np.asarray(wav, np.float32)).reshape(1, -1)
                if x.shape[1] < window:
                    x = torch.nn.functional.pad(x, (0, window - x.shape[1]))
                x = x - x.mean()
                fb = kaldi.fbank(
                    x,
                    htk_compat=bool(c["htk_compat"]),
                    sample_frequency=float(c["sample_rate"]),
                    use_energy=False,
                    window_type=str(c["window_type"]),
                    num_mel_bins=int(c["num_mel_bins"]),
                    dither=float(c["dither"]),
                    frame_shift=float(c["frame_shift_ms"]),
                    frame_length=float(c["frame_length_ms"]),
                )
                fb = (fb - c["norm_mean"]) / (2.0 * c["norm_std"])
                out.append(torch.cat([fb.mean(0), fb.std(0, unbiased=False)]).numpy())
        return np.stack(out)


class _Wav2Vec2Family(TorchEncoder):
    """torchaudio wav2vec 2.0 / HuBERT, a layer's output averaged over time."""

    modality = "audio"
    check_hash = False
    builder: ClassVar[str] = ""
    defaults = {"sample_rate": 16000, "layer": -1, "max_seconds": 60.0, "pooling": "mean"}
    MIN_SAMPLES = 400  # one receptive field of the convolutional front end

    def __init__(self, **kw):
        super().__init__(**kw)
        if int(self.config["sample_rate"]) != 16000:  # the models were trained on 16 kHz only
            raise InputError(
                f"{self.name} takes 16 kHz audio only; got sample_rate={self.config['sample_rate']}"
            )

    @classmethod
    def output_dim(cls, config):
        return 768

    @property
    def audio_spec(self):
        return AudioSpec(sample_rate=16000, max_seconds=self.config["max_seconds"])

    def build(self):
        import torchaudio.models as M

        return getattr(M, self.builder)()

    def _encode(self, items):
        """Clips of equal length share a forward pass; others run alone (no padding,
        whose effect on the group-normalised front end would make a clip's embedding
        depend on its batch)."""
        torch = self._torch
        waves = []
        for w in items:
            w = np.asarray(w, np.float32)
            if w.size < self.MIN_SAMPLES:
                w = np.pad(w, (0, self.MIN_SAMPLES - w.size))
            waves.append(w)
        out = np.zeros((len(items), self.dim), np.float32)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(w.size, []).append(i)
        layer = int(self.config["layer"])
        with torch.inference_mode(), self.autocast():
            for idx in groups.values():
                x = torch.from_numpy(np.stack([waves[i] for i in idx])).to(self.device)
                feats, _ = self.model.extract_features(x)
                out[idx] = feats[layer].mean(dim=1).float().cpu().numpy()
        return out


@register_encoder("hubert_base")
class HubertBase(_Wav2Vec2Family):
    """torchaudio HuBERT Base (LibriSpeech 960h, HUBERT_BASE bundle), 768-d time-pooled."""

    builder = "hubert_base"
    default_weights_name = "torchaudio.pipelines.HUBERT_BASE"
    weights_url = "https://download.pytorch.org/torchaudio/models/hubert_fairseq_base_ls960.pth"


@register_encoder("wav2vec2_base")
class Wav2Vec2Base(_Wav2Vec2Family):
    """torchaudio wav2vec 2.0 Base (LibriSpeech 960h, WAV2VEC2_BASE bundle), 768-d time-pooled."""

    builder = "wav2vec2_base"
    default_weights_name = "torchaudio.pipelines.WAV2VEC2_BASE"
    weights_url = "https://download.pytorch.org/torchaudio/models/wav2vec2_fairseq_base_ls960.pth"
