"""swap_in: the one build-under-a-hidden-name-then-swap used by extraction and import-h5."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from featstore.errors import StoreError
from featstore.store import FeatureStore, ModalitySpec, remove_stale_temps, swap_in
from featstore.store.swap import check_replaceable, temp_store_path

SPEC = {"audio": ModalitySpec("kaldi-fbank", 3)}


def _build(path, n):
    s = FeatureStore.create(path, ids=[f"c{i}" for i in range(n)], modalities=SPEC, chunk_rows=2)
    s.write_rows(0, embeddings={"audio": np.ones((n, 3))})


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_swap_replaces_a_store_whole_and_leaves_no_temp(tmp_path):
    final = tmp_path / "s"
    with swap_in(final, "creating") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".s.creating-")
        _build(tmp, 3)
        assert not final.exists()  # nothing at the final name until the block is done
    assert FeatureStore.open(final).n_rows == 3
    with swap_in(final, "importing") as tmp:
        _build(tmp, 5)
        assert FeatureStore.open(final).n_rows == 3  # the old store stays readable meanwhile
    assert FeatureStore.open(final).n_rows == 5 and _hidden(tmp_path) == []


def test_a_failed_build_leaves_the_old_store_and_no_temp(tmp_path):
    final = tmp_path / "s"
    with swap_in(final, "creating") as tmp:
        _build(tmp, 3)
    with pytest.raises(RuntimeError, match="boom"), swap_in(final, "creating") as tmp:
        _build(tmp, 5)
        raise RuntimeError("boom")
    assert FeatureStore.open(final).n_rows == 3 and _hidden(tmp_path) == []


def test_never_replaces_what_is_not_a_store(tmp_path):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a diccae store"):
        check_replaceable(precious, overwrite=True)
    with pytest.raises(StoreError, match="not a diccae store"), swap_in(precious, "creating") as t:
        _build(t, 2)
    assert (precious / "keep.txt").read_text() == "mine" and _hidden(tmp_path) == []
    with pytest.raises(StoreError, match="already exists"):
        check_replaceable(precious, overwrite=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    check_replaceable(empty, overwrite=False)  # an empty folder is a fine target
    with swap_in(empty, "creating") as tmp:
        _build(tmp, 2)
    assert FeatureStore.open(empty).n_rows == 2


def test_stale_temps_of_dead_writers_go_live_ones_stay(tmp_path):
    final = tmp_path / "s"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".s.creating-{int(dead.stdout)}"
    live = tmp_path / f".s.importing-{os.getppid()}"
    mine = temp_store_path(final, "replaced")
    for p in (stale, live, mine):
        p.mkdir()
    remove_stale_temps(final)
    assert _hidden(tmp_path) == [live.name]
    with pytest.raises(ValueError, match="tag"):
        temp_store_path(final, "other")
