"""store_info: the numbers `diccae store info` shows (rendered by cli/render_store.py)."""

from __future__ import annotations

import json

import pytest
from infostore import make_info_store

from featstore.store import store_info


@pytest.fixture
def store(tmp_path):
    return make_info_store(tmp_path / "s")


def test_store_info_counts_everything(store):
    info = store_info(store.path)
    assert info["n_rows"] == 10 and info["status"] == {"pending": 2, "done": 6, "failed": 2}
    assert info["dtype"] == "float16" and info["chunk_rows"] == 4 and info["n_chunks"] == 3
    assert info["compression"] == "zstd"
    assert info["fingerprint"] == store.fingerprint and info["format_version"] == 1
    assert info["manifest_sha256"] == "f" * 64 and info["source"] == "extract"
    assert info["bytes_on_disk"] == store.bytes_on_disk() > 0
    a, v = info["modalities"]["audio"], info["modalities"]["video"]
    assert (a["encoder"], a["dim"], a["weights"], a["pretrained"]) == (
        "hubert_base",
        4,
        "HUBERT_BASE",
        True,
    )
    assert (v["encoder"], v["dim"], v["weights"], v["pretrained"]) == ("r3d_18", 3, "random", False)
    assert v["config"] == {"frames": 16, "size": 112} and v["missing"] == 1 and a["missing"] == 0
    assert a["bytes"] > 0
    assert info["splits"] == {"test": 3, "train": 7}
    # every named class, label values without a name, and unknown (-1) rows
    assert info["classes"] == [
        {"label": 0, "name": "walk", "rows": 4, "done": 3},
        {"label": 1, "name": "run", "rows": 3, "done": 2},
        {"label": 2, "name": "jump", "rows": 1, "done": 1},
        {"label": 5, "name": None, "rows": 1, "done": 0},
        {"label": -1, "name": None, "rows": 1, "done": 0},
    ]
    e = info["extra_arrays"]["fused_r1"]
    assert (
        e["dim"] == 2
        and e["rows_with_values"] == 8
        and e["attrs"] == {"run": "runs/r1", "epoch": 3}
    )
    assert "failures" not in info
    json.dumps(info)  # JSON-serialisable as is


def test_store_info_failures(store):
    info = store_info(store, failures=True)
    assert info["failures"] == [
        {"row": 1, "id": "c1", "path": "/d/c1.mp4", "reason": "truncated file"},
        {"row": 6, "id": "c6", "path": "/d/c6.mp4", "reason": "no video stream"},
    ]
