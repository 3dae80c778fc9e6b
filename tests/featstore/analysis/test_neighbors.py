"""Nearest neighbours: exact equals brute force; the saved IVF index is reused and rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest
from storefactory import make_class_store

from featstore.analysis import NeighborsConfig, nearest_neighbors
from featstore.analysis.neighbors import index_paths
from featstore.errors import InputError
from featstore.store.core import FeatureStore
from featstore.store.features import feature_view


@pytest.fixture()
def made(tmp_path):
    return make_class_store(tmp_path / "s.zarr", n_classes=6, per_class=200, seed=0, flip_frac=0.0)


def _brute(store, row, k, features="audio+video"):
    rows, X = feature_view(store, features).load()
    q = X[np.flatnonzero(rows == row)[0]]
    d = np.sqrt(((X - q) ** 2).sum(axis=1))
    order = [i for i in np.argsort(d, kind="stable") if rows[i] != row][:k]
    return rows[order], d[order]


@pytest.mark.parametrize("features", ["audio+video", "audio"])
def test_exact_matches_brute_force(made, features):
    res = nearest_neighbors(
        made.store,
        clip_id="clip00010",
        config=NeighborsConfig(k=7, features=features, rows_per_block=100),
    )
    rows, d = _brute(made.store, 10, 7, features)
    assert res["method"] == "exact" and res["index"] is None
    assert [n["row"] for n in res["neighbors"]] == rows.tolist()
    np.testing.assert_allclose([n["distance"] for n in res["neighbors"]], d, rtol=1e-4, atol=1e-5)
    assert res["query"]["id"] == "clip00010" and all(n["row"] != 10 for n in res["neighbors"])
    first = res["neighbors"][0]
    assert first["path"] == f"/data/clip{first['row']:05d}.mp4" and first["class_name"].startswith(
        "c"
    )


def test_ivf_index_is_saved_reused_and_rebuilt(made, tmp_path):
    cfg = NeighborsConfig(k=10, exact_max_rows=100, nprobe=64)
    res = nearest_neighbors(made.store, path="/data/clip00042.mp4", config=cfg)
    index, meta = index_paths(made.store, "audio+video")
    assert res["method"] == "ivf" and res["rebuilt"] and index.is_file() and meta.is_file()
    assert index.parent.parent == made.store.path.parent  # beside the store, not inside it
    exact = nearest_neighbors(made.store, path="/data/clip00042.mp4", config=NeighborsConfig(k=10))
    recall = len({n["row"] for n in res["neighbors"]} & {n["row"] for n in exact["neighbors"]}) / 10
    assert recall >= 0.9
    again = nearest_neighbors(made.store, clip_id="clip00042", config=cfg)
    assert not again["rebuilt"] and again["neighbors"] == res["neighbors"]
    # a row that fails changes the indexed rows: rebuilt
    made.store.write_rows(
        0, embeddings={"audio": np.zeros((1, 16)), "video": np.zeros((1, 12))}, failed={0: "broken"}
    )
    after = nearest_neighbors(FeatureStore.open(made.store.path), clip_id="clip00042", config=cfg)
    assert after["rebuilt"] and all(n["row"] != 0 for n in after["neighbors"])
    # a new store at the same path (new fingerprint): rebuilt
    old_key = json.loads(meta.read_text())["key"]
    rng = np.random.default_rng(1)
    FeatureStore.create(
        made.store.path,
        ids=[f"x{i}" for i in range(1200)],
        overwrite=True,
        modalities=made.store.modalities,
        labels=np.arange(1200) % 6,
        chunk_rows=64,
        dtype="float32",
    ).write_rows(
        0, embeddings={"audio": rng.normal(size=(1200, 16)), "video": rng.normal(size=(1200, 12))}
    )
    new = nearest_neighbors(made.store.path, clip_id="x5", config=cfg)
    assert new["rebuilt"] and json.loads(meta.read_text())["key"] != old_key
    assert nearest_neighbors(
        made.store.path, clip_id="x5", config=NeighborsConfig(exact_max_rows=100, rebuild=True)
    )["rebuilt"]


def test_bad_queries(made):
    with pytest.raises(InputError, match="no clip with id 'nope'"):
        nearest_neighbors(made.store, clip_id="nope")
    with pytest.raises(InputError, match="no clip with path"):
        nearest_neighbors(made.store, path="/elsewhere.mp4")
    with pytest.raises(InputError, match="exactly one of --id ID or --path CLIP"):
        nearest_neighbors(made.store)
    made.store.write_rows(
        0, embeddings={"audio": np.zeros((1, 16)), "video": np.zeros((1, 12))}, failed={0: "broken"}
    )
    with pytest.raises(InputError, match=r"row 0\) has no audio\+video features"):
        nearest_neighbors(made.store, clip_id="clip00000")
    with pytest.raises(InputError, match="--k must be >= 1"):
        nearest_neighbors(made.store, clip_id="clip00003", config=NeighborsConfig(k=0))
