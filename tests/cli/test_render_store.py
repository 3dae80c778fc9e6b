"""cli/render_store.py: `diccae store info` as tables, from store_info's dictionary."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from cli.render_store import render_store_info
from featstore.store import FeatureStore, ModalitySpec, store_info


@pytest.fixture
def store(tmp_path):
    s = FeatureStore.create(
        tmp_path / "s",
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


def test_render_shows_the_key_facts(store):
    console = Console(record=True, width=200)
    render_store_info(store_info(store, failures=True), console, max_classes=3)
    text = console.export_text()
    for needle in (
        "10: 6 done, 2 failed, 2 pending",
        "float16 (zstd), 4 rows per chunk (3 chunks)",
        "hubert_base",
        "HUBERT_BASE",
        "r3d_18",
        "random",
        "fused_r1",
        "8/10",
        "walk",
        "2 more (see --json)",
        "no video stream",
        "/d/c1.mp4",
        store.fingerprint,
        '"frames": 16',
    ):
        assert needle in text, needle


def test_render_empty_failures(tmp_path):
    s = FeatureStore.create(tmp_path / "e", ids=["a"], modalities={"audio": ModalitySpec("x", 2)})
    console = Console(record=True, width=120)
    render_store_info(store_info(s, failures=True), console)
    assert "no failed clips" in console.export_text()
