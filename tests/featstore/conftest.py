"""Clip fixtures: small valid clips and every kind of broken input, made with PyAV."""

from __future__ import annotations

from pathlib import Path

import pytest
from clipfactory import make_broken_clips, make_clip, make_unusual_clips


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """Six valid clips in two classes (red/left vs blue/right-ish)."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(6):
        cls = i % 2
        make_clip(
            d / f"clip{i}.mp4",
            seed=i,
            color=(220, 30, 30) if cls == 0 else (30, 30, 220),
            freq=300.0 if cls == 0 else 900.0,
        )
    return d


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("tiny") / "tiny.mp4", seed=3)


@pytest.fixture(scope="session")
def broken_clips(tmp_path_factory) -> dict[str, Path]:
    return make_broken_clips(tmp_path_factory.mktemp("broken"))


@pytest.fixture(scope="session")
def unusual_clips(tmp_path_factory) -> dict[str, Path]:
    return make_unusual_clips(tmp_path_factory.mktemp("unusual"))
