"""ENOSPC from a real, tiny tmpfs (only where this process may mount one; skipped elsewhere)."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from relstores import make_store

from cli.main import main


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs filled up to its last few KiB."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root or a user namespace)")
    try:
        fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
        size = 0
        try:
            while True:
                size += os.write(fd, b"\1" * 4096)
        except OSError:
            pass
        os.ftruncate(fd, max(0, size - 8192))  # leave ~8 KiB free
        os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _left(mnt):
    return sorted(p.name for p in mnt.rglob("*") if p.name != "filler")


def test_cluster_onto_a_full_disk_exits_1_and_leaves_nothing(full_disk, tmp_path, capsys):
    path = make_store(tmp_path / "s.zarr", n=64, chunk_rows=16)
    rc = main(
        ["cluster", str(path), "--k", "2", "--out", str(full_disk / "L.npy"), "--backend", "numpy"]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "no space left" in err and "Traceback" not in err
    # what was finished (the label pair is small) stays whole; nothing partial, no 0-byte PNG
    left = _left(full_disk)
    assert not [n for n in left if n.startswith(".") or n.endswith(".png")]
    if "L.npy" in left:
        from featstore.labels.files import read_label_file

        assert read_label_file(full_disk / "L.npy", path)[0].shape == (64,)


def test_export_h5_onto_a_full_disk_is_refused_before_writing(full_disk, tmp_path, capsys):
    path = make_store(tmp_path / "s.zarr", n=64, chunk_rows=16)
    rc = main(["store", "export-h5", str(path), str(full_disk / "e.h5"), "--no-progress"])
    assert rc == 1 and "MB free" in capsys.readouterr().err
    assert _left(full_disk) == []


def test_store_import_onto_a_full_disk_exits_cleanly(full_disk, tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "e.h5", "w") as h:
        h["a"] = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)
        h["v"] = np.random.default_rng(1).standard_normal((4096, 64)).astype(np.float32)
    rc = main(
        [
            "store",
            "import-h5",
            str(tmp_path / "e.h5"),
            str(full_disk / "s.zarr"),
            "--audio-dataset",
            "a",
            "--video-dataset",
            "v",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "no space left" in err and "Traceback" not in err
    assert _left(full_disk) == []  # the hidden temp store is removed, no half store left
