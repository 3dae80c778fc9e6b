"""HDF5 import/export: AVE-style feature files in, plain HDF5 out, nothing lost on errors."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from featstore.errors import InputError, StoreError
from featstore.store import STATUS_DONE, STATUS_FAILED, FeatureStore, ModalitySpec, sha256_file
from featstore.store.features import feature_view
from featstore.store.h5export import export_h5
from featstore.store.h5import import import_h5
from featstore.store.h5source import EXPORT_FORMAT, parse_source

N, T, DA, DV, C = 23, 5, 6, 4, 3


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


@pytest.fixture
def ave(tmp_path):
    """AVE layout: separate audio/visual files with (N, T, D), labels (N, T, C) one-hot."""
    rng = np.random.default_rng(1)
    audio = rng.standard_normal((N, T, DA)).astype(np.float32)
    video = rng.standard_normal((N, T, DV)).astype(np.float32)
    onehot = np.zeros((N, T, C), np.float32)
    y = np.arange(N) % C
    onehot[np.arange(N), :, y] = 1
    onehot[4] = 0  # a clip with no annotated segment
    files = {
        "audio": write_h5(tmp_path / "audio_feature.h5", avadataset=audio),
        "video": write_h5(tmp_path / "visual_feature.h5", avadataset=video),
        "labels": write_h5(tmp_path / "labels.h5", avadataset=onehot),
    }
    return files, audio, video, y


def test_parse_source(tmp_path):
    f = write_h5(tmp_path / "a.h5", x=np.zeros(1))
    assert parse_source(f"{f}:grp/x", None, what="audio").file == f
    assert parse_source(f"{f}:grp/x", None, what="audio").dataset == "grp/x"
    assert parse_source("x", f, what="audio").dataset == "x"
    assert parse_source("odd:name", f, what="audio").dataset == "odd:name"  # not a file: a name
    with pytest.raises(InputError, match="no HDF5 file"):
        parse_source("x", None, what="audio")


def test_import_ave_layout_mean_pools_time_and_reads_one_hot_labels(ave, tmp_path):
    files, audio, video, y = ave
    s = import_h5(
        None,
        tmp_path / "s",
        audio_dataset="avadataset",
        video_dataset="avadataset",
        audio_file=files["audio"],
        video_file=files["video"],
        labels_dataset=f"{files['labels']}:avadataset",
        chunk_rows=8,
    )
    assert s.counts() == {"pending": 0, "done": N, "failed": 0}
    assert s.dtype == "float32" and s.chunk_rows == 8
    np.testing.assert_allclose(
        s.read("audio", slice(None)), audio.mean(axis=1), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        s.read("video", slice(None)), video.mean(axis=1), rtol=1e-5, atol=1e-7
    )
    expected = y.copy()
    expected[4] = -1
    assert s.labels.tolist() == expected.tolist()
    assert s.ids.tolist()[:3] == ["00", "01", "02"]
    spec = s.modalities["audio"]
    assert spec.encoder == "imported:audio_feature.h5:avadataset"
    assert spec.weights == "unknown" and spec.pretrained is False and spec.dim == DA
    assert spec.config["time_pooling"] == "mean" and spec.config["source_shape"] == [N, T, DA]
    assert s.modalities["video"].encoder == "imported:visual_feature.h5:avadataset"
    assert s.attrs["source"] == "import-h5"
    # manifest hash identifies the three source files together
    lines = "".join(
        f"{sha256_file(p)}  {p.name}\n" for p in sorted(p.resolve() for p in files.values())
    )
    assert s.attrs["manifest_sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    # the result is an ordinary store for the later stages
    rows, x = feature_view(FeatureStore.open(tmp_path / "s")).load()
    assert x.shape == (N, DA + DV)


def test_import_single_file_with_metadata_and_dtype(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((N, DA)).astype(np.float16)
    v = rng.standard_normal((N, DV)).astype(np.float16)
    f = write_h5(
        tmp_path / "feat.h5",
        a=a,
        v=v,
        y=np.arange(N) % C,
        split=np.array([b"train", b"test"] * 11 + [b"val"]),
        ids=np.array([f"vid{i}".encode() for i in range(N)]),
        names=np.array([b"dog", b"car", b"rain"]),
    )
    s = import_h5(
        f,
        tmp_path / "s",
        audio_dataset="a",
        video_dataset="v",
        labels_dataset="y",
        split_dataset="split",
        ids_dataset="ids",
        class_names_dataset="names",
        pretrained=True,
    )
    assert s.dtype == "float16"  # the source's
    np.testing.assert_array_equal(s.read("audio", slice(None)), a)
    assert s.splits.tolist()[-1] == "val" and s.ids.tolist()[5] == "vid5"
    assert s.class_names == ["dog", "car", "rain"]
    assert s.modalities["audio"].pretrained is True
    assert s.attrs["manifest_sha256"] == sha256_file(f)
    s32 = import_h5(f, tmp_path / "s32", audio_dataset="a", video_dataset="v", dtype="float32")
    assert s32.dtype == "float32"
    f64 = write_h5(tmp_path / "f64.h5", a=a.astype(np.float64), v=v.astype(np.float64))
    assert import_h5(f64, tmp_path / "s64", audio_dataset="a", video_dataset="v").dtype == "float32"


def test_shape_mismatches_name_every_dataset(tmp_path):
    f = write_h5(
        tmp_path / "f.h5",
        a=np.zeros((5, 3)),
        v=np.zeros((4, 2)),
        y=np.zeros(5, int),
        cube=np.zeros((5, 2, 2, 2)),
    )
    with pytest.raises(InputError, match=r"disagree.*f\.h5:a has 5.*f\.h5:v has 4"):
        import_h5(f, tmp_path / "s", audio_dataset="a", video_dataset="v")
    with pytest.raises(
        InputError,
        match=r"f\.h5:y: audio embeddings must be \(N, D\) or \(N, T, \.\.\., D\), got shape \(5,\)",
    ):
        import_h5(f, tmp_path / "s", audio_dataset="y", video_dataset="a")
    with pytest.raises(InputError, match=r"no dataset 'nope' \(has: a, cube, v, y\)"):
        import_h5(f, tmp_path / "s", audio_dataset="nope", video_dataset="a")
    with pytest.raises(InputError, match="split must be one value per row"):
        import_h5(
            f,
            tmp_path / "s",
            audio_dataset="a",
            video_dataset="a",
            split_dataset="cube",
        )
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        import_h5(
            tmp_path / "text.h5",
            tmp_path / "s",
            audio_dataset="a",
            video_dataset="v",
        )
    assert not (tmp_path / "s").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]


def test_spatial_axes_are_pooled_too(tmp_path, monkeypatch):
    import featstore.store.h5source as h5source

    monkeypatch.setattr(
        h5source, "READ_BYTES", 3 * 4 * 2 * 2 * 5 * 4
    )  # force several reads per shard
    v = (
        np.random.default_rng(4).standard_normal((9, 4, 2, 2, 5)).astype(np.float32)
    )  # AVE visual: (N, T, 7, 7, 512)
    f = write_h5(tmp_path / "f.h5", a=np.ones((9, 2), np.float32), v=v)
    s = import_h5(f, tmp_path / "s", audio_dataset="a", video_dataset="v", chunk_rows=4)
    np.testing.assert_allclose(
        s.read("video", slice(None)), v.mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-7
    )
    assert s.modalities["video"].dim == 5


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_rows_fail_by_default_and_leave_nothing(tmp_path, bad):
    a = np.ones((20, T, DA), np.float32)
    a[13, 2, 1] = bad
    a[17, 0, 0] = bad
    f = write_h5(tmp_path / "f.h5", a=a, v=np.ones((20, DV), np.float32))
    with pytest.raises(
        InputError,
        match=r"f\.h5:a: NaN/Inf in audio embeddings at rows \[13, 17\].*--on-nonfinite skip",
    ):
        import_h5(f, tmp_path / "s", audio_dataset="a", video_dataset="v", chunk_rows=32)
    assert not (tmp_path / "s").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


def test_nonfinite_rows_skipped_are_marked_failed(tmp_path):
    a = np.ones((20, DA), np.float32)
    v = np.ones((20, DV), np.float32)
    a[3, 0] = np.nan
    v[3, 1] = np.inf
    v[11, 0] = -np.inf
    f = write_h5(tmp_path / "f.h5", a=a, v=v)
    s = import_h5(
        f,
        tmp_path / "s",
        audio_dataset="a",
        video_dataset="v",
        chunk_rows=8,
        on_nonfinite="skip",
    )
    assert s.counts() == {"pending": 0, "done": 18, "failed": 2}
    reasons = {fl.row: fl.reason for fl in s.failures()}
    assert set(reasons) == {3, 11}
    assert "audio" in reasons[3] and "video" in reasons[3] and "f.h5:v" in reasons[11]
    assert np.isfinite(s.read("audio", slice(None))).all()  # the store itself stays finite
    rows, _ = feature_view(s).load()
    assert 3 not in rows and 11 not in rows and len(rows) == 18


def test_float16_overflow_is_refused(tmp_path):
    f = write_h5(
        tmp_path / "f.h5", a=np.full((3, 2), 1e6, np.float32), v=np.ones((3, 2), np.float32)
    )
    with pytest.raises(InputError, match="overflow float16"):
        import_h5(f, tmp_path / "s", audio_dataset="a", video_dataset="v", dtype="float16")


def test_bad_options_and_existing_targets(tmp_path):
    f = write_h5(tmp_path / "f.h5", a=np.ones((3, 2)), v=np.ones((3, 2)), y=np.array([0.5, 1, 2]))
    kw = dict(audio_dataset="a", video_dataset="v")
    with pytest.raises(InputError, match="on_nonfinite"):
        import_h5(f, tmp_path / "s", on_nonfinite="ignore", **kw)
    with pytest.raises(InputError, match="dtype"):
        import_h5(f, tmp_path / "s", dtype="int8", **kw)
    with pytest.raises(InputError, match=r"whole numbers; rows \[0\]"):
        import_h5(f, tmp_path / "s", labels_dataset="y", **kw)
    s = import_h5(f, tmp_path / "s", **kw)
    with pytest.raises(StoreError, match="already exists"):
        import_h5(f, tmp_path / "s", **kw)
    assert FeatureStore.open(tmp_path / "s").fingerprint == s.fingerprint
    import_h5(f, tmp_path / "s", overwrite=True, chunk_rows=2, **kw)
    assert FeatureStore.open(tmp_path / "s").chunk_rows == 2
    precious = tmp_path / "videos"
    precious.mkdir()
    (precious / "keep.mp4").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a diccae store"):
        import_h5(f, precious, overwrite=True, **kw)
    assert (precious / "keep.mp4").exists()


def test_duplicate_ids_are_reported(tmp_path):
    f = write_h5(
        tmp_path / "f.h5", a=np.ones((3, 2)), v=np.ones((3, 2)), ids=np.array([b"a", b"b", b"a"])
    )
    with pytest.raises(InputError, match="duplicate clip id 'a' at row 2"):
        import_h5(
            f,
            tmp_path / "s",
            audio_dataset="a",
            video_dataset="v",
            ids_dataset="ids",
        )
    assert not (tmp_path / "s").exists()


@pytest.fixture
def extracted(tmp_path):
    """A store as extraction leaves it: a failed row, a row without audio, a pending row."""
    n = 11
    s = FeatureStore.create(
        tmp_path / "src",
        ids=[f"clip{i}" for i in range(n)],
        modalities={
            "audio": ModalitySpec("kaldi-fbank", DA),
            "video": ModalitySpec("frame-stats", DV, weights="none"),
        },
        labels=np.arange(n) % C,
        splits=["train"] * 6 + ["test"] * 5,
        class_names=["a", "b", "c"],
        chunk_rows=4,
        dtype="float16",
    )
    rng = np.random.default_rng(3)
    a = rng.standard_normal((n, DA)).astype(np.float16)
    v = rng.standard_normal((n, DV)).astype(np.float16)
    a[6] = 0
    miss = np.zeros(8, bool)
    miss[6] = True
    s.write_rows(
        0,
        embeddings={"audio": a[:8], "video": v[:8]},
        missing={"audio": miss},
        failed={2: "moov atom not found"},
    )
    s.write_rows(8, embeddings={"audio": a[8:10], "video": v[8:10]})
    return s, a, v


def test_export_writes_complete_rows_with_metadata(extracted, tmp_path):
    s, a, v = extracted
    summary = export_h5(s, tmp_path / "out.h5")
    keep = [0, 1, 3, 4, 5, 7, 8, 9]
    assert summary["rows"] == len(keep) and summary["store_rows"] == 11
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f.attrs["format"] == EXPORT_FORMAT
        assert f.attrs["store_fingerprint"] == s.fingerprint
        assert json.loads(f.attrs["modalities"])["audio"]["encoder"] == "kaldi-fbank"
        assert f["audio"].dtype == np.float16 and f["audio"].chunks is not None
        np.testing.assert_array_equal(f["audio"][:], a[keep])
        np.testing.assert_array_equal(f["video"][:], v[keep])
        assert f["row"][:].tolist() == keep
        assert f["label"][:].tolist() == [k % C for k in keep]
        assert [x.decode() for x in f["ids"][:]] == [f"clip{k}" for k in keep]
        assert (f["status"][:] == STATUS_DONE).all()
        assert [x.decode() for x in f["class_names"][:]] == ["a", "b", "c"]


def test_export_include_missing_then_import_round_trip_is_exact(extracted, tmp_path):
    s, a, v = extracted
    export_h5(s, tmp_path / "all.h5", include_missing=True)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        assert f["status"][:].tolist() == [1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 0]
        assert np.flatnonzero(f["audio_missing"][:]).tolist() == [6]
        assert f["error"][2].decode() == "moov atom not found"
    back = import_h5(
        tmp_path / "all.h5",
        tmp_path / "back",
        audio_dataset="audio",
        video_dataset="video",
        labels_dataset="label",
        split_dataset="split",
        ids_dataset="ids",
        chunk_rows=4,
    )
    assert back.dtype == "float16"
    np.testing.assert_array_equal(back.read("audio", slice(None)), s.read("audio", slice(None)))
    np.testing.assert_array_equal(back.read("video", slice(None)), s.read("video", slice(None)))
    assert back.labels.tolist() == s.labels.tolist()
    assert back.ids.tolist() == s.ids.tolist() and back.splits.tolist() == s.splits.tolist()
    assert back.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(back.missing("audio"), s.missing("audio"))
    np.testing.assert_array_equal(back.valid_rows(), s.valid_rows())
    st = back.status()
    assert st[2] == STATUS_FAILED and st[10] == STATUS_FAILED  # pending there: no data here
    assert "moov atom not found" in {f.row: f.reason for f in back.failures()}[2]
    assert back.modalities["audio"].config["original"]["encoder"] == "kaldi-fbank"
    # the views later stages use see the same numbers
    r1, x1 = feature_view(s).load()
    r2, x2 = feature_view(back).load()
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(x1, x2)


def test_export_refuses_to_overwrite_and_leaves_no_temp(extracted, tmp_path):
    s, _, _ = extracted
    target = tmp_path / "out.h5"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists"):
        export_h5(s, target)
    assert target.read_bytes() == b"keep me"
    export_h5(s.path, target, overwrite=True)
    with h5py.File(target, "r") as f:
        assert f["audio"].shape == (8, DA)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5", "src"]


def test_export_overwrite_never_deletes_a_directory_or_the_store(extracted, tmp_path):
    s, _, _ = extracted
    folder = tmp_path / "results"
    (folder / "important").mkdir(parents=True)
    with pytest.raises(InputError, match="directory"):
        export_h5(s, folder, overwrite=True)
    assert (folder / "important").is_dir()
    with pytest.raises(InputError):
        export_h5(s, s.path / "x.h5", overwrite=True)
    assert FeatureStore.open(s.path).n_rows == s.n_rows and not (s.path / "x.h5").exists()


def test_export_empty_selection(tmp_path):
    s = FeatureStore.create(
        tmp_path / "s",
        ids=["a", "b"],
        modalities={"audio": ModalitySpec("x", 2), "video": ModalitySpec("y", 2)},
    )
    summary = export_h5(s, tmp_path / "e.h5")  # nothing done yet
    assert summary["rows"] == 0
    with h5py.File(tmp_path / "e.h5", "r") as f:
        assert f["audio"].shape == (0, 2)


def test_import_and_export_report_progress_as_data(extracted, tmp_path):
    """Both directions report rows done and rows/s through the callback, ending closed."""
    s, _, _ = extracted
    updates = []
    export_h5(s, tmp_path / "p.h5", include_missing=True, progress=updates.append)
    assert updates[0].total == s.n_rows and updates[-1].done
    assert sum(u.advance for u in updates) == s.n_rows
    assert "rows/s" in (updates[-2].info or "")
    updates.clear()
    t = import_h5(
        tmp_path / "p.h5",
        tmp_path / "back",
        audio_dataset="audio",
        video_dataset="video",
        chunk_rows=4,
        progress=updates.append,
    )
    assert updates[0].total == t.n_rows == s.n_rows and updates[-1].done
    assert [u.advance for u in updates if u.advance] == [4, 4, 3]
