"""featstore.open_dataset and FeatureStore.to_pandas: contents, laziness, optional deps."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from storefactory import write_store

import featstore
from featstore.errors import BackendUnavailable, InputError
from featstore.store.core import FeatureStore


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    n = 50
    s = write_store(
        tmp_path / "s.zarr",
        rng.normal(size=(n, 6)),
        rng.normal(size=(n, 4)),
        np.arange(n) % 3,
        class_names=["dog", "cat", "car"],
        chunk_rows=16,
    )
    s.write_feature_array("fused", rng.normal(size=(n, 5)).astype(np.float32))
    s.write_rows(
        48, embeddings={"audio": np.zeros((2, 6)), "video": np.zeros((2, 4))}, failed={49: "broken"}
    )
    return FeatureStore.open(tmp_path / "s.zarr")


def _corrupt_chunks(store: FeatureStore, names) -> None:
    for name in names:
        for f in (store.path / name / "c").rglob("*"):
            if f.is_file():
                f.write_bytes(b"not a chunk")


def test_open_dataset_variables_coords_and_values(store):
    xr = pytest.importorskip("xarray")
    ds = featstore.open_dataset(store.path)
    assert isinstance(ds, xr.Dataset)
    assert {"audio", "video", "fused", "audio_missing", "video_missing"} <= set(ds.data_vars)
    assert set(ds.coords) >= {"id", "label", "class_name", "split", "status", "path"}
    assert ds.audio.dims == ("row", "audio_dim") and ds.fused.shape == (50, 5)
    np.testing.assert_array_equal(ds.audio.values, store.read("audio", slice(None)))
    np.testing.assert_array_equal(ds.fused.values, store.read("fused", slice(None)))
    assert ds.class_name.values[:4].tolist() == ["dog", "cat", "car", "dog"]
    assert ds.id.values[7] == "clip00007" and ds.path.values[7] == "/data/clip00007.mp4"
    assert ds.status.values[49] == 2 and ds.status.values[0] == 1
    assert ds.attrs["fingerprint"] == store.fingerprint
    # the notebook idioms work
    done = ds.where(ds.status == 1, drop=False)
    means = done.audio.groupby(ds.label.compute()).mean().compute()
    assert means.sizes["label"] == 3


def test_open_dataset_is_lazy(store):
    pytest.importorskip("xarray")
    _corrupt_chunks(store, store.array_names())
    ds = featstore.open_dataset(store.path)  # opens: nothing was read
    assert type(ds.audio.data).__module__.startswith("dask")
    assert all(
        type(ds[c].data).__module__.startswith("dask")
        for c in ("id", "label", "class_name", "status")
    )
    with pytest.raises(Exception):  # noqa: B017 - zarr's codec error type varies by version
        ds.audio.compute()


def test_open_dataset_feature_choice_and_errors(store):
    pytest.importorskip("xarray")
    ds = featstore.open_dataset(store, features=["audio"], chunk_rows=32)
    assert "video" not in ds.data_vars and ds.audio.data.chunks[0][0] == 32
    with pytest.raises(InputError, match="no feature array 'nope'"):
        featstore.open_dataset(store, features=["nope"])


def test_open_dataset_without_xarray_says_how_to_install(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(BackendUnavailable, match=r"diccae\[analysis\]"):
        featstore.open_dataset(store)


def test_to_pandas_table(store):
    pd = pytest.importorskip("pandas")
    df = store.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == 50 and df.index.name == "row"
    assert list(df.columns) == [
        "id",
        "path",
        "split",
        "label",
        "class_name",
        "status",
        "audio_missing",
        "video_missing",
        "error",
    ]
    assert df.loc[49, "status"] == "failed" and df.loc[49, "error"] == "broken"
    assert df.loc[4, "class_name"] == "cat" and df.loc[4, "label"] == 1
    sub = store.to_pandas(["id", "audio"], rows=[5, 2])
    assert list(sub.columns) == ["id"] + [f"audio_{j}" for j in range(6)]
    assert sub.index.tolist() == [5, 2]
    np.testing.assert_allclose(
        sub.loc[5, [f"audio_{j}" for j in range(6)]].to_numpy(np.float64),
        store.read("audio", [5])[0].astype(np.float64),
    )


def test_to_pandas_reads_only_the_columns_asked_for(store):
    pytest.importorskip("pandas")
    _corrupt_chunks(store, ["audio", "video", "fused", "paths"])
    df = FeatureStore.open(store.path).to_pandas(["id", "label", "class_name"])
    assert df["id"].iloc[3] == "clip00003"
    with pytest.raises(Exception):  # noqa: B017
        FeatureStore.open(store.path).to_pandas(["audio"])


def test_to_pandas_errors(store):
    pytest.importorskip("pandas")
    with pytest.raises(InputError, match="unknown column 'bogus'"):
        store.to_pandas(["bogus"])
    with pytest.raises(InputError, match="rows must lie within"):
        store.to_pandas(["id"], rows=[50])
