"""A damaged store is refused with the array, chunk and rows named, never read as zeros."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from relstores import make_store

from featstore.errors import StoreDamaged
from featstore.store import FeatureStore
from featstore.store.features import feature_view
from featstore.store.integrity import verify_store

ROW_KINDS = ["audio", "video", "label", "status", "audio_missing", "error", "ids", "split", "paths"]


def _chunk(path, name, chunk=1):
    f = path / name / "c" / str(chunk)
    return f / "0" if f.is_dir() else f


def _read_everything(path):
    store = FeatureStore.open(path)
    store.valid_rows()
    store.labels, store.ids, store.splits, store.paths  # noqa: B018
    store.failures()
    for _ in store.iter_shards(("audio", "video")):
        pass
    feature_view(store).load()


@pytest.mark.parametrize("name", ROW_KINDS)
def test_deleted_chunk_of_done_rows_is_damage_named(store_path, name):
    _chunk(store_path, name).unlink()
    with pytest.raises(StoreDamaged) as err:
        _read_everything(store_path)
    msg = str(err.value)
    assert f"'{name}' chunk 1 (rows 4-7)" in msg and "\n" not in msg


def test_absent_chunks_of_pending_rows_are_not_damage(tmp_path):
    path = make_store(tmp_path / "s.zarr", done_chunks=1)
    store = FeatureStore.open(path)
    assert store.valid_rows().tolist() == [True] * 4 + [False] * 4
    rows, x = feature_view(store).load()
    assert rows.tolist() == [0, 1, 2, 3] and np.abs(x).sum(axis=1).min() > 0
    assert verify_store(store)["ok"]


@pytest.mark.parametrize("name", ROW_KINDS)
@pytest.mark.parametrize("how", ["garbled", "truncated"])
def test_garbled_or_truncated_chunk_is_damage_named(store_path, name, how):
    f = _chunk(store_path, name)
    raw = f.read_bytes()
    f.write_bytes(b"\x00garbage\xff" * 3 if how == "garbled" else raw[: len(raw) // 2])
    if name != "error":  # reasons are decoded only when a row failed; verify reads them all
        with pytest.raises(StoreDamaged) as err:
            _read_everything(store_path)
        assert f"'{name}' chunk 1 (rows 4-7)" in str(err.value)
    report = verify_store(FeatureStore.open(store_path))
    assert any(f"'{name}' chunk 1 (rows 4-7)" in p for p in report["problems"]), report


def test_truncated_array_metadata_is_damage(store_path):
    meta = store_path / "audio" / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(StoreDamaged, match="'audio' metadata"):
        FeatureStore.open(store_path)


@pytest.mark.parametrize("name", ["video", "label", "status"])
def test_deleted_array_folder_is_damage(store_path, name):
    shutil.rmtree(store_path / name)
    with pytest.raises(StoreDamaged, match=f"array '{name}' is missing"):
        FeatureStore.open(store_path)


@pytest.mark.parametrize("shape", [[8, 10**12], [10**12, 3], [8]])
def test_absurd_array_shape_is_refused_before_reading(store_path, shape):
    meta = store_path / "audio" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = shape
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreDamaged, match="array 'audio' (has shape|metadata)"):
        FeatureStore.open(store_path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("fingerprint", "0" * 32),
        ("class_names", ["dog", "cat"]),
        ("dtype", "float16"),
        ("chunk_rows", 2),
        ("n_rows", 4),
    ],
)
def test_edited_attribute_is_detected(store_path, key, value):
    meta = store_path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"][key] = value
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreDamaged, match=f"attribute '{key}' was changed"):
        FeatureStore.open(store_path)


def test_flipped_bytes_that_still_decode_fail_the_checksum(tmp_path):
    path = make_store(tmp_path / "s.zarr", compression="none")
    f = _chunk(path, "audio")
    raw = bytearray(f.read_bytes())
    raw[5] ^= 0x40
    f.write_bytes(bytes(raw))
    report = verify_store(FeatureStore.open(path))
    assert not report["ok"]
    assert any("'audio' chunk 1" in p and "checksum" in p for p in report["problems"])


def test_verify_passes_a_whole_store_and_counts_bytes(store_path):
    report = verify_store(FeatureStore.open(store_path))
    assert report["ok"], report["problems"]
    assert report["chunks"] > 10 and report["bytes"] > 0


def test_added_feature_array_is_sealed_and_checked(store_path):
    store = FeatureStore.open(store_path, mode="r+")
    store.write_feature_array("fused", np.ones((8, 2), np.float32))
    store = FeatureStore.open(store_path)
    assert verify_store(store)["ok"]
    _chunk(store_path, "fused").unlink()
    with pytest.raises(StoreDamaged, match="'fused' chunk 1"):
        feature_view(FeatureStore.open(store_path), "fused").load()


@pytest.mark.filterwarnings("ignore:Object at conf:UserWarning")
def test_foreign_folders_inside_a_store_are_not_damage(store_path):
    (store_path / "conf").mkdir()  # e.g. an --out written inside the store by an older diccae
    (store_path / "conf" / "stats.json").write_text("{}")
    store = FeatureStore.open(store_path)
    assert verify_store(store)["ok"]


def test_find_damage_names_the_chunk_for_readers_that_bypass_the_store(store_path):
    assert FeatureStore.open(store_path).find_damage(["audio", "video"]) is None
    _chunk(store_path, "video").write_bytes(b"garbage")
    found = FeatureStore.open(store_path).find_damage(["audio", "video"])
    assert isinstance(found, StoreDamaged) and "'video' chunk 1 (rows 4-7)" in str(found)
