"""`diccae cluster` and `diccae labels info` through the CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from cli.main import main
from featstore.store.core import FeatureStore, ModalitySpec


def make_store(path, n=400):
    X, y = make_blobs(n, centers=4, n_features=6, cluster_std=0.3, random_state=0)
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        labels=y,
        chunk_rows=64,
        dtype="float32",
        modalities={"audio": ModalitySpec("a", 3), "video": ModalitySpec("v", 3)},
    )
    s.write_rows(0, embeddings={"audio": X[:, :3], "video": X[:, 3:]}, failed={0: "bad"})
    return s


def test_cluster_json_then_align_and_info(tmp_path, capsys):
    s = make_store(tmp_path / "s")
    out = tmp_path / "L0.npy"
    rc = main(
        [
            "cluster",
            str(s.path),
            "--k",
            "4",
            "--n-init",
            "2",
            "--seed",
            "1",
            "--out",
            str(out),
            "--backend",
            "numpy",
            "--json",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["k"] == 4 and len(summary["inertias"]) == 2 and summary["backend"] == "numpy"
    assert summary["agreement"]["ari"] > 0.99 and sum(summary["sizes"]) == 399
    labels = np.load(out, allow_pickle=False)
    assert labels.shape == (400,) and labels[0] == -1
    assert (tmp_path / "L0.png").is_file()

    rc = main(
        [
            "cluster",
            str(s.path),
            "--k",
            "4",
            "--n-init",
            "2",
            "--seed",
            "9",
            "--out",
            str(tmp_path / "L1.npy"),
            "--align-to",
            str(out),
            "--memory-budget",
            "20MB",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    assert "Cluster sizes" in text and "Restarts" in text and "NMI" in text and "aligned to" in text
    assert (np.load(tmp_path / "L1.npy") == labels).all()

    rc = main(["labels", "info", str(tmp_path / "L1.npy"), "--store", str(s.path), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert rc == 0 and info["round"] == 1 and info["parent"] == str(out)


def test_bad_inputs_exit_with_clear_codes(tmp_path, capsys):
    s = make_store(tmp_path / "s")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    assert main(["labels", "info", str(bad)]) == 2
    assert (
        main(
            [
                "cluster",
                str(s.path),
                "--k",
                "4",
                "--out",
                str(tmp_path / "x.npy"),
                "--align-to",
                str(bad),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "cluster",
                str(s.path),
                "--k",
                "4",
                "--out",
                str(tmp_path / "x.npy"),
                "--backend",
                "cuml",
                "--device",
                "cpu",
            ]
        )
        == 5
    )
    assert (
        main(["cluster", str(tmp_path / "nostore"), "--k", "4", "--out", str(tmp_path / "x.npy")])
        == 3
    )
    assert (
        main(
            [
                "cluster",
                str(s.path),
                "--k",
                "4",
                "--out",
                str(tmp_path / "x.npy"),
                "--restart-sample",
                "lots",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "bad.npy" in err


def test_cluster_on_dask_writes_the_same_label_file(tmp_path, capsys):
    pytest.importorskip("distributed")
    s = make_store(tmp_path / "s")
    args = [
        "--k",
        "4",
        "--n-init",
        "2",
        "--seed",
        "3",
        "--backend",
        "numpy",
        "--restart-sample",
        "off",
        "--json",
        "--no-plot",
    ]
    assert main(["cluster", str(s.path), "--out", str(tmp_path / "one.npy"), *args]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "cluster",
                str(s.path),
                "--out",
                str(tmp_path / "dask.npy"),
                "--dask",
                "local:1",
                *args,
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["backend"].startswith("dask")
    np.testing.assert_array_equal(np.load(tmp_path / "dask.npy"), np.load(tmp_path / "one.npy"))
