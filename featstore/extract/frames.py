"""Choosing and shrinking video frames: which T frames of a clip, at what size.

The T output frames are the frames at the centres of T equal segments of the clip
(:func:`uniform_indices`).  With a known frame count only those frames are shrunk and
colour-converted (:class:`FrameSelector`); without one, a bounded set of frames is
kept with a doubling stride (:class:`FrameKeeper`).  Rotation from the display matrix
is applied, so the encoder sees what a viewer sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.errors import DecodeError
from featstore.extract.specs import VideoSpec


def target_geometry(src_h: int, src_w: int, spec: VideoSpec) -> tuple[int, int]:
    """Size (h, w) to scale the (display-oriented) frame to before cropping."""
    if spec.mode == "stretch":
        return spec.size
    short = min(src_h, src_w)
    scale = spec.resize_short / short
    h = max(spec.size[0], int(round(src_h * scale)))
    w = max(spec.size[1], int(round(src_w * scale)))
    return h, w


def center_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = size
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top : top + ch, left : left + cw]


def to_small_rgb(frame: Any, spec: VideoSpec) -> np.ndarray:
    """Scale one decoded frame (display orientation) and return it as RGB uint8."""
    rotation = int(getattr(frame, "rotation", 0) or 0)
    quarter = int(round(rotation / 90.0)) % 4
    src_h, src_w = frame.height, frame.width
    if quarter % 2:
        src_h, src_w = src_w, src_h
    th, tw = target_geometry(src_h, src_w, spec)
    if quarter % 2:
        th, tw = tw, th
    img = frame.reformat(width=tw, height=th, format="rgb24").to_ndarray()
    if quarter:
        img = np.rot90(img, k=quarter)
    if spec.mode == "crop":
        img = center_crop(img, spec.size)
    return np.ascontiguousarray(img)


def uniform_indices(n: int, num: int) -> np.ndarray:
    """Frame indices at the centres of ``num`` equal segments of ``n`` frames (repeats when n < num)."""
    return np.minimum(((np.arange(num) + 0.5) * n / num).astype(np.int64), n - 1)


class FrameSelector:
    """Converts only the frames that will be used, when the frame count is known.

    Shrinking and colour-converting every frame costs about as much as decoding it,
    so with a known count (MP4 and most containers index it) only the ``num_frames``
    chosen frames are converted.  If the count was wrong, the caller decodes again
    with the true count, so the choice never depends on container metadata.
    """

    def __init__(self, spec: VideoSpec, n_expected: int):
        self.spec = spec
        self.n_expected = n_expected
        self.targets = uniform_indices(n_expected, spec.num_frames)
        self.wanted = set(self.targets.tolist())
        self.count = 0
        self.frames: dict[int, np.ndarray] = {}

    def add(self, frame) -> None:
        i = self.count
        self.count += 1
        if i in self.wanted:
            self.frames[i] = to_small_rgb(frame, self.spec)

    @property
    def exact(self) -> bool:
        return self.count == self.n_expected

    def result(self) -> np.ndarray:
        if not self.count:
            raise DecodeError("video stream has no decodable frames")
        return np.stack([self.frames[i] for i in self.targets])


class FrameKeeper:
    """Keeps at most ``keep`` shrunk frames spread evenly over an unknown length.

    Used when the container does not say how many frames it has: the stride doubles
    whenever more than ``keep`` frames are held, so memory stays bounded for any
    length and the kept frames still cover the clip evenly.
    """

    def __init__(self, spec: VideoSpec, keep: int):
        self.spec = spec
        self.keep = keep
        self.stride = 1
        self.count = 0
        self.frames: list[tuple[int, np.ndarray]] = []

    def add(self, frame) -> None:
        i = self.count
        self.count += 1
        if i % self.stride:
            return
        self.frames.append((i, to_small_rgb(frame, self.spec)))
        if len(self.frames) > self.keep:
            self.frames = self.frames[::2]
            self.stride *= 2

    def result(self) -> np.ndarray:
        if not self.frames:
            raise DecodeError("video stream has no decodable frames")
        kept = np.array([i for i, _ in self.frames])
        targets = uniform_indices(self.count, self.spec.num_frames)
        chosen = np.clip(np.searchsorted(kept, targets, side="right") - 1, 0, len(kept) - 1)
        return np.stack([self.frames[i][1] for i in chosen])
