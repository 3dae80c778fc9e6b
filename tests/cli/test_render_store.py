"""cli/render_store.py: `diccae store info` as tables, from store_info's dictionary."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rich.console import Console

from cli.render_store import render_store_info
from featstore.store import FeatureStore, ModalitySpec, store_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "featstore"))
from infostore import make_info_store  # noqa: E402


@pytest.fixture
def store(tmp_path):
    return make_info_store(tmp_path / "s")


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
