"""A small store with one of everything `diccae store info` shows (used by the store-info
tests in tests/featstore/store and tests/cli)."""

from __future__ import annotations

import numpy as np

from featstore.store import FeatureStore, ModalitySpec


def make_info_store(path):
    """A 10-row store with every kind of row `store info` reports: done, failed, pending,
    a missing video, an unnamed label, pretrained and random weights, a run's feature array."""
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(10)],
        modalities={
            "audio": ModalitySpec(
                "hubert_base",
                4,
                weights="HUBERT_BASE",
                pretrained=True,
                config={"sample_rate": 16000},
            ),
            "video": ModalitySpec(
                "r3d_18", 3, weights="random", config={"frames": 16, "size": 112}
            ),
        },
        labels=[0, 0, 0, 1, 1, 2, -1, 0, 1, 5],
        splits=["train"] * 7 + ["test"] * 3,
        paths=[f"/d/c{i}.mp4" for i in range(10)],
        class_names=["walk", "run", "jump"],
        chunk_rows=4,
        dtype="float16",
        manifest_sha256="f" * 64,
    )
    s.write_rows(
        0,
        embeddings={"audio": np.ones((8, 4)), "video": np.ones((8, 3))},
        missing={"video": np.array([0, 0, 0, 0, 0, 1, 0, 0], bool)},
        failed={1: "truncated file", 6: "no video stream"},
    )
    fused = np.ones((10, 2))
    fused[[0, 9]] = np.nan
    s.write_feature_array("fused_r1", fused, attrs={"run": "runs/r1", "epoch": 3})
    return s
