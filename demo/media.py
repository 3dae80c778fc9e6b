"""Write small media clips with PyAV.

Tests, the demo and the benchmark generate their own clips instead of shipping
binary fixtures, so every stage can be exercised from a fresh clone without any
download.  The writer is deliberately small: one video stream (H.264 or MPEG-4
Part 2), one audio stream (AAC by default), MP4 container.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from featstore.errors import InputError

VIDEO_CODECS = ("libx264", "mpeg4", "h264")


def _default_video_codec() -> str:
    """libx264 when this PyAV build has it (the usual wheel does), else MPEG-4 Part 2."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _as_audio_planes(audio: np.ndarray) -> np.ndarray:
    """Audio as (channels, samples) float32 clipped to [-1, 1]."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] not in (1, 2):
        raise InputError(
            f"audio must be (S,) or (C, S) with C in (1, 2), got shape {np.shape(audio)}"
        )
    return np.clip(a, -1.0, 1.0)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] < 1:
        raise InputError(f"frames must be (T, H, W, 3) uint8 RGB with T >= 1, got shape {f.shape}")
    if f.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {f.dtype}")
    return f


def write_clip(
    path: str | Path,
    *,
    frames: np.ndarray | None,
    fps: float = 25.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    video_codec: str | None = None,
    audio_codec: str = "aac",
) -> Path:
    """Write an MP4 with a video stream (``frames``) and/or an audio stream (``audio``).

    ``frames``: (T, H, W, 3) uint8 RGB, or None for an audio-only file.
    ``audio``: (S,) or (C, S) float32 in [-1, 1], or None for a video-only file.
    Odd frame sizes are allowed: the encoder is fed yuv444p for libx264 (no
    even-size requirement) and the size is padded to even for MPEG-4, which needs it.
    """
    path = Path(path)
    if frames is None and audio is None:
        raise InputError("write_clip needs frames, audio or both")
    codec = video_codec or _default_video_codec()
    path.parent.mkdir(parents=True, exist_ok=True)
    frames_arr = None if frames is None else _check_frames(frames)
    audio_arr = None if audio is None else _as_audio_planes(audio)

    with av.open(str(path), mode="w", format="mp4") as container:
        # add_stream's type follows the codec name, known here only at run time
        vstream: VideoStream | None = None
        astream: AudioStream | None = None
        if frames_arr is not None:
            rate = Fraction(fps).limit_denominator(1001)
            vstream = cast(VideoStream, container.add_stream(codec, rate=rate))
            h, w = frames_arr.shape[1:3]
            if codec == "libx264":
                vstream.pix_fmt = "yuv444p"
                vstream.options = {"crf": "18", "preset": "ultrafast"}
            else:
                vstream.pix_fmt = "yuv420p"
                h, w = h + h % 2, w + w % 2
                frames_arr = np.pad(
                    frames_arr,
                    ((0, 0), (0, h - frames_arr.shape[1]), (0, w - frames_arr.shape[2]), (0, 0)),
                    mode="edge",
                )
                vstream.bit_rate = 4_000_000
            vstream.width, vstream.height = w, h
        if audio_arr is not None:
            astream = cast(AudioStream, container.add_stream(audio_codec, rate=int(sample_rate)))
            astream.layout = "mono" if audio_arr.shape[0] == 1 else "stereo"

        if vstream is not None and frames_arr is not None:
            for img in frames_arr:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                for packet in vstream.encode(vf):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if astream is not None and audio_arr is not None:
            layout = "mono" if audio_arr.shape[0] == 1 else "stereo"
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(audio_arr), format="fltp", layout=layout
            )
            af.sample_rate = int(sample_rate)
            af.pts = 0
            for packet in astream.encode(af):
                container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def synthetic_frames(
    n_frames: int = 16,
    height: int = 64,
    width: int = 64,
    *,
    color: tuple[int, int, int] = (200, 40, 40),
    speed: float = 2.0,
    seed: int = 0,
) -> np.ndarray:
    """A coloured square moving across a noisy background: colour, position, motion.

    Used by tests, the demo and the benchmark to make clips whose content differs
    in the ways encoders are supposed to pick up.
    """
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 40, size=(n_frames, height, width, 3), dtype=np.uint8)
    side = max(2, min(height, width) // 4)
    for t in range(n_frames):
        x = int((t * speed) % max(1, width - side))
        y = (height - side) // 2
        frames[t, y : y + side, x : x + side] = color
    return frames


def synthetic_audio(
    seconds: float = 1.0, sample_rate: int = 16000, *, freq: float = 440.0, seed: int = 0
) -> np.ndarray:
    """A tone plus a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(
        np.float32
    )
