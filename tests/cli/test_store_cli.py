"""`diccae store info | import-h5 | export-h5` through the real entry point."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cli.main import main
from featstore.errors import SomeClipsFailed
from featstore.store import FeatureStore, ModalitySpec


@pytest.fixture
def ave_files(tmp_path):
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((12, 4, 5)).astype(np.float32)
    video = rng.standard_normal((12, 4, 3)).astype(np.float32)
    with h5py.File(tmp_path / "audio_feature.h5", "w") as f:
        f["avadataset"] = audio
    with h5py.File(tmp_path / "visual_feature.h5", "w") as f:
        f["avadataset"] = video
        f["y"] = np.arange(12) % 3
    return tmp_path / "audio_feature.h5", tmp_path / "visual_feature.h5", audio, video


def test_import_info_export_round_trip(ave_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # keep rich tables on one line
    af, vf, audio, video = ave_files
    store = tmp_path / "store"
    rc = main(
        [
            "store",
            "import-h5",
            str(af),
            str(store),
            "--audio-dataset",
            "avadataset",
            "--video-dataset",
            "avadataset",
            "--video-file",
            str(vf),
            "--labels-dataset",
            f"{vf}:y",
            "--chunk-rows",
            "5",
        ]
    )
    assert rc == 0
    assert "imported 12 rows" in capsys.readouterr().out
    s = FeatureStore.open(store)
    np.testing.assert_allclose(
        s.read("audio", slice(None)), audio.mean(axis=1), rtol=1e-5, atol=1e-7
    )
    assert s.labels.tolist() == (np.arange(12) % 3).tolist()

    assert main(["store", "info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["status"] == {"pending": 0, "done": 12, "failed": 0}
    assert info["modalities"]["video"]["encoder"] == "imported:visual_feature.h5:avadataset"
    assert info["chunk_rows"] == 5

    assert main(["store", "info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "12 done" in out and "imported:audio_feature.h5" in out

    assert main(["store", "export-h5", str(store), str(tmp_path / "out.h5"), "--no-progress"]) == 0
    assert "wrote 12 of 12 rows" in capsys.readouterr().out
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["audio"][:], s.read("audio", slice(None)))
    # the file is not replaced without --overwrite
    assert main(["store", "export-h5", str(store), str(tmp_path / "out.h5")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_import_errors_map_to_exit_codes(ave_files, tmp_path, capsys):
    af, vf, _, _ = ave_files
    rc = main(
        [
            "store",
            "import-h5",
            str(af),
            str(tmp_path / "s"),
            "--audio-dataset",
            "avadataset",
            "--video-dataset",
            "missing",
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "no dataset 'missing'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["store", "info", str(tmp_path / "nothing")]) == 3


def test_skip_nonfinite_exits_with_some_failed(tmp_path, capsys):
    a = np.ones((6, 2), np.float32)
    a[4] = np.nan
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["a"] = a
        f["v"] = np.ones((6, 2), np.float32)
    args = [
        "store",
        "import-h5",
        str(tmp_path / "f.h5"),
        str(tmp_path / "s"),
        "--audio-dataset",
        "a",
        "--video-dataset",
        "v",
        "--no-progress",
    ]
    assert main(args) == 2
    assert "rows [4]" in capsys.readouterr().err
    assert main([*args, "--on-nonfinite", "skip"]) == SomeClipsFailed.exit_code
    assert main(["store", "info", str(tmp_path / "s"), "--failures", "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{") :])
    assert [f["row"] for f in info["failures"]] == [4]


def test_info_failures_table(tmp_path, capsys):
    s = FeatureStore.create(
        tmp_path / "s",
        ids=["a", "b"],
        paths=["/x/a.mp4", "/x/b.mp4"],
        modalities={"audio": ModalitySpec("kaldi-fbank", 2)},
    )
    s.write_rows(0, embeddings={"audio": np.ones((2, 2))}, failed={1: "empty file"})
    assert main(["store", "info", str(tmp_path / "s"), "--failures"]) == 0
    out = capsys.readouterr().out
    assert "/x/b.mp4" in out and "empty file" in out
