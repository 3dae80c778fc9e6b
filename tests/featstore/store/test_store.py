"""FeatureStore: the on-disk contract every later stage relies on."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import zarr

from featstore.errors import InputError, StoreConfigMismatch, StoreError
from featstore.store import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    FeatureStore,
    ModalitySpec,
    sha256_file,
)
from featstore.store.schema import FORMAT_NAME, FORMAT_VERSION

AUDIO = ModalitySpec("kaldi-fbank", 4, weights="none", config={"mel_bins": 128})
VIDEO = ModalitySpec("r3d_18", 3, weights="random", pretrained=False, config={"frames": 16})


def make_store(path, n=10, *, chunk_rows=4, dtype="float16", **kw):
    kw.setdefault("modalities", {"audio": AUDIO, "video": VIDEO})
    return FeatureStore.create(
        path,
        ids=[f"clip{i:03d}" for i in range(n)],
        labels=[i % 3 for i in range(n)],
        splits=["train" if i % 2 else "test" for i in range(n)],
        paths=[f"/data/clip{i:03d}.mp4" for i in range(n)],
        class_names=["walk", "run", "jump"],
        chunk_rows=chunk_rows,
        dtype=dtype,
        manifest_sha256="ab" * 32,
        **kw,
    )


def fill(store, start, n, *, seed=0):
    rng = np.random.default_rng(seed + start)
    a = rng.standard_normal((n, 4)).astype(np.float32)
    v = rng.standard_normal((n, 3)).astype(np.float32)
    store.write_rows(start, embeddings={"audio": a, "video": v})
    return a, v


# ----------------------------------------------------------------- creation


def test_create_lays_out_every_row_pending(tmp_path):
    s = make_store(tmp_path / "s")
    assert len(s) == s.n_rows == 10
    assert (s.status() == STATUS_PENDING).all()
    assert s.counts() == {"pending": 10, "done": 0, "failed": 0}
    assert s.ids.tolist() == [f"clip{i:03d}" for i in range(10)]
    assert s.labels.dtype == np.int32
    assert s.labels.tolist() == [i % 3 for i in range(10)]
    assert s.splits.tolist()[:2] == ["test", "train"]
    assert s.paths.tolist()[3] == "/data/clip003.mp4"
    assert s.array("audio").shape == (10, 4) and s.array("video").shape == (10, 3)
    assert str(s.array("audio").dtype) == "float16"
    assert s.array("audio").chunks == (4, 4)
    assert s.array("status").chunks == (4,)
    assert s.array("status").dtype == np.uint8
    assert not s.missing("audio").any() and not s.missing("video").any()
    assert {
        "audio",
        "video",
        "status",
        "label",
        "ids",
        "split",
        "paths",
        "error",
        "audio_missing",
        "video_missing",
    } <= set(s.array_names())


def test_attributes_describe_the_store(tmp_path):
    s = make_store(tmp_path / "s", dtype="float32", source="extract", extra_attrs={"note": "x"})
    reopened = FeatureStore.open(tmp_path / "s")
    a = reopened.attrs
    assert a["format"] == FORMAT_NAME and a["format_version"] == FORMAT_VERSION
    assert a["n_rows"] == 10 and a["chunk_rows"] == 4 and a["dtype"] == "float32"
    assert a["class_names"] == ["walk", "run", "jump"]
    assert a["manifest_sha256"] == "ab" * 32
    assert a["source"] == "extract" and a["note"] == "x"
    assert isinstance(a["diccae_version"], str) and a["diccae_version"]
    assert reopened.modalities == {"audio": AUDIO, "video": VIDEO}
    assert reopened.modalities["video"].pretrained is False
    assert reopened.modalities["video"].weights == "random"
    assert reopened.modalities["audio"].config == {"mel_bins": 128}
    assert reopened.fingerprint == s.fingerprint and len(s.fingerprint) == 32
    assert reopened.class_names == ["walk", "run", "jump"]
    # the group metadata is plain Zarr v3 JSON readable without diccae
    meta = json.loads((tmp_path / "s" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["attributes"]["format"] == FORMAT_NAME


def test_modality_spec_json_round_trip():
    spec = ModalitySpec(
        "hubert_base", 768, weights="sha256:" + "0" * 64, pretrained=True, config={"sr": 16000}
    )
    assert ModalitySpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    # older/partial attributes get safe defaults: never "pretrained" by accident
    assert ModalitySpec.from_json({"encoder": "x", "dim": 2}) == ModalitySpec(
        "x", 2, "none", False, {}
    )


def test_fingerprint_is_stable_and_tracks_what_matters(tmp_path):
    base = make_store(tmp_path / "a").fingerprint
    assert make_store(tmp_path / "b").fingerprint == base  # same content elsewhere
    assert make_store(tmp_path / "c", chunk_rows=3).fingerprint == base  # layout only
    assert make_store(tmp_path / "d", dtype="float32").fingerprint != base
    other_weights = {
        "audio": AUDIO,
        "video": ModalitySpec(
            "r3d_18", 3, weights="R3D_18_Weights.KINETICS400_V1", pretrained=True
        ),
    }
    assert make_store(tmp_path / "e", modalities=other_weights).fingerprint != base
    assert make_store(tmp_path / "f", n=9).fingerprint != base
    ids_reordered = FeatureStore.create(
        tmp_path / "g",
        ids=[f"clip{i:03d}" for i in reversed(range(10))],
        modalities={"audio": AUDIO, "video": VIDEO},
        chunk_rows=4,
        dtype="float16",
        manifest_sha256="ab" * 32,
    )
    assert ids_reordered.fingerprint != base


def test_refuses_to_overwrite_without_flag(tmp_path):
    s = make_store(tmp_path / "s")
    fill(s, 0, 4)
    with pytest.raises(StoreError, match="already exists"):
        make_store(tmp_path / "s")
    # nothing was lost
    assert FeatureStore.open(tmp_path / "s").counts()["done"] == 4
    fresh = make_store(tmp_path / "s", overwrite=True)
    assert fresh.counts()["done"] == 0


def test_overwrite_never_deletes_a_directory_that_is_not_a_store(tmp_path):
    precious = tmp_path / "my_videos"
    precious.mkdir()
    (precious / "clip.mp4").write_bytes(b"data")
    with pytest.raises(StoreError):
        make_store(precious, overwrite=True)
    assert (precious / "clip.mp4").exists()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"dtype": "float64"}, "dtype"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"modalities": {"depth": AUDIO}}, "unknown modalities"),
        ({"labels": [0, 1]}, "labels"),
    ],
)
def test_create_rejects_bad_arguments(tmp_path, kw, match):
    args = dict(ids=[f"c{i}" for i in range(5)], modalities={"audio": AUDIO}, chunk_rows=2)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        FeatureStore.create(tmp_path / "s", **args)
    assert not (tmp_path / "s").exists()


def test_wrong_length_splits_leave_nothing_behind(tmp_path):
    with pytest.raises(InputError, match="split"):
        FeatureStore.create(
            tmp_path / "s", ids=["a", "b"], modalities={"audio": AUDIO}, splits=["train"]
        )
    assert not (tmp_path / "s").exists()


def test_duplicate_ids_are_named_with_their_row(tmp_path):
    with pytest.raises(InputError, match=r"'b' at row 2"):
        FeatureStore.create(tmp_path / "s", ids=["a", "b", "b"], modalities={"audio": AUDIO})


def test_empty_store(tmp_path):
    s = FeatureStore.create(tmp_path / "s", ids=[], modalities={"audio": AUDIO})
    assert len(s) == 0 and s.shard_ranges() == [] and list(s.iter_shards(["audio"])) == []
    assert s.counts() == {"pending": 0, "done": 0, "failed": 0}
    assert s.read("audio", []).shape == (0, 4)


# --------------------------------------------------------------------- open


def test_open_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreError, match="not a diccae store"):
        FeatureStore.open(tmp_path / "nothing")
    zarr.open_group(str(tmp_path / "plain"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="format attribute"):
        FeatureStore.open(tmp_path / "plain")
    make_store(tmp_path / "s")
    g = zarr.open_group(str(tmp_path / "s"), mode="r+")
    g.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StoreError, match=f"version {FORMAT_VERSION + 1} is not supported"):
        FeatureStore.open(tmp_path / "s")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="cannot open"):
        FeatureStore.open(tmp_path / "broken")
    with pytest.raises(InputError, match="mode"):
        FeatureStore.open(tmp_path / "s", mode="w")


def test_read_only_store_refuses_every_write(tmp_path):
    make_store(tmp_path / "s")
    s = FeatureStore.open(tmp_path / "s")
    assert s.read_only
    with pytest.raises(StoreError, match="read-only"):
        s.write_rows(0, embeddings={"audio": np.zeros((4, 4))})
    with pytest.raises(StoreError, match="read-only"):
        s.write_feature_array("fused", np.zeros((10, 2)))
    with pytest.raises(StoreError, match="read-only"):
        s.update_attrs(x=1)
    # even the raw zarr handle is read-only
    with pytest.raises(ValueError):
        s.array("audio")[0] = 1
    assert (FeatureStore.open(tmp_path / "s").status() == STATUS_PENDING).all()


def test_array_lookup_error_lists_what_exists(tmp_path):
    s = make_store(tmp_path / "s")
    with pytest.raises(StoreError, match="no array 'fused'.*audio"):
        s.array("fused")


# ------------------------------------------------------------------- shards


def test_shard_ranges_are_chunk_aligned(tmp_path):
    s = make_store(tmp_path / "s", n=10, chunk_rows=4)
    assert s.shard_ranges() == [(0, 4), (4, 8), (8, 10)]
    assert s.shard_ranges(2, 9) == [(2, 4), (4, 8), (8, 9)]
    assert s.shard_ranges(5, 100) == [(5, 8), (8, 10)]
    assert s.shard_ranges(4, 4) == []
    for start, stop in s.shard_ranges(1, 10):
        assert start // 4 == (stop - 1) // 4  # never straddles a chunk


def test_small_store_keeps_requested_chunk_rows_as_one_partial_chunk(tmp_path):
    s = make_store(tmp_path / "s", n=3, chunk_rows=1024)
    assert s.chunk_rows == 1024 and s.shard_ranges() == [(0, 3)]


def test_resume_with_same_settings_on_small_store_is_compatible(tmp_path):
    s = make_store(tmp_path / "s", n=3, chunk_rows=1024)
    s.check_compatible(
        {"audio": AUDIO, "video": VIDEO},
        manifest_sha256="ab" * 32,
        dtype="float16",
        chunk_rows=1024,
    )


def test_iter_shards_in_store_and_given_order(tmp_path):
    s = make_store(tmp_path / "s", n=10, chunk_rows=4, dtype="float32")
    a0, v0 = fill(s, 0, 4)
    a1, v1 = fill(s, 4, 4)
    a2, v2 = fill(s, 8, 2)
    audio = np.concatenate([a0, a1, a2])
    shards = list(s.iter_shards())
    assert [(sh.start, sh.stop) for sh in shards] == [(0, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(np.concatenate([sh.data["audio"] for sh in shards]), audio)
    assert shards[2].rows.tolist() == [8, 9]
    shuffled = list(s.iter_shards(["audio", "status", "label"], order=[2, 0, 1]))
    assert [sh.start for sh in shuffled] == [8, 0, 4]
    np.testing.assert_array_equal(shuffled[0].data["audio"], a2)
    assert shuffled[0].data["status"].tolist() == [STATUS_DONE] * 2
    assert shuffled[1].data["label"].tolist() == [0, 1, 2, 0]


def test_read_by_rows_keeps_the_callers_order(tmp_path):
    s = make_store(tmp_path / "s", n=10, chunk_rows=4, dtype="float32")
    audio = np.concatenate([fill(s, st, n)[0] for st, n in [(0, 4), (4, 4), (8, 2)]])
    idx = [9, 0, 5, 3, 5]
    np.testing.assert_array_equal(s.read("audio", idx), audio[idx])
    np.testing.assert_array_equal(s.read("audio", np.array([7, 1])), audio[[7, 1]])
    np.testing.assert_array_equal(s.read("audio", slice(2, 7)), audio[2:7])
    assert s.read("label", [4, 1]).tolist() == [1, 1]
    assert s.read("ids", [2, 0]).tolist() == ["clip002", "clip000"]


def test_dask_reads_the_arrays_chunk_by_chunk(tmp_path):
    s = make_store(tmp_path / "s", n=10, chunk_rows=4, dtype="float32")
    audio = np.concatenate([fill(s, st, n)[0] for st, n in [(0, 4), (4, 4), (8, 2)]])
    x = da.from_zarr(FeatureStore.open(tmp_path / "s").array("audio"))
    assert x.chunks == ((4, 4, 2), (4,))
    np.testing.assert_allclose(x.mean(axis=0).compute(), audio.mean(axis=0), rtol=1e-6)
    st = da.from_zarr(s.array("status"))
    assert int((st == STATUS_DONE).sum().compute()) == 10


# ------------------------------------------------------------------ writing


def test_write_rows_stores_data_then_status(tmp_path):
    s = make_store(tmp_path / "s", dtype="float16")
    a, v = fill(s, 4, 4)
    r = FeatureStore.open(tmp_path / "s")
    assert r.status().tolist() == [0] * 4 + [1] * 4 + [0] * 2
    # float16 storage: values are the rounded inputs
    np.testing.assert_array_equal(r.read("audio", slice(4, 8)), a.astype(np.float16))
    np.testing.assert_array_equal(r.read("video", slice(4, 8)), v.astype(np.float16))
    assert r.read("audio", slice(0, 4)).dtype == np.float16
    assert not r.read("audio", slice(0, 4)).any()  # pending rows stay zero


def test_failures_are_recorded_with_reason_path_and_id(tmp_path):
    s = make_store(tmp_path / "s")
    s.write_rows(
        4,
        embeddings={"audio": np.ones((4, 4)), "video": np.ones((4, 3))},
        failed={5: "moov atom not found", 7: "empty file"},
    )
    assert s.status().tolist() == [0, 0, 0, 0, 1, 2, 1, 2, 0, 0]
    fails = FeatureStore.open(tmp_path / "s").failures()
    assert [(f.row, f.id, f.path, f.reason) for f in fails] == [
        (5, "clip005", "/data/clip005.mp4", "moov atom not found"),
        (7, "clip007", "/data/clip007.mp4", "empty file"),
    ]
    assert s.counts() == {"pending": 6, "done": 2, "failed": 2}
    assert make_store(tmp_path / "t").failures() == []


def test_missing_flags_and_valid_rows(tmp_path):
    s = make_store(tmp_path / "s")
    s.write_rows(
        0,
        embeddings={"audio": np.ones((4, 4)), "video": np.ones((4, 3))},
        missing={
            "audio": np.array([False, True, False, False]),
            "video": np.array([False, False, True, False]),
        },
        failed={3: "truncated"},
    )
    r = FeatureStore.open(tmp_path / "s")
    assert r.missing("audio")[:4].tolist() == [False, True, False, False]
    assert r.missing("video")[:4].tolist() == [False, False, True, False]
    assert np.flatnonzero(r.valid_rows()).tolist() == [0]
    assert np.flatnonzero(r.valid_rows(["video"])).tolist() == [0, 1]
    assert np.flatnonzero(r.valid_rows(["audio"])).tolist() == [0, 2]
    assert np.flatnonzero(r.valid_rows([])).tolist() == [0, 1, 2]


def test_modality_not_in_store_counts_as_missing(tmp_path):
    s = make_store(tmp_path / "s", modalities={"audio": AUDIO})
    s.write_rows(0, embeddings={"audio": np.ones((4, 4))})
    assert s.missing("video").all()
    assert not s.valid_rows().any() and s.valid_rows(["audio"]).sum() == 4


def test_write_rows_needs_a_modality(tmp_path):
    s = make_store(tmp_path / "s")
    with pytest.raises(InputError, match="at least one modality"):
        s.write_rows(0, embeddings={})
    assert (s.status() == STATUS_PENDING).all()


def test_write_rows_past_the_end_is_refused(tmp_path):
    s = make_store(tmp_path / "s", n=10)
    with pytest.raises(InputError):
        s.write_rows(8, embeddings={"audio": np.ones((4, 4)), "video": np.ones((4, 3))})
    assert (s.status() == STATUS_PENDING).all()


def test_failed_row_outside_the_block_is_refused(tmp_path):
    s = make_store(tmp_path / "s", n=10)
    with pytest.raises(InputError):
        s.write_rows(
            4, embeddings={"audio": np.ones((4, 4)), "video": np.ones((4, 3))}, failed={1: "x"}
        )
    assert s.status()[5] != STATUS_FAILED


def test_resume_rewrite_turns_a_failed_row_done(tmp_path):
    s = make_store(tmp_path / "s")
    s.write_rows(0, embeddings={"audio": np.ones((4, 4))}, failed={2: "flaky disk"})
    s.write_rows(0, embeddings={"audio": np.ones((4, 4))})
    assert s.status()[:4].tolist() == [STATUS_DONE] * 4 and s.failures() == []


def test_check_compatible(tmp_path):
    s = make_store(tmp_path / "s")
    s.check_compatible(
        {"audio": AUDIO, "video": VIDEO}, manifest_sha256="ab" * 32, dtype="float16", chunk_rows=4
    )
    other = {
        "audio": AUDIO,
        "video": ModalitySpec("r3d_18", 3, weights="sha256:" + "1" * 64, pretrained=True),
    }
    with pytest.raises(StoreConfigMismatch, match="video encoder") as exc:
        s.check_compatible(other, manifest_sha256="cd" * 32, dtype="float32", chunk_rows=8)
    msg = str(exc.value)
    assert (
        "manifest differs" in msg
        and "dtype" in msg
        and "chunk_rows" in msg
        and "--overwrite" in msg
    )
    with pytest.raises(StoreConfigMismatch, match="audio encoder"):
        s.check_compatible({"video": VIDEO}, manifest_sha256="ab" * 32, dtype="float16")


def test_write_feature_array(tmp_path):
    s = make_store(tmp_path / "s", chunk_rows=4)
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    data[3] = np.nan
    arr = s.write_feature_array("fused_r1", data, attrs={"run": "r1", "round": 1})
    assert arr.chunks == (4, 2)
    r = FeatureStore.open(tmp_path / "s")
    np.testing.assert_array_equal(r.read("fused_r1", slice(None)), data)
    assert dict(r.array("fused_r1").attrs) == {"run": "r1", "round": 1}
    assert r.feature_arrays() == ["audio", "fused_r1", "video"]
    # overwriting replaces the data; refusing keeps it
    s.write_feature_array("fused_r1", np.zeros((10, 3)), dtype="float16")
    assert s.array("fused_r1").shape == (10, 3) and str(s.array("fused_r1").dtype) == "float16"
    with pytest.raises(StoreError, match="already has"):
        s.write_feature_array("fused_r1", np.ones((10, 3)), overwrite=False)
    assert not s.read("fused_r1", slice(None)).any()


@pytest.mark.parametrize("name", ["audio", "video", "status", "label", "ids"])
def test_write_feature_array_protects_reserved_names(tmp_path, name):
    s = make_store(tmp_path / "s")
    with pytest.raises(InputError, match="reserved"):
        s.write_feature_array(name, np.zeros((10, 2)))


@pytest.mark.parametrize("shape", [(9, 2), (10,), (10, 2, 1)])
def test_write_feature_array_checks_shape(tmp_path, shape):
    s = make_store(tmp_path / "s")
    with pytest.raises(InputError, match=r"must be \(10, D\)"):
        s.write_feature_array("fused", np.zeros(shape))


def test_update_attrs_and_bytes_on_disk(tmp_path):
    s = make_store(tmp_path / "s")
    before = s.bytes_on_disk()
    assert before > 0
    fill(s, 0, 4)
    assert s.bytes_on_disk() > before
    s.update_attrs(clustered=True)
    assert FeatureStore.open(tmp_path / "s").attrs["clustered"] is True


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * (3 << 20))
    assert sha256_file(p) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def test_failed_status_constant_round_trips(tmp_path):
    s = make_store(tmp_path / "s")
    s.write_rows(0, embeddings={"audio": np.ones((4, 4))}, failed={0: "r"})
    assert FeatureStore.open(tmp_path / "s").read("status", [0]).tolist() == [STATUS_FAILED]
