"""Clip makers for tests: small valid clips and every kind of broken input, made with PyAV.

A plain module (not conftest) so test files in any folder can import it unambiguously.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from demo.media import synthetic_audio, synthetic_frames, write_clip


def make_clip(
    path: Path,
    *,
    seed: int = 0,
    n_frames: int = 8,
    size=(32, 40),
    fps: float = 8.0,
    seconds: float = 1.0,
    sample_rate: int = 16000,
    video=True,
    audio=True,
    color=(200, 40, 40),
    freq=440.0,
) -> Path:
    frames = synthetic_frames(n_frames, *size, color=color, seed=seed) if video else None
    sound = synthetic_audio(seconds, sample_rate, freq=freq, seed=seed) if audio else None
    return write_clip(path, frames=frames, fps=fps, audio=sound, sample_rate=sample_rate)


def make_broken_clips(folder: Path) -> dict[str, Path]:
    """Broken or unusual inputs keyed by what is wrong with them."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    out["empty"] = folder / "empty.mp4"
    out["empty"].write_bytes(b"")
    out["text"] = folder / "text.mp4"
    out["text"].write_text("this is not a video\n" * 20)
    good = make_clip(folder / "_source.mp4", seed=5, n_frames=12)
    data = good.read_bytes()
    out["truncated"] = folder / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) // 3])
    rng = np.random.default_rng(0)
    garbled = bytearray(data)
    pos = rng.integers(64, len(garbled), size=len(garbled) // 4)
    for p in pos:
        garbled[p] = int(rng.integers(0, 256))
    out["garbled"] = folder / "garbled.mp4"
    out["garbled"].write_bytes(bytes(garbled))
    good.unlink()
    out["missing_file"] = folder / "does_not_exist.mp4"
    return out


def make_unusual_clips(folder: Path) -> dict[str, Path]:
    """Valid but unusual clips: one stream only, odd fps, sample rate and size."""
    return {
        "audio_only": make_clip(folder / "audio_only.mp4", seed=11, video=False),
        "video_only": make_clip(folder / "video_only.mp4", seed=12, audio=False),
        "odd": make_clip(
            folder / "odd.mp4",
            seed=13,
            n_frames=5,
            size=(17, 23),
            fps=7.3,
            sample_rate=44100,
            seconds=0.7,
        ),
    }
