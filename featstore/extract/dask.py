"""``diccae extract --dask``: the same extraction, spread over the workers of a Dask cluster.

Why it needs almost no new machinery:

* **Chunks are independent.**  Every store array is chunked by the same rows, and a
  task owns whole chunks: it decodes, encodes and writes its chunks' data and status
  rows itself (:func:`featstore.extract.pipeline.extract_rows`, the single-process unit of
  work).  Workers writing disjoint Zarr chunks need no locks and no coordinator;
  the client only creates/validates the store once and hands out row ranges.
* **Same durability, same resume.**  A chunk is written in one go, data before
  status.  A worker that dies mid-task leaves its chunk pending; Dask retries the
  task elsewhere (``distributed.scheduler.allowed-failures``), and if it gives up,
  rerunning the command redoes only the pending chunks, exactly as after a killed
  single-process run.  Rewriting a chunk replaces it whole, so a retried task never
  duplicates rows.
* **Same results.**  Encoder batches are formed inside one chunk in row order
  (never across chunks), so a task computes exactly the batches the single-process
  run computes, and deterministic encoders give a byte-identical store.
* **Devices.**  A worker uses the device it is given: ``--device auto`` on a worker
  started with ``CUDA_VISIBLE_DEVICES=3`` (as dask-cuda's ``LocalCUDACluster`` and
  ``dask cuda worker`` do, one GPU per worker) encodes on that GPU.

Decode processes inside a worker: Dask worker processes are daemonic by default
and daemonic processes may not start children, so a task then decodes in its own
process (``workers=0``); the parallelism comes from the Dask workers.  Start the
workers with ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` to keep ``--workers`` decode
processes per worker (what a GPU worker wants to keep its GPU busy).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featstore.common.backend import resolve_device
from featstore.common.dask_runtime import dask_client, n_workers
from featstore.common.lock import writer_lock
from featstore.errors import DaskTasksIncomplete, DiccaeError, InputError
from featstore.extract.manifest import Manifest, ManifestEntry, load_manifest
from featstore.extract.pipeline import (
    ExtractConfig,
    ExtractSummary,
    RowsResult,
    build_encoders,
    extract_rows,
    open_or_create_store,
    pending_ranges,
    rate_info,
)
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import FeatureStore
from featstore.store.schema import STATUS_DONE

TaskHook = Callable[[list[tuple[int, int]]], None]


@dataclass
class TaskReport:
    """What one task sends back: its rows' outcome and where it ran."""

    ranges: list[tuple[int, int]]
    result: RowsResult
    worker: str
    device: str
    decode_workers: int
    seconds: float


@dataclass
class DaskExtractSummary(ExtractSummary):
    """:class:`ExtractSummary` plus how the work was spread."""

    n_tasks: int = 0
    n_workers: int = 0
    scheduler: str = ""
    workers_used: dict[str, int] = field(default_factory=dict)  # worker -> rows processed


# ------------------------------------------------------------------ manifest slices
class _RowEntries(Sequence):
    """A manifest's entries for some rows only, indexed by absolute row.

    A task needs the media paths of its own rows, not the whole manifest (millions
    of entries), so only those travel to the worker; ``len`` stays the manifest's.
    """

    def __init__(self, n_rows: int, entries: dict[int, ManifestEntry]):
        self._n = n_rows
        self._entries = entries

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row: int) -> ManifestEntry:  # type: ignore[override]
        try:
            return self._entries[row]
        except KeyError:
            raise IndexError(f"row {row} was not sent to this task") from None


def manifest_slice(manifest: Manifest, ranges: Sequence[tuple[int, int]]) -> Manifest:
    entries = {r: manifest.entries[r] for s, e in ranges for r in range(s, e)}
    return dataclasses.replace(manifest, entries=_RowEntries(len(manifest), entries), notes=[])


# ------------------------------------------------------------------ worker side
_ENCODER_CACHE: dict[str, Any] = {}


def worker_encoders(config: ExtractConfig, device: str) -> dict[str, Any]:
    """Encoders built once per worker process (loading a 3D CNN per task would dominate)."""
    key = json.dumps(
        [
            config.audio_encoder,
            config.video_encoder,
            config.audio_weights,
            config.video_weights,
            config.audio_config,
            config.video_config,
            device,
        ],
        sort_keys=True,
        default=str,
    )
    if key not in _ENCODER_CACHE:
        _ENCODER_CACHE.clear()
        _ENCODER_CACHE[key] = build_encoders(config, device)
    return _ENCODER_CACHE[key]


def extract_task(
    store_path: str,
    manifest: Manifest,
    ranges: list[tuple[int, int]],
    config: ExtractConfig,
    hook: TaskHook | None = None,
) -> TaskReport:
    """One Dask task: extract whole chunks ``ranges`` into the store at ``store_path``."""
    t0 = time.perf_counter()
    if hook is not None:
        hook(ranges)
    decode_workers = config.workers
    if decode_workers and mp.current_process().daemon:
        decode_workers = 0  # daemonic worker processes cannot have children (see module doc)
    cfg = dataclasses.replace(config, workers=decode_workers, overwrite=False)
    device = resolve_device(cfg.device)
    store = FeatureStore.open(store_path, mode="r+")
    result = extract_rows(store, manifest, ranges, cfg, encoders=worker_encoders(cfg, device))
    try:
        from distributed import get_worker

        worker = get_worker().address
    except Exception:  # run outside a worker (tests, debugging)
        worker = f"{socket.gethostname()}:{os.getpid()}"
    return TaskReport(
        list(ranges), result, worker, device, decode_workers, time.perf_counter() - t0
    )


# ------------------------------------------------------------------ client side
def task_ranges(
    ranges: Sequence[tuple[int, int]], chunks_per_task: int = 1
) -> list[list[tuple[int, int]]]:
    """Group chunk ranges into tasks of ``chunks_per_task`` chunks (in row order)."""
    if chunks_per_task < 1:
        raise ValueError("chunks_per_task must be >= 1")
    ranges = sorted(ranges)
    return [list(ranges[i : i + chunks_per_task]) for i in range(0, len(ranges), chunks_per_task)]


def _rows_label(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{s}-{e - 1}" for s, e in ranges)


def extract_dask(
    manifest_path: str | Path,
    store_path: str | Path,
    config: ExtractConfig | None = None,
    *,
    scheduler: str | None = None,
    chunks_per_task: int = 1,
    task_hook: TaskHook | None = None,
    client: Any = None,
    progress: ProgressFn | None = None,
) -> DaskExtractSummary:
    """Extract a manifest into a store with one Dask task per chunk (resumable).

    ``scheduler`` is a Dask scheduler address (``tcp://host:8786``) or ``local:N``
    (a throw-away local cluster of N single-threaded worker processes).  The store
    is created or validated once here, exactly as :func:`featstore.extract.pipeline.extract`
    does; finished chunks are skipped.  Clips that fail are recorded and reported in
    the summary, as in the single-process path.  If some tasks cannot be completed
    (e.g. their worker died more often than the scheduler allows), every other task
    still finishes and :class:`DaskTasksIncomplete` names the rows left pending;
    rerunning the same call resumes them.

    ``task_hook(ranges)`` runs on the worker before each task (per-task setup,
    logging, fault injection in tests); it must be picklable.  ``client`` reuses an
    existing ``distributed.Client`` instead of ``scheduler``.  Holds the store's writer
    lock (featstore.common.lock) in this process for the whole run.  ``progress``
    receives :class:`~featstore.progress.ProgressUpdate` values as tasks finish.
    """
    with writer_lock(store_path):
        return _extract_dask(
            manifest_path,
            store_path,
            config,
            scheduler=scheduler,
            chunks_per_task=chunks_per_task,
            task_hook=task_hook,
            client=client,
            progress=progress,
        )


def _extract_dask(
    manifest_path: str | Path,
    store_path: str | Path,
    config: ExtractConfig | None,
    *,
    scheduler: str | None,
    chunks_per_task: int,
    task_hook: TaskHook | None,
    client: Any,
    progress: ProgressFn | None,
) -> DaskExtractSummary:
    config = config or ExtractConfig()
    config.validate()
    if client is None and not scheduler:
        raise InputError("extract_dask needs scheduler= (tcp://host:8786 or local:N) or client=")
    address = scheduler or ""
    t0 = time.perf_counter()
    manifest = load_manifest(
        manifest_path, label_csv=config.label_csv, kind=config.manifest_kind, splits=config.splits
    )
    # encoders here only describe the modalities (name, dim, weights identity) for
    # creating/validating the store; the work happens on the workers' devices
    specs_encoders = build_encoders(config, "cpu")
    store = open_or_create_store(store_path, manifest, specs_encoders, config)
    del specs_encoders
    todo = pending_ranges(store)
    n_todo = sum(e - s for s, e in todo)
    tasks = task_ranges(todo, chunks_per_task)

    if client is not None:
        reports, problems, workers = _run_tasks(
            client, store, manifest, tasks, config, task_hook, progress
        )
    else:
        with dask_client(address) as own:
            reports, problems, workers = _run_tasks(
                own, store, manifest, tasks, config, task_hook, progress
            )

    if problems:
        lines = [f"rows {_rows_label(r)}: {why}" for r, why in problems[:20]]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        counts = store.counts()
        raise DaskTasksIncomplete(
            f"{len(problems)} of {len(tasks)} Dask tasks did not finish; their rows stay pending "
            f"({counts['done']} done, {counts['failed']} failed, {counts['pending']} pending in {store.path}). "
            "Rerun the same command to resume:\n  " + "\n  ".join(lines) + more,
            ranges=[r for ranges, _ in problems for r in ranges],
        )
    status = store.status()
    n_processed = sum(r.result.n_processed for r in reports)
    seconds = time.perf_counter() - t0
    used: dict[str, int] = {}
    for r in reports:
        used[r.worker] = used.get(r.worker, 0) + r.result.n_processed
    devices = sorted({r.device for r in reports}) or [resolve_device(config.device)]
    counts = store.counts()
    done = status == STATUS_DONE
    return DaskExtractSummary(
        store_path=str(store.path),
        n_rows=store.n_rows,
        n_done=counts["done"],
        n_failed=counts["failed"],
        n_processed=n_processed,
        n_skipped=store.n_rows - n_todo,
        audio_missing=int((store.missing("audio") & done).sum()) if config.audio_encoder else 0,
        video_missing=int((store.missing("video") & done).sum()) if config.video_encoder else 0,
        failures=store.failures(),
        seconds=seconds,
        clips_per_s=n_processed / seconds if seconds > 0 else 0.0,
        device=",".join(devices),
        n_tasks=len(tasks),
        n_workers=workers,
        scheduler=address
        if client is None
        else str(getattr(getattr(client, "scheduler", None), "address", "client")),
        workers_used=used,
    )


def _run_tasks(
    client: Any,
    store: FeatureStore,
    manifest: Manifest,
    tasks: list[list[tuple[int, int]]],
    config: ExtractConfig,
    hook: TaskHook | None,
    progress: ProgressFn | None,
) -> tuple[list[TaskReport], list[tuple[list[tuple[int, int]], str]], int]:
    """Submit every task, report progress as they finish, collect reports and problems."""
    from distributed import as_completed

    reports: list[TaskReport] = []
    problems: list[tuple[list[tuple[int, int]], str]] = []
    workers = n_workers(client)
    if not tasks:
        return reports, problems, workers
    futures = {}
    store_path = str(Path(store.path).resolve())
    for ranges in tasks:
        fut = client.submit(
            extract_task,
            store_path,
            manifest_slice(manifest, ranges),
            ranges,
            config,
            hook,
            pure=False,
            key=f"diccae-extract-{ranges[0][0]}-{ranges[-1][1]}-{os.urandom(4).hex()}",
        )
        futures[fut] = ranges
    total = sum(e - s for r in tasks for s, e in r)
    bar = ProgressTask(
        progress,
        "clips",
        total=total,
        description=f"extracting on {workers} Dask worker{'s' if workers != 1 else ''}",
    )
    t0 = time.perf_counter()
    done_rows = failed = 0
    with bar:
        for fut in as_completed(list(futures)):
            ranges = futures[fut]
            try:
                report = fut.result()
            except DiccaeError:
                # a configuration problem (weights missing on the workers, store
                # changed...) fails every task alike: stop instead of repeating it
                for other in futures:
                    other.cancel()
                raise
            except Exception as exc:  # KilledWorker, worker-side crash, ...
                problems.append((ranges, f"{type(exc).__name__}: {str(exc)[:300]}"))
                continue
            reports.append(report)
            done_rows += report.result.n_processed
            failed += report.result.n_failed
            rate = done_rows / max(time.perf_counter() - t0, 1e-9)
            bar.advance(report.result.n_processed, info=rate_info(rate, failed))
    return reports, problems, workers
