"""Damaged stores through the real entry point: exit 3, one line naming the damage, no traceback."""

from __future__ import annotations

import pytest

from cli.main import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["store", "info", "{s}"],
        ["store", "verify", "{s}"],
        ["cluster", "{s}", "--k", "2", "--out", "{t}/L.npy", "--backend", "numpy"],
        ["confusion", "{s}", "--ground-truth", "--out", "{t}/conf"],
    ],
    ids=["info", "verify", "cluster", "confusion"],
)
def test_deleted_audio_chunk_exits_3_naming_it(store_path, tmp_path, capsys, argv):
    (store_path / "audio" / "c" / "1" / "0").unlink()
    rc = main([a.format(s=store_path, t=tmp_path) for a in argv])
    out = capsys.readouterr()
    assert rc == 3
    assert "Traceback" not in out.err
    assert "'audio' chunk 1 (rows 4-7)" in out.err + out.out


def test_deleted_label_chunk_is_not_read_as_unlabelled(store_path, tmp_path, capsys):
    (store_path / "label" / "c" / "0").unlink()
    rc = main(["confusion", str(store_path), "--ground-truth", "--out", str(tmp_path / "conf")])
    assert rc == 3
    assert "'label' chunk 0 (rows 0-3)" in _one_line_error(capsys)


def test_truncated_array_metadata_exits_3_in_one_line(store_path, capsys):
    meta = store_path / "video" / "zarr.json"
    meta.write_text(meta.read_text()[:30])
    assert main(["store", "info", str(store_path)]) == 3
    assert "'video' metadata" in _one_line_error(capsys)


def test_clean_store_verifies_with_exit_0(store_path, capsys):
    assert main(["store", "verify", str(store_path)]) == 0
    assert "no problems" in capsys.readouterr().out


def test_garbled_chunk_read_by_dask_workers_exits_3_naming_it(store_path, tmp_path, capsys):
    pytest.importorskip("distributed")
    chunk = store_path / "audio" / "c" / "1" / "0"
    chunk.write_bytes(b"\x00garbage" * 8)
    rc = main(
        [
            "cluster",
            str(store_path),
            "--k",
            "2",
            "--n-init",
            "1",
            "--out",
            str(tmp_path / "L.npy"),
            "--dask",
            "local:1",
        ]
    )
    out = capsys.readouterr()
    assert rc == 3, out.err[-2000:]
    assert "Traceback" not in out.err
    assert "'audio' chunk 1" in out.err + out.out
