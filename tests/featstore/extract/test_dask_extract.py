"""Extraction on a Dask cluster equals the single-process store, also after a worker dies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from featstore.common.dask_runtime import dask_client, parse_scheduler  # noqa: E402
from featstore.errors import (  # noqa: E402
    BackendUnavailable,
    DaskTasksIncomplete,
    InputError,
    StoreConfigMismatch,
)
from featstore.extract.dask import extract_dask, manifest_slice, task_ranges  # noqa: E402
from featstore.extract.manifest import load_manifest  # noqa: E402
from featstore.extract.pipeline import ExtractConfig, extract  # noqa: E402
from featstore.store import STATUS_DONE, STATUS_PENDING, FeatureStore  # noqa: E402

CHUNK = 2


def _config(**kw) -> ExtractConfig:
    base = dict(chunk_rows=CHUNK, workers=0, batch_size=2, dtype="float32")
    base.update(kw)
    return ExtractConfig(**base)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, clip_dir, broken_clips, unusual_clips) -> Path:
    """Six good clips, a text file named .mp4 and an audio-only clip (8 rows, 4 chunks)."""
    folder = tmp_path_factory.mktemp("dask_manifest")
    lines = ["path,label,split"]
    for i, clip in enumerate(sorted(clip_dir.glob("clip*.mp4"))):
        lines.append(f"{clip},{'ab'[i % 2]},{'train' if i < 4 else 'test'}")
    lines.insert(3, f"{broken_clips['text']},a,train")
    lines.append(f"{unusual_clips['audio_only']},b,test")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, manifest) -> FeatureStore:
    """The single-process store every Dask run must reproduce."""
    out = tmp_path_factory.mktemp("dask_ref") / "ref.zarr"
    summary = extract(manifest, out, _config())
    assert summary.n_failed == 1 and summary.n_done == 7
    return FeatureStore.open(out)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes; the scheduler gives up on a task after one lost worker."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        lc = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    try:
        yield lc
    finally:
        lc.close()


def assert_same_store(a: FeatureStore, b: FeatureStore) -> None:
    assert a.array_names() == b.array_names()
    for name in a.array_names():
        x, y = np.asarray(a.array(name)[:]), np.asarray(b.array(name)[:])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), f"array {name} differs"
    assert a.attrs == b.attrs


# ---------------------------------------------------------------- pure helpers
def test_parse_scheduler():
    assert parse_scheduler("local:3") == ("local", 3)
    assert parse_scheduler("local")[0] == "local"
    assert parse_scheduler("tcp://10.0.0.1:8786") == ("address", "tcp://10.0.0.1:8786")
    assert parse_scheduler("node7:8786") == ("address", "tcp://node7:8786")
    for bad in ("", "local:0", "localhost", "locals:2"):
        with pytest.raises(InputError):
            parse_scheduler(bad)


def test_task_ranges_and_manifest_slice(manifest):
    ranges = [(4, 6), (0, 2), (2, 4), (6, 8)]
    assert task_ranges(ranges, 3) == [[(0, 2), (2, 4), (4, 6)], [(6, 8)]]
    m = load_manifest(manifest)
    part = manifest_slice(m, [(2, 4)])
    assert len(part) == len(m)  # extract_rows checks the manifest against the store
    assert part.entries[3] == m.entries[3]
    with pytest.raises(IndexError):
        part.entries[0]


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match="cannot reach the Dask scheduler"):
        with dask_client("tcp://127.0.0.1:9", connect_timeout=1):
            pass


def test_mismatched_store_is_refused_before_any_work(tmp_path, manifest, reference):
    out = tmp_path / "s.zarr"
    shutil.copytree(reference.path, out)
    with pytest.raises(StoreConfigMismatch):
        # the scheduler is never contacted: the store is validated first
        extract_dask(manifest, out, _config(dtype="float16"), scheduler="tcp://127.0.0.1:9")


# ---------------------------------------------------------------- on a cluster
def test_local_cluster_equals_single_process(tmp_path, manifest, reference, cluster):
    summary = extract_dask(
        manifest, tmp_path / "d.zarr", _config(), scheduler=cluster.scheduler_address
    )
    assert (summary.n_done, summary.n_failed, summary.n_processed, summary.n_skipped) == (
        7,
        1,
        8,
        0,
    )
    assert summary.n_tasks == 4 and summary.n_workers == 2
    assert summary.audio_missing == 0 and summary.video_missing == 1
    assert [f.row for f in summary.failures] == [2] and "text.mp4" in summary.failures[0].path
    assert_same_store(reference, FeatureStore.open(tmp_path / "d.zarr"))


def test_local_n_starts_and_always_stops_its_cluster():
    with pytest.raises(RuntimeError, match="boom"):
        with dask_client("local:2") as client:
            assert len(client.scheduler_info()["workers"]) == 2
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2
            cluster = client.cluster
            raise RuntimeError("boom")
    assert cluster.status.name == "closed" and not cluster.workers


def _kill_during_first_write(marker: str):
    """A task hook: the first task to claim ``marker`` dies after writing data, before status."""

    def hook(ranges):
        import os

        from featstore.store import FeatureStore

        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        original = FeatureStore.write_rows

        def write_then_die(self, start, *, embeddings, missing=None, failed=None):
            for name, values in embeddings.items():  # the data lands ...
                self.array(name)[start : start + values.shape[0]] = values.astype(self.dtype)
            os._exit(1)  # ... the status never does: the worker process is gone

        FeatureStore.write_rows = write_then_die
        FeatureStore._original_write_rows = original

    return hook


def test_worker_killed_mid_write_then_rerun(tmp_path, manifest, reference, cluster):
    out = tmp_path / "k.zarr"
    cluster.scheduler.allowed_failures = 0  # give up on the task: the run ends incomplete
    with pytest.raises(DaskTasksIncomplete, match="Rerun the same command") as info:
        extract_dask(
            manifest,
            out,
            _config(),
            scheduler=cluster.scheduler_address,
            task_hook=_kill_during_first_write(str(tmp_path / "marker")),
        )
    assert "KilledWorker" in str(info.value)
    store = FeatureStore.open(out)
    status = store.status()
    pending = np.flatnonzero(status == STATUS_PENDING)
    # the killed worker's tasks (the one it died in, and one it may have had queued)
    # are exactly what is left pending; nothing else is lost
    lost = [r for s, e in info.value.ranges for r in range(s, e)]
    assert 1 <= len(info.value.ranges) <= 2 and pending.tolist() == lost
    finished = status != STATUS_PENDING
    ref_status = reference.status()
    assert np.array_equal(status[finished], ref_status[finished])
    for m in ("audio", "video"):  # every row marked finished holds the reference data
        assert np.array_equal(
            store.read(m, np.flatnonzero(finished)), reference.read(m, np.flatnonzero(finished))
        )

    cluster.scheduler.allowed_failures = 3
    cluster.wait_for_workers(2, timeout=60)
    again = extract_dask(manifest, out, _config(), scheduler=cluster.scheduler_address)
    assert again.n_processed == len(lost) and again.n_skipped == 8 - len(
        lost
    )  # only lost chunks are redone
    assert_same_store(reference, FeatureStore.open(out))


def test_worker_killed_task_retried_within_the_run(tmp_path, manifest, reference, cluster):
    out = tmp_path / "r.zarr"
    cluster.scheduler.allowed_failures = 3  # Dask's default: retry on another worker
    cluster.wait_for_workers(2, timeout=60)
    summary = extract_dask(
        manifest,
        out,
        _config(),
        scheduler=cluster.scheduler_address,
        task_hook=_kill_during_first_write(str(tmp_path / "marker")),
    )
    assert (tmp_path / "marker").exists()  # a worker really died
    assert summary.n_processed == 8 and summary.n_done == 7 and summary.n_failed == 1
    assert_same_store(reference, FeatureStore.open(out))
    rerun = extract_dask(manifest, out, _config(), scheduler=cluster.scheduler_address)
    assert rerun.n_processed == 0 and rerun.n_skipped == 8 and rerun.n_tasks == 0
    assert int((FeatureStore.open(out).status() == STATUS_DONE).sum()) == 7
