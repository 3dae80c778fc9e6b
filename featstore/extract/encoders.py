"""Encoders: clip -> one fixed-size embedding per modality, registered by name.

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

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from featstore.errors import InputError, WeightsUnavailable, torch_load_problem
from featstore.extract.decode import AudioSpec, VideoSpec
from featstore.store.core import ModalitySpec, sha256_file

_REGISTRY: dict[str, type[Encoder]] = {}
RANDOM_SEED = 0


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


# ======================================================================= base
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
        pre = self.video_spec.to_json() if self.video_spec else self.audio_spec.to_json()
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


# ============================================================ weight loading
def offline() -> bool:
    return os.environ.get("DICCAE_OFFLINE", "") not in ("", "0", "false", "False")


def _weights_help(name: str, modality: str, url: str, cache: Path, reason: str) -> str:
    return (
        f"pretrained weights for encoder {name!r} are not available: {reason}.\n"
        f"  Download {url}\n"
        f"  and put it at {cache}\n"
        f"  (the torch hub cache; set TORCH_HOME to move it), or pass a local checkpoint with "
        f"--{modality}-weights /path/to/{cache.name}; --{modality}-weights random gives an untrained "
        f"model for testing (recorded as not pretrained)."
    )


def load_hub_state_dict(name: str, modality: str, url: str, *, check_hash: bool) -> dict[str, Any]:
    """The library's weights from the torch hub cache, downloading only when online."""
    import torch

    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cache.is_file():
        try:
            return torch.load(cache, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise WeightsUnavailable(
                _weights_help(
                    name,
                    modality,
                    url,
                    cache,
                    f"the cached file is unreadable ({torch_load_problem(exc)})",
                )
            ) from None
    if offline():
        raise WeightsUnavailable(
            _weights_help(name, modality, url, cache, "not in the cache and DICCAE_OFFLINE is set")
        )
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=check_hash, weights_only=True
        )
    except Exception as exc:
        raise WeightsUnavailable(
            _weights_help(
                name,
                modality,
                url,
                cache,
                f"not in the cache and the download failed ({type(exc).__name__}: {exc})",
            )
        ) from None


def load_local_checkpoint(path: Path) -> dict[str, Any]:
    """A state dict from a local file: plain, or under ``state_dict``/``model``; ``module.`` stripped."""
    import torch

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise WeightsUnavailable(
            f"cannot load checkpoint {path}: {torch_load_problem(exc)}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightsUnavailable(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


@contextlib.contextmanager
def _seeded():
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        yield


class TorchEncoder(Encoder):
    """An ``nn.Module`` encoder with the default/local/random weights contract."""

    weights_url: ClassVar[str] = ""
    check_hash: ClassVar[bool] = True

    def __init__(self, *, weights: str = "default", device: str = "cpu", **overrides: Any):
        super().__init__(weights=weights, device=device, **overrides)
        import torch

        # find the weights first, so a missing file fails before building a large model
        state, source = None, ""
        if weights == "random":
            self.weights_id, self.pretrained = "random", False
        elif weights == "default":
            state = load_hub_state_dict(
                self.name, self.modality, self.weights_url, check_hash=self.check_hash
            )
            source = self.default_weights_name
            self.weights_id, self.pretrained = self.default_weights_name, True
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsUnavailable(
                    f"--{self.modality}-weights {weights!r}: no such file (use 'default', 'random' or a checkpoint path)"
                )
            state, source = load_local_checkpoint(path), str(path)
            self.weights_id, self.pretrained = f"sha256:{sha256_file(path)}", True
        with _seeded():
            model = self.build()
        if state is not None:
            self._load_state(model, state, source)
        self.model = self.adapt(model).eval().to(device)
        self._torch = torch
        #: bf16 autocast on CUDA (float32 weights, float32 embeddings out); None = float32.
        #: Measured by scripts/gpu_check.sh against float32 (cosine similarity of embeddings).
        self.amp_dtype = torch.bfloat16 if str(device).startswith("cuda") else None

    def autocast(self):
        """Mixed-precision context for a forward pass on this encoder's device."""
        import contextlib

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return self._torch.autocast("cuda", dtype=self.amp_dtype)

    @staticmethod
    def _load_state(model, state: dict[str, Any], source: str) -> None:
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsUnavailable(
                f"weights from {source} do not fit the model: {str(exc)[:500]}"
            ) from None

    def build(self):
        raise NotImplementedError

    def adapt(self, model):
        """Turn the classifier into an embedding model (drop the head)."""
        return model


# ============================================================= weightless
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


@register_encoder("frame-stats")
class FrameStatsEncoder(Encoder):
    """Weightless video descriptor: colour per grid cell and motion energy per segment.

    Frames are resized (whole field of view, no crop) to ``size``; the clip's
    ``num_frames`` frames are split into ``segments`` consecutive groups and each
    frame into a ``grid`` x ``grid`` layout.  Per segment and cell: the mean R, G, B
    (colour *and* where it is) and the mean absolute grey-level difference between
    consecutive frames times ``motion_gain`` (how much moves there).
    dim = segments x grid^2 x 4 = 256 with the defaults.
    """

    modality = "video"
    weightless = True
    defaults = {"num_frames": 16, "size": (64, 64), "segments": 4, "grid": 4, "motion_gain": 4.0}

    def __init__(self, **kw):
        super().__init__(**kw)
        c = self.config
        if c["num_frames"] < c["segments"] + 1:
            raise InputError(
                f"frame-stats needs num_frames >= segments + 1, got {c['num_frames']} and {c['segments']}"
            )
        h, w = c["size"]
        if h % c["grid"] or w % c["grid"]:
            raise InputError(f"frame-stats size {c['size']} must be divisible by grid {c['grid']}")

    @classmethod
    def output_dim(cls, config):
        return int(config["segments"]) * int(config["grid"]) ** 2 * 4

    @property
    def video_spec(self):
        return VideoSpec(
            num_frames=int(self.config["num_frames"]),
            size=tuple(self.config["size"]),
            resize_short=0,
            mode="stretch",
        )

    def _encode(self, items):
        c = self.config
        g, s = int(c["grid"]), int(c["segments"])
        out = []
        for frames in items:
            x = np.asarray(frames, np.float32) / 255.0  # (T, H, W, 3)
            t, h, w, _ = x.shape
            cells = x.reshape(t, g, h // g, g, w // g, 3).mean(axis=(2, 4))  # (T, g, g, 3)
            grey = x.mean(axis=-1)
            diff = (
                np.abs(np.diff(grey, axis=0)).reshape(t - 1, g, h // g, g, w // g).mean(axis=(2, 4))
            )
            parts = []
            for frame_idx, diff_idx in zip(
                np.array_split(np.arange(t), s), np.array_split(np.arange(t - 1), s), strict=True
            ):
                colour = cells[frame_idx].mean(axis=0)  # (g, g, 3)
                motion = diff[diff_idx].mean(axis=0)[..., None] * c["motion_gain"]  # (g, g, 1)
                parts.append(np.concatenate([colour, motion], axis=-1).reshape(-1))
            out.append(np.concatenate(parts))
        return np.stack(out)


# ================================================================ video CNNs
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchVideoEncoder(TorchEncoder):
    """Shared preprocessing: uint8 (B,T,H,W,3) -> normalised float (B,3,T,H,W)."""

    modality = "video"

    @property
    def video_spec(self):
        c = self.config
        return VideoSpec(
            num_frames=int(c["num_frames"]),
            size=tuple(c["size"]),
            resize_short=int(c["resize_short"]),
            mode="crop",
        )

    def _batch(self, items):
        torch = self._torch
        x = torch.from_numpy(np.stack(items)).to(self.device)
        x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)  # B, 3, T, H, W
        mean = torch.tensor(self.config["mean"], device=self.device).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.config["std"], device=self.device).view(1, 3, 1, 1, 1)
        return (x - mean) / std

    def _encode(self, items):
        with self._torch.inference_mode(), self.autocast():
            return self.forward(self._batch(items)).float().cpu().numpy()

    def forward(self, x):
        return self.model(x)


def _video_cnn_defaults(
    num_frames=16, size=(112, 112), resize_short=128, mean=KINETICS_MEAN, std=KINETICS_STD
):
    return {
        "num_frames": num_frames,
        "size": size,
        "resize_short": resize_short,
        "mean": mean,
        "std": std,
    }


class _ResNet3D(TorchVideoEncoder):
    defaults = _video_cnn_defaults()
    builder: ClassVar[str] = ""

    @classmethod
    def output_dim(cls, config):
        return 512

    def build(self):
        import torchvision.models.video as V

        return getattr(V, self.builder)(weights=None)

    def adapt(self, model):
        import torch

        model.fc = torch.nn.Identity()  # the 512-d global-average-pooled feature
        return model


@register_encoder("r2plus1d_18")
class R2Plus1D18(_ResNet3D):
    """torchvision R(2+1)D-18 (Kinetics-400), 16x112x112, 512-d pooled feature."""

    builder = "r2plus1d_18"
    default_weights_name = "R2Plus1D_18_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"


@register_encoder("r3d_18")
class R3D18(_ResNet3D):
    """torchvision R3D-18 (Kinetics-400), 16x112x112, 512-d pooled feature."""

    builder = "r3d_18"
    default_weights_name = "R3D_18_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"


@register_encoder("s3d")
class S3DEncoder(TorchVideoEncoder):
    """torchvision S3D (Kinetics-400), 16x224x224, 1024-d globally averaged features."""

    default_weights_name = "S3D_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/s3d-d76dad2f.pth"
    defaults = _video_cnn_defaults(16, (224, 224), 256)

    @classmethod
    def output_dim(cls, config):
        return 1024

    def build(self):
        import torchvision.models.video as V

        return V.s3d(weights=None)

    def forward(self, x):
        # features -> global mean: equals S3D's own (2,7,7) average pool at 16x224x224
        # and stays defined for other input sizes.
        return self.model.features(x).mean(dim=(2, 3, 4))


@register_encoder("mvit_v2_s")
class MViTV2S(TorchVideoEncoder):
    """torchvision MViT-V2-S (Kinetics-400), 16x224x224 (fixed), 768-d class token."""

    default_weights_name = "MViT_V2_S_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth"
    defaults = _video_cnn_defaults(16, (224, 224), 256, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225))

    def __init__(self, **kw):
        super().__init__(**kw)
        if int(self.config["num_frames"]) != 16 or tuple(self.config["size"]) != (224, 224):
            raise InputError(
                "mvit_v2_s needs exactly 16 frames of 224x224 (its positional layout is fixed)"
            )

    @classmethod
    def output_dim(cls, config):
        return 768

    def build(self):
        import torchvision.models.video as V

        return V.mvit_v2_s(weights=None)

    def adapt(self, model):
        import torch

        model.head = torch.nn.Identity()
        return model


@register_encoder("resnet18")
class ResNet18Frames(TorchVideoEncoder):
    """torchvision ResNet-18 (ImageNet-1k) on each frame, features averaged over frames (512-d)."""

    default_weights_name = "ResNet18_Weights.IMAGENET1K_V1"
    weights_url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    defaults = _video_cnn_defaults(8, (224, 224), 256, IMAGENET_MEAN, IMAGENET_STD)

    @classmethod
    def output_dim(cls, config):
        return 512

    def build(self):
        import torchvision.models as M

        return M.resnet18(weights=None)

    def adapt(self, model):
        import torch

        model.fc = torch.nn.Identity()
        return model

    def forward(self, x):
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        return self.model(frames).reshape(b, t, -1).mean(dim=1)


# ================================================================ audio SSL
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
