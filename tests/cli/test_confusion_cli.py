"""``diccae confusion``: files written, terminal report, comparison and errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cli.main import main
from featstore.store.core import FeatureStore, ModalitySpec

FILES = (
    "confusion.npy",
    "confusion_scaled.npy",
    "classes.json",
    "stats.json",
    "top_pairs.csv",
    "histogram.png",
    "heatmap.png",
    "circles.png",
)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    C, n_per = 6, 40
    n = C * n_per
    y = np.repeat(np.arange(C), n_per)
    A = rng.normal(size=(C, 10))[y] + rng.normal(size=(n, 10))
    V = rng.normal(size=(C, 6))[y] + rng.normal(size=(n, 6)) * 1.5
    path = tmp_path_factory.mktemp("cs") / "store"
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        modalities={"audio": ModalitySpec("a", 10), "video": ModalitySpec("v", 6)},
        labels=y,
        splits=["train" if i % 4 else "test" for i in range(n)],
        class_names=["bark", "drum", "speech", "rain", "engine", "bird"],
        chunk_rows=50,
        dtype="float16",
    )
    s.write_rows(0, embeddings={"audio": A, "video": V}, failed={3: "decode error"})
    return path


def test_writes_every_file_and_prints_the_report(store_path, tmp_path, capsys):
    out = tmp_path / "gt"
    rc = main(["confusion", str(store_path), "--ground-truth", "--out", str(out), "--top", "5"])
    assert rc == 0
    for name in FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    M = np.load(out / "confusion.npy")
    S = np.load(out / "confusion_scaled.npy")
    assert M.shape == (6, 6) and M.dtype == np.float64 and (np.diag(M) == 0).all()
    assert S[~np.eye(6, dtype=bool)].max() == pytest.approx(2.0)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows_used"] == 239 and stats["n_classes"] == 6 and stats["n_pairs"] == 15
    assert stats["mean"] == pytest.approx(M[np.triu_indices(6, 1)].mean())
    assert (
        stats["parameters"]["labels"] == "ground-truth" and stats["parameters"]["n_components"] == 2
    )
    with open(out / "top_pairs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    assert {rows[0]["name_i"], rows[0]["name_j"]} <= {
        "bark",
        "drum",
        "speech",
        "rain",
        "engine",
        "bird",
    }
    assert float(rows[0]["M_ij"]) == pytest.approx(M.max())
    printed = capsys.readouterr().out
    assert "most confused" in printed and rows[0]["name_i"] in printed


def test_compare_overlays_and_reports_the_change(store_path, tmp_path):
    base = tmp_path / "base"
    assert (
        main(
            [
                "confusion",
                str(store_path),
                "--ground-truth",
                "--out",
                str(base),
                "--features",
                "audio",
            ]
        )
        == 0
    )
    out = tmp_path / "after"
    rc = main(
        [
            "confusion",
            str(store_path),
            "--ground-truth",
            "--out",
            str(out),
            "--n-components",
            "none",
            "--split",
            "train",
            "--coverage",
            "0.9",
            "--compare",
            str(base),
        ]
    )
    assert rc == 0
    stats = json.loads((out / "stats.json").read_text())
    base_stats = json.loads((base / "stats.json").read_text())
    assert stats["compare"]["delta_mean"] == pytest.approx(stats["mean"] - base_stats["mean"])
    assert stats["parameters"]["split"] == "train" and stats["n_components"] is None
    assert stats["rows_used"] == 179
    assert (out / "histogram.png").is_file() and (out / "circles.png").is_file()


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--out", "X"], 2),  # no label source
        (["--ground-truth", "--labels", "l.npy", "--out", "X"], 2),  # two label sources
        (["--ground-truth", "--out", "X", "--n-components", "zero"], 2),
        (["--ground-truth", "--out", "X", "--features", "nope"], 2),
        (["--ground-truth", "--out", "X", "--compare", "/nonexistent"], 2),
    ],
)
def test_bad_options_exit_with_input_error(store_path, tmp_path, argv, code):
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    assert main(["confusion", str(store_path), *argv]) == code


def test_store_without_ground_truth_is_refused(tmp_path):
    s = FeatureStore.create(
        tmp_path / "s", ids=["a", "b"], modalities={"audio": ModalitySpec("a", 3)}, dtype="float32"
    )
    s.write_rows(0, embeddings={"audio": np.ones((2, 3))})
    assert (
        main(
            [
                "confusion",
                str(tmp_path / "s"),
                "--ground-truth",
                "--features",
                "audio",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def test_cluster_label_file_is_used(store_path, tmp_path):
    labels_mod = pytest.importorskip(
        "featstore.labels.files", reason="featstore.labels.files not landed yet"
    )
    store = FeatureStore.open(store_path)
    labels = np.asarray(store.labels, dtype=np.int32) % 3
    meta = labels_mod.LabelFileMeta(
        k=3,
        inertia=0.0,
        inertias=[0.0],
        n_iter=1,
        seed=0,
        backend="test",
        features="audio+video",
        store_fingerprint=store.fingerprint,
        round=0,
        parent=None,
        created="",
        n_rows=store.n_rows,
    )
    path = tmp_path / "labels.npy"
    labels_mod.write_label_file(path, labels, meta)
    out = tmp_path / "clu"
    assert main(["confusion", str(store_path), "--labels", str(path), "--out", str(out)]) == 0
    assert np.load(out / "confusion.npy").shape == (3, 3)
    names = [c["name"] for c in json.loads((out / "classes.json").read_text())]
    assert names == ["cluster 0", "cluster 1", "cluster 2"]
