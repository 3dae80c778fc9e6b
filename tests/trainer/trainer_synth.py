"""Synthetic stores for the trainer tests.

Four classes; the audio embedding cannot tell classes 0 and 1 apart, the video
embedding cannot tell 2 and 3 apart, so only the fused model can separate all
four: audio-visual accuracy must beat each single modality.
"""

from __future__ import annotations

import numpy as np

from featstore.store.core import FeatureStore, ModalitySpec

AUDIO_DIM = 12
VIDEO_DIM = 10


def synthetic_features(
    n_per_class: int = 60, *, num_classes: int = 4, noise: float = 0.35, seed: int = 0
):
    rng = np.random.default_rng(seed)
    audio_centres = rng.normal(size=(num_classes, AUDIO_DIM)) * 2.0
    video_centres = rng.normal(size=(num_classes, VIDEO_DIM)) * 2.0
    audio_centres[1] = audio_centres[0]  # audio confuses 0 / 1
    video_centres[3] = video_centres[2]  # video confuses 2 / 3
    y = np.repeat(np.arange(num_classes), n_per_class)
    rng.shuffle(y)
    audio = audio_centres[y] + noise * rng.normal(size=(len(y), AUDIO_DIM))
    video = video_centres[y] + noise * rng.normal(size=(len(y), VIDEO_DIM))
    return audio.astype(np.float32), video.astype(np.float32), y.astype(np.int32)


def make_store(
    path,
    *,
    n_per_class: int = 60,
    chunk_rows: int = 32,
    seed: int = 0,
    splits=None,
    dtype: str = "float32",
    fail_rows=(),
    audio_missing_rows=(),
):
    audio, video, y = synthetic_features(n_per_class, seed=seed)
    n = len(y)
    if splits is None:
        rng = np.random.default_rng(seed + 1)
        splits = rng.choice(["train", "val", "test"], size=n, p=[0.6, 0.2, 0.2])
    store = FeatureStore.create(
        path,
        ids=[f"clip{i:05d}" for i in range(n)],
        modalities={
            "audio": ModalitySpec("synthetic-audio", AUDIO_DIM),
            "video": ModalitySpec("synthetic-video", VIDEO_DIM),
        },
        labels=y,
        splits=list(splits),
        class_names=[f"class{c}" for c in range(4)],
        chunk_rows=chunk_rows,
        dtype=dtype,
        source="test",
    )
    missing_a = np.zeros(n, bool)
    missing_a[list(audio_missing_rows)] = True
    for s, e in store.shard_ranges():
        failed = {r: "broken" for r in fail_rows if s <= r < e}
        store.write_rows(
            s,
            embeddings={"audio": audio[s:e], "video": video[s:e]},
            missing={"audio": missing_a[s:e], "video": np.zeros(e - s, bool)},
            failed=failed,
        )
    return store
