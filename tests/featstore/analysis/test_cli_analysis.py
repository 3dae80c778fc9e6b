"""diccae audit / neighbors / map: parse, call the library, map errors to exit codes."""

from __future__ import annotations

import json

import pytest
from storefactory import make_class_store

from cli.main import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_class_store(
        tmp_path_factory.mktemp("cli") / "s.zarr", seed=3, n_hybrids=8
    ).store.path


def test_audit_command(store, tmp_path, capsys):
    assert (
        main(["audit", str(store), "--ground-truth", "--out", str(tmp_path / "a"), "--top", "5"])
        == 0
    )
    out = capsys.readouterr().out
    assert "likely_mislabeled" in out and "probe accuracy" in out
    doc = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert doc["config"]["top"] == 5 and doc["flags"]["likely_mislabeled"] > 0
    assert (
        main(
            [
                "audit",
                str(store),
                "--ground-truth",
                "--features",
                "audio",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "b" / "audit.json").read_text())["flags"]["modality_disagreement"]
        == 0
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--out", "X"], 2, "exactly one of --labels"),
        (
            ["--ground-truth", "--features", "audio,nope", "--out", "X"],
            2,
            "no feature array 'nope'",
        ),
        (["--labels", "missing.npy", "--out", "X"], 2, "label file not found"),
    ],
)
def test_audit_bad_input(store, tmp_path, capsys, args, code, message):
    args = [a.replace("X", str(tmp_path / "o")) for a in args]
    assert main(["audit", str(store), *args]) == code
    assert message in capsys.readouterr().err.replace("\n", "")


def test_audit_missing_store_is_exit_3(tmp_path, capsys):
    assert (
        main(["audit", str(tmp_path / "none"), "--ground-truth", "--out", str(tmp_path / "o")]) == 3
    )


def test_neighbors_command(store, capsys):
    assert main(["neighbors", str(store), "--id", "clip00004", "--k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["neighbors"]) == 3 and res["query"]["id"] == "clip00004"
    assert main(["neighbors", str(store), "--path", "/data/clip00004.mp4", "--k", "2"]) == 0
    assert "Nearest clips to clip00004" in capsys.readouterr().out
    assert main(["neighbors", str(store), "--id", "nope"]) == 2
    assert main(["neighbors", str(store), "--id", "clip00004", "--method", "fast"]) == 2


def test_map_command(store, tmp_path, capsys):
    assert main(["map", str(store), "--out", str(tmp_path / "m.png"), "--max-points", "200"]) == 0
    assert (tmp_path / "m.png").is_file() and (tmp_path / "m.json").is_file()
    assert main(["map", str(store), "--out", str(tmp_path / "m.png"), "--color-by", "shape"]) == 2
