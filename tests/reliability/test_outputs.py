"""Outputs: atomic (PNGs too), typed errors for unwritable/full/file-instead-of-folder, never inside the store."""

from __future__ import annotations

import errno
import json
import os
import stat

import matplotlib
import numpy as np
import pytest

from cli.main import main
from featstore.common import fileio
from featstore.errors import DiskFull, OutputError
from featstore.labels.files import plot_cluster_sizes

matplotlib.use("Agg")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("which", ["cluster", "confusion"])
def test_out_inside_the_store_is_refused(store_path, tmp_path, capsys, which):
    out = store_path / ("L.npy" if which == "cluster" else "conf")
    argv = (
        ["cluster", str(store_path), "--k", "2", "--out", str(out), "--backend", "numpy"]
        if which == "cluster"
        else ["confusion", str(store_path), "--ground-truth", "--out", str(out)]
    )
    assert main(argv) == 2
    assert "inside the store" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("which", ["cluster", "confusion"])
def test_out_that_is_a_file_or_under_a_file_exits_2(store_path, tmp_path, capsys, which):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "L.npy" if which == "cluster" else blocker
    argv = (
        ["cluster", str(store_path), "--k", "2", "--out", str(out), "--backend", "numpy"]
        if which == "cluster"
        else ["confusion", str(store_path), "--ground-truth", "--out", str(out)]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_out_exits_2(store_path, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert (
            main(
                [
                    "cluster",
                    str(store_path),
                    "--k",
                    "2",
                    "--out",
                    str(ro / "L.npy"),
                    "--backend",
                    "numpy",
                ]
            )
            == 2
        )
        assert "permission denied" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_permission_error_while_writing_is_typed(tmp_path, monkeypatch):
    def eacces(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.os, "replace", eacces)
    with pytest.raises(OutputError, match="permission denied"):
        fileio.atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_png_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "sizes.png"
    target.write_bytes(b"old picture")
    monkeypatch.setattr(fileio.os, "fsync", _enospc)
    with pytest.raises(DiskFull, match="no space left"):
        plot_cluster_sizes(np.arange(20) % 3, 3, target)
    assert target.read_bytes() == b"old picture"
    assert [p.name for p in tmp_path.iterdir()] == ["sizes.png"]


def test_disk_full_in_cluster_exits_cleanly_and_keeps_nothing_half_written(
    store_path, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(fileio.os, "fsync", _enospc)
    out = tmp_path / "L.npy"
    rc = main(["cluster", str(store_path), "--k", "2", "--out", str(out), "--backend", "numpy"])
    err = capsys.readouterr().err
    assert rc == 1 and "no space left" in err and "Traceback" not in err
    assert list(tmp_path.glob("L*")) == [] and list(tmp_path.glob(".L*")) == []


def test_unexpected_enospc_anywhere_is_one_line_not_a_traceback(store_path, capsys, monkeypatch):
    import featstore.store.info

    monkeypatch.setattr(featstore.store.info, "store_info", _enospc)
    assert main(["store", "info", str(store_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "no space left" in err and "\n" not in err


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"))
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_label_json_never_holds_infinity(tmp_path):
    from featstore.labels.files import LabelFileMeta, read_label_file, write_label_file

    meta = LabelFileMeta(
        k=2,
        inertia=float("inf"),
        inertias=[float("inf"), 1.0],
        n_iter=1,
        seed=0,
        backend="numpy",
        features="audio",
        store_fingerprint="x",
    )
    write_label_file(tmp_path / "L.npy", np.array([0, 1], np.int32), meta)
    text = (tmp_path / "L.npy.json").read_text()
    assert "Infinity" not in text and json.loads(text)["inertia"] is None
    assert read_label_file(tmp_path / "L.npy")[1].inertias == [float("inf"), 1.0]


def test_export_h5_refuses_before_writing_when_the_disk_cannot_hold_it(
    store_path, tmp_path, capsys, monkeypatch
):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 20))
    out = tmp_path / "e.h5"
    assert main(["store", "export-h5", str(store_path), str(out), "--no-progress"]) == 1
    assert "MB free" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [store_path]


def test_confusion_report_is_all_or_nothing_when_the_disk_fills(tmp_path, monkeypatch):
    """A failure while writing the report leaves no half-written --out folder (and no staging folder)."""
    import errno

    import numpy as np

    import featstore.confusion.plots as plots
    from featstore.confusion import run_confusion_analysis
    from featstore.store.core import FeatureStore, ModalitySpec

    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    s = FeatureStore.create(
        tmp_path / "s.zarr",
        ids=[str(i) for i in range(n)],
        labels=y,
        chunk_rows=32,
        modalities={"audio": ModalitySpec("a", 4), "video": ModalitySpec("v", 4)},
    )
    s.write_rows(
        0,
        embeddings={
            "audio": rng.normal(size=(n, 4)) + y[:, None],
            "video": rng.normal(size=(n, 4)),
        },
    )

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "plot_confusion_circles", full_disk)
    out = tmp_path / "conf"
    with pytest.raises(OSError):
        run_confusion_analysis(s, out_dir=out, ground_truth=True)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".conf")] == []
    monkeypatch.undo()
    run_confusion_analysis(s, out_dir=out, ground_truth=True)
    assert {"confusion.npy", "stats.json", "circles.png"} <= {p.name for p in out.iterdir()}
