"""User text (paths, class names, store names, reasons) is printed literally, never as rich markup."""

from __future__ import annotations

import numpy as np
from relstores import make_store

from cli.main import main
from featstore.errors import SomeClipsFailed
from featstore.store import FeatureStore

NAMES = ("[/x]", "[bold]b")


def test_store_info_prints_markup_like_names_literally(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = make_store(tmp_path / "s[old].zarr", class_names=NAMES)
    store = FeatureStore.open(path, mode="r+")
    store.write_rows(
        4,
        embeddings={"audio": np.ones((4, 3)), "video": np.ones((4, 5))},
        failed={5: "cannot open x[/red].mp4"},
    )
    assert main(["store", "info", str(path), "--failures"]) == 0
    out = capsys.readouterr().out
    assert "s[old].zarr" in out and "[/x]" in out and "[bold]b" in out and "x[/red].mp4" in out


def test_confusion_prints_markup_like_class_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    path = make_store(tmp_path / "s.zarr", n=16, class_names=NAMES)
    assert main(["confusion", str(path), "--ground-truth", "--out", str(tmp_path / "c[1]")]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "c[1]" in out


def test_error_message_keeps_markup_like_store_name(tmp_path, capsys):
    assert main(["store", "info", str(tmp_path / "s[old].zarr")]) == 3
    assert "s[old].zarr" in capsys.readouterr().err


def test_extract_failure_with_markup_path_exits_6(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    m = tmp_path / "m.csv"
    m.write_text("path,label,split\nx[/red].mp4,a,train\n")
    rc = main(
        [
            "extract",
            str(m),
            str(tmp_path / "s.zarr"),
            "--workers",
            "0",
            "--no-progress",
            "--chunk-rows",
            "4",
        ]
    )
    out = capsys.readouterr().out
    assert rc == SomeClipsFailed.exit_code
    assert "x[/red].mp4" in out
    assert main(["store", "info", str(tmp_path / "s.zarr"), "--failures"]) == 0
