"""Small stores made in-process (no media decoding) for the reliability suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featstore.store import FeatureStore, ModalitySpec


def make_store(
    path: Path,
    *,
    n: int = 8,
    chunk_rows: int = 4,
    done_chunks: int | None = None,
    compression: str = "zstd",
    seed: int = 0,
    class_names=("cat", "dog"),
) -> Path:
    """An 8-row store in 4-row chunks with labels; ``done_chunks`` chunks written (default all)."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.create(
        path,
        ids=[f"clip{i}" for i in range(n)],
        modalities={"audio": ModalitySpec("a", 3), "video": ModalitySpec("v", 5)},
        labels=np.arange(n) % len(class_names),
        splits=["train"] * (n - 2) + ["test"] * 2,
        paths=[f"/data/clip{i}.mp4" for i in range(n)],
        class_names=list(class_names),
        chunk_rows=chunk_rows,
        dtype="float32",
        compression=compression,
    )
    ranges = store.shard_ranges()
    for s, e in ranges[: len(ranges) if done_chunks is None else done_chunks]:
        store.write_rows(
            s,
            embeddings={
                "audio": rng.standard_normal((e - s, 3)) + 1,
                "video": rng.standard_normal((e - s, 5)) + 1,
            },
            missing={"audio": np.zeros(e - s, bool), "video": np.zeros(e - s, bool)},
        )
    return path


#: tiny network widths for train/eval runs in these tests (seconds, not minutes)
SMALL = [
    "--encoder-widths",
    "16",
    "--fusion-widths",
    "16",
    "--encoded-dim",
    "8",
    "--fused-dim",
    "8",
    "--projection-dim",
    "4",
    "--batch-size",
    "16",
    "--shuffle-buffer",
    "32",
    "--threads",
    "1",
    "--no-progress",
]
