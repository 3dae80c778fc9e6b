"""Video encoders: weightless frame statistics and torchvision video/image CNNs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from featstore.errors import InputError
from featstore.extract.encoders.base import Encoder, register_encoder
from featstore.extract.encoders.torch_base import TorchEncoder
from featstore.extract.specs import VideoSpec


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


KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchVideoEncoder(TorchEncoder):
    """Shared preprocessing: uint8 (B,T,H,W,3) -> normalised float (B,3,T,H,W).

    A subclass names its torchvision constructor (``builder`` in ``builder_module``),
    the classifier attribute replaced by the identity to expose the pooled feature
    (``head``; empty keeps the model whole) and that feature's size (``feature_dim``).
    """

    modality = "video"
    builder: ClassVar[str] = ""
    builder_module: ClassVar[str] = "torchvision.models.video"
    head: ClassVar[str] = ""
    feature_dim: ClassVar[int] = 0

    @classmethod
    def output_dim(cls, config):
        return cls.feature_dim

    def build(self):
        import importlib

        return getattr(importlib.import_module(self.builder_module), self.builder)(weights=None)

    def adapt(self, model):
        if self.head:
            import torch

            setattr(model, self.head, torch.nn.Identity())
        return model

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


@register_encoder("r2plus1d_18")
class R2Plus1D18(TorchVideoEncoder):
    """torchvision R(2+1)D-18 (Kinetics-400), 16x112x112, 512-d pooled feature."""

    builder, head, feature_dim = "r2plus1d_18", "fc", 512  # fc: after global average pooling
    defaults = _video_cnn_defaults()
    default_weights_name = "R2Plus1D_18_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth"


@register_encoder("r3d_18")
class R3D18(TorchVideoEncoder):
    """torchvision R3D-18 (Kinetics-400), 16x112x112, 512-d pooled feature."""

    builder, head, feature_dim = "r3d_18", "fc", 512
    defaults = _video_cnn_defaults()
    default_weights_name = "R3D_18_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/r3d_18-b3b3357e.pth"


@register_encoder("s3d")
class S3DEncoder(TorchVideoEncoder):
    """torchvision S3D (Kinetics-400), 16x224x224, 1024-d globally averaged features."""

    builder, feature_dim = "s3d", 1024
    defaults = _video_cnn_defaults(16, (224, 224), 256)
    default_weights_name = "S3D_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/s3d-d76dad2f.pth"

    def forward(self, x):
        # features -> global mean: equals S3D's own (2,7,7) average pool at 16x224x224
        # and stays defined for other input sizes.
        return self.model.features(x).mean(dim=(2, 3, 4))


@register_encoder("mvit_v2_s")
class MViTV2S(TorchVideoEncoder):
    """torchvision MViT-V2-S (Kinetics-400), 16x224x224 (fixed), 768-d class token."""

    builder, head, feature_dim = "mvit_v2_s", "head", 768
    defaults = _video_cnn_defaults(16, (224, 224), 256, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
    default_weights_name = "MViT_V2_S_Weights.KINETICS400_V1"
    weights_url = "https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth"

    def __init__(self, **kw):
        super().__init__(**kw)
        if int(self.config["num_frames"]) != 16 or tuple(self.config["size"]) != (224, 224):
            raise InputError(
                "mvit_v2_s needs exactly 16 frames of 224x224 (its positional layout is fixed)"
            )


@register_encoder("resnet18")
class ResNet18Frames(TorchVideoEncoder):
    """torchvision ResNet-18 (ImageNet-1k) on each frame, features averaged over frames (512-d)."""

    builder_module, builder, head, feature_dim = "torchvision.models", "resnet18", "fc", 512
    defaults = _video_cnn_defaults(8, (224, 224), 256, IMAGENET_MEAN, IMAGENET_STD)
    default_weights_name = "ResNet18_Weights.IMAGENET1K_V1"
    weights_url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"

    def forward(self, x):
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        return self.model(frames).reshape(b, t, -1).mean(dim=1)
