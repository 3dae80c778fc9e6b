"""Training never writes into the store it reads (issue 10, item 6)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_phases import small_config
from trainer_synth import make_store

from featstore.errors import InputError
from featstore.labels import cluster_store
from featstore.store.core import FeatureStore
from featstore.store.features import FeatureView, write_run_features
from trainer.phases import pretrain


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _set_writable(root: Path, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        os.chmod(p, (mode | stat.S_IWUSR) if writable else (mode & ~bits))


def test_pretrain_with_reclustering_on_a_read_only_store(tmp_path):
    store_path = tmp_path / "s.zarr"
    make_store(store_path, n_per_class=30)
    round0 = cluster_store(store_path, out=tmp_path / "r0.npy", k=5, n_init=1, plot=False)
    before = snapshot(store_path)
    _set_writable(
        store_path, False
    )  # (root ignores the bits; the handle below is read-only either way)
    try:
        store = FeatureStore.open(store_path, mode="r")
        run = pretrain(
            store,
            labels_path=round0.path,
            out_dir=tmp_path / "pre",
            config=small_config(epochs=3, recluster_every=1),
        )
    finally:
        _set_writable(store_path, True)
    assert snapshot(store_path) == before
    assert len(run.label_rounds) == 3  # re-clustered at epochs 1 and 2
    # the fused features live in the run, carry the store's identity and are read back as a feature view
    view = FeatureView(FeatureStore.open(store_path), str(tmp_path / "pre" / "fused"))
    rows, x = view.load()
    assert (
        x.shape == (store.n_rows, 16)
        and np.isfinite(x).all()
        and np.array_equal(rows, np.arange(store.n_rows))
    )


def _pretrain_in_process(store_path: str, labels: str, out: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from test_phases import small_config as cfg

    torch.set_num_threads(1)
    pretrain(store_path, labels_path=labels, out_dir=out, config=cfg(epochs=3, recluster_every=1))


def test_two_pretrain_runs_at_once_on_one_store(tmp_path):
    store_path = tmp_path / "s.zarr"
    make_store(store_path, n_per_class=30)
    round0 = cluster_store(store_path, out=tmp_path / "r0.npy", k=5, n_init=1, plot=False)
    before = snapshot(store_path)
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_pretrain_in_process,
            args=(str(store_path), str(round0.path), str(tmp_path / f"run{i}")),
        )
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert snapshot(store_path) == before
    for i in range(2):
        assert (tmp_path / f"run{i}" / "labels_round2.npy").is_file()
        assert (tmp_path / f"run{i}" / "fused" / "zarr.json").is_file()


def test_run_features_refuse_another_store(tmp_path):
    a = make_store(tmp_path / "a.zarr", n_per_class=10)
    b = make_store(tmp_path / "b.zarr", n_per_class=12)  # other clips: another fingerprint
    path = write_run_features(tmp_path / "run" / "fused", a, np.zeros((a.n_rows, 3), np.float32))
    assert FeatureView(a, str(path)).dim == 3
    with pytest.raises(InputError, match="another store"):
        FeatureView(b, str(path))
    with pytest.raises(InputError, match="not a features directory"):
        FeatureView(a, str(tmp_path / "a.zarr"))


def test_cluster_and_confusion_cli_read_run_features(tmp_path):
    from cli.main import main

    store = make_store(tmp_path / "s.zarr", n_per_class=20)
    z = np.random.default_rng(0).normal(size=(store.n_rows, 4)).astype(np.float32)
    z[np.asarray(store.labels) == 1] += 5.0
    path = write_run_features(tmp_path / "run" / "fused", store, z)
    before = snapshot(tmp_path / "s.zarr")
    assert (
        main(
            [
                "cluster",
                str(tmp_path / "s.zarr"),
                "--k",
                "3",
                "--n-init",
                "1",
                "--features",
                str(path),
                "--out",
                str(tmp_path / "c.npy"),
                "--json",
                "--no-plot",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "confusion",
                str(tmp_path / "s.zarr"),
                "--ground-truth",
                "--features",
                str(path),
                "--out",
                str(tmp_path / "conf"),
            ]
        )
        == 0
    )
    assert (tmp_path / "conf" / "stats.json").is_file()
    assert snapshot(tmp_path / "s.zarr") == before
    assert (
        main(
            [
                "cluster",
                str(tmp_path / "s.zarr"),
                "--k",
                "3",
                "--features",
                str(path),
                "--dask",
                "local:1",
                "--out",
                str(tmp_path / "d.npy"),
            ]
        )
        == 2
    )
