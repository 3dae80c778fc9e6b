"""What the decoder delivers and what an encoder asks of it.

An encoder declares a :class:`VideoSpec` / :class:`AudioSpec` (saved in the store as
its preprocessing); the decoder returns a :class:`DecodedClip` shaped by them.  Kept
apart from ``decode`` so the encoders can name them without importing PyAV code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VideoSpec:
    """How an encoder wants its frames.

    ``mode="crop"``: resize so the shorter side is ``resize_short`` then centre-crop
    ``size`` (the torchvision video-classification recipe).  ``mode="stretch"``:
    resize the whole frame to ``size`` (keeps positions of the full field of view).
    """

    num_frames: int = 16
    size: tuple[int, int] = (112, 112)  # (height, width)
    resize_short: int = 128
    mode: str = "crop"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass(frozen=True)
class AudioSpec:
    """Audio as the encoders want it: mono float32 at ``sample_rate``."""

    sample_rate: int = 16000
    max_seconds: float | None = None  # None: the whole clip

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodedClip:
    video: np.ndarray | None  # (T, H, W, 3) uint8 RGB, or None: no video stream
    audio: np.ndarray | None  # (S,) float32 mono, or None: no audio stream
    info: dict[str, Any]
