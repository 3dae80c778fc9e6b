"""diccae map's library side: even per-class subsampling, PCA, flags, UMAP refusal."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from storefactory import make_class_store

from featstore.analysis import MapConfig, audit_store, plot_map
from featstore.analysis.mapping import even_sample
from featstore.errors import BackendUnavailable, InputError


def test_even_sample_takes_the_same_number_from_each_class():
    groups = np.repeat([0, 1, 2], [1000, 50, 10])
    rows = even_sample(groups, np.arange(groups.size), 90, seed=0)
    assert np.bincount(groups[rows]).tolist() == [30, 30, 10]
    assert np.array_equal(rows, np.sort(rows))
    assert np.array_equal(rows, even_sample(groups, np.arange(groups.size), 90, seed=0))


def test_pca_map_by_class_and_by_flag(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", seed=0, n_hybrids=10)
    doc = plot_map(made.store, tmp_path / "m.png", config=MapConfig(max_points=400))
    assert (tmp_path / "m.png").stat().st_size > 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["points"] == doc["points"] == 400 and saved["usable_rows"] == made.store.n_rows
    assert all(v == 50 for v in saved["groups"].values())
    assert 0 < saved["explained_variance_ratio"] <= 1
    audit_store(made.store, out_dir=tmp_path / "audit", ground_truth=True)
    doc = plot_map(
        made.store,
        tmp_path / "f.png",
        audit_dir=tmp_path / "audit",
        config=MapConfig(color_by="flag"),
    )
    assert doc["groups"]["modality_disagreement"] >= 9 and doc["points"] == made.store.n_rows


def test_map_errors(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", seed=1, per_class=20)
    with pytest.raises(InputError, match="needs --audit"):
        plot_map(made.store, tmp_path / "f.png", config=MapConfig(color_by="flag"))
    with pytest.raises(InputError, match=r"\.png"):
        plot_map(made.store, tmp_path / "f.jpg")
    other = make_class_store(
        tmp_path / "o.zarr", seed=2, per_class=21
    )  # other ids: other fingerprint
    audit_store(other.store, out_dir=tmp_path / "a", ground_truth=True)
    with pytest.raises(InputError, match="made from another store"):
        plot_map(
            made.store,
            tmp_path / "f.png",
            audit_dir=tmp_path / "a",
            config=MapConfig(color_by="flag"),
        )


@pytest.mark.skipif(
    importlib.util.find_spec("umap") is not None, reason="umap-learn is installed here"
)
def test_umap_without_umap_learn_says_so(tmp_path):
    made = make_class_store(tmp_path / "s.zarr", seed=1, per_class=20)
    with pytest.raises(BackendUnavailable, match="pip install umap-learn"):
        plot_map(made.store, tmp_path / "u.png", config=MapConfig(method="umap"))
    assert not (tmp_path / "u.png").exists()
