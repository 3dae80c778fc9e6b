"""Small class-structured stores with known label noise and known hybrid clips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featstore.store.core import FeatureStore, ModalitySpec


@dataclass
class MadeStore:
    store: FeatureStore
    true_labels: np.ndarray  # the class each row was drawn from (audio's class for hybrids)
    flipped: np.ndarray  # rows whose stored label is not their true class
    hybrids: np.ndarray  # rows with audio of one class and video of another


def write_store(
    path: Path,
    audio: np.ndarray,
    video: np.ndarray,
    labels: np.ndarray,
    *,
    class_names=None,
    chunk_rows: int = 64,
    dtype: str = "float32",
) -> FeatureStore:
    n = audio.shape[0]
    store = FeatureStore.create(
        path,
        ids=[f"clip{i:05d}" for i in range(n)],
        modalities={
            "audio": ModalitySpec("synthetic-a", audio.shape[1]),
            "video": ModalitySpec("synthetic-v", video.shape[1]),
        },
        labels=labels,
        class_names=class_names or [f"c{i}" for i in range(int(labels.max()) + 1)],
        paths=[f"/data/clip{i:05d}.mp4" for i in range(n)],
        splits=["train"] * n,
        chunk_rows=chunk_rows,
        dtype=dtype,
        compression="none",
    )
    store.write_rows(0, embeddings={"audio": audio, "video": video})
    return store


def make_class_store(
    path: Path,
    *,
    n_classes: int = 8,
    per_class: int = 120,
    dim_a: int = 16,
    dim_v: int = 12,
    sep: float = 2.5,
    flip_frac: float = 0.05,
    n_hybrids: int = 0,
    seed: int = 0,
    chunk_rows: int = 64,
    dtype: str = "float32",
) -> MadeStore:
    """Gaussian classes in both modalities; ``flip_frac`` of the rows get another class's
    label; ``n_hybrids`` extra rows take audio from one class and video from another
    (labelled with the audio's class)."""
    rng = np.random.default_rng(seed)
    mean_a = rng.normal(size=(n_classes, dim_a)) * sep
    mean_v = rng.normal(size=(n_classes, dim_v)) * sep
    y = np.repeat(np.arange(n_classes), per_class)
    audio = mean_a[y] + rng.normal(size=(y.size, dim_a))
    video = mean_v[y] + rng.normal(size=(y.size, dim_v))
    ya = rng.integers(0, n_classes, n_hybrids)
    yv = (ya + rng.integers(1, n_classes, n_hybrids)) % n_classes
    audio = np.concatenate([audio, mean_a[ya] + rng.normal(size=(n_hybrids, dim_a))])
    video = np.concatenate([video, mean_v[yv] + rng.normal(size=(n_hybrids, dim_v))])
    true = np.concatenate([y, ya])
    labels = true.copy()
    flipped = np.sort(rng.choice(y.size, int(round(flip_frac * y.size)), replace=False))
    labels[flipped] = (true[flipped] + rng.integers(1, n_classes, flipped.size)) % n_classes
    order = rng.permutation(true.size)  # hybrids and flips spread over the chunks
    inv = np.argsort(order)
    store = write_store(
        path, audio[order], video[order], labels[order], chunk_rows=chunk_rows, dtype=dtype
    )
    return MadeStore(
        store, true[order], np.sort(inv[flipped]), np.sort(inv[y.size + np.arange(n_hybrids)])
    )


def precision_recall(flag: np.ndarray, truth_rows: np.ndarray) -> tuple[float, float]:
    found = np.flatnonzero(flag)
    hits = np.intersect1d(found, truth_rows).size
    return (hits / found.size if found.size else 0.0), (
        hits / truth_rows.size if truth_rows.size else 1.0
    )
