"""One writer per store: a second writer exits 3 naming the holder; live temp folders are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from cli.main import main
from featstore.common.lock import lock_path, writer_lock
from featstore.errors import StoreLocked
from featstore.store import FeatureStore, remove_stale_temps


@pytest.fixture
def holder(tmp_path):
    """Another process holding the writer lock of tmp_path/s.zarr until killed."""
    store = tmp_path / "s.zarr"
    code = textwrap.dedent(f"""
        import sys, time
        from featstore.common.lock import writer_lock
        with writer_lock({str(store)!r}):
            print("locked", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield store, proc
    proc.kill()
    proc.wait()


def _h5(tmp_path):
    f = tmp_path / "e.h5"
    with h5py.File(f, "w") as h:
        h["a"] = np.ones((6, 3), np.float32)
        h["v"] = np.ones((6, 2), np.float32)
    return f


def test_second_writer_exits_3_naming_the_holder_pid(holder, tmp_path, capsys):
    store, proc = holder
    rc = main(
        [
            "store",
            "import-h5",
            str(_h5(tmp_path)),
            str(store),
            "--audio-dataset",
            "a",
            "--video-dataset",
            "v",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3
    assert f"pid {proc.pid}" in err and "Traceback" not in err
    assert not store.exists()  # the refused run wrote nothing


def test_lock_is_released_when_the_holder_dies(holder, tmp_path):
    store, proc = holder
    with pytest.raises(StoreLocked):
        with writer_lock(store):
            pass
    proc.kill()
    proc.wait()
    with writer_lock(store):  # the kernel dropped the dead holder's lock
        assert lock_path(store).read_text().strip() == str(os.getpid())
    assert not lock_path(store).exists()  # removed by its holder


def test_writes_into_a_locked_store_are_refused(holder, tmp_path):
    store, _ = holder
    other = FeatureStore.create(tmp_path / "t.zarr", ids=["a", "b"], modalities={})
    FeatureStore.create(store, ids=["a", "b"], modalities={})
    opened = FeatureStore.open(store, mode="r+")
    with pytest.raises(StoreLocked):
        opened.write_feature_array("fused", np.zeros((2, 2), np.float32))
    other.write_feature_array("fused", np.zeros((2, 2), np.float32))  # another store: unaffected


def test_lock_is_reentrant_in_one_process(tmp_path):
    with writer_lock(tmp_path / "s.zarr"), writer_lock(tmp_path / "s.zarr"):
        pass


def test_live_runs_temp_folder_is_not_deleted(holder, tmp_path):
    store, proc = holder
    live = tmp_path / f".s.zarr.creating-{proc.pid}"
    dead = tmp_path / ".s.zarr.creating-999999999"
    live.mkdir()
    dead.mkdir()
    remove_stale_temps(store)
    assert live.is_dir() and not dead.exists()
