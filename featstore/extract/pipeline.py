"""``diccae extract``: manifest -> decoded clips -> embeddings in a feature store.

How the work is organised, and why:

* **Chunks are the unit of durability.**  Rows are processed in the store's
  chunk-aligned ranges; a range's rows are buffered until every clip in it is
  decoded and encoded, then written with :meth:`FeatureStore.write_rows` (data
  first, status last).  A SIGKILL at any moment leaves each chunk either finished
  or still pending, so rerunning the same command redoes only pending chunks and
  the store ends byte-for-byte the same as an uninterrupted run.  The store itself
  is laid out in a temporary directory and renamed into place, so a kill during
  creation leaves nothing half-made.
* **Batches never depend on history.**  Encoder batches are consecutive decodable
  clips of one chunk in row order, so a resumed run forms exactly the batches an
  uninterrupted run forms (batch composition can change floating-point results).
* **Decode overlaps encode.**  Decoding runs in ``workers`` spawned processes
  (torch and fork do not mix; spawned workers import only PyAV/NumPy) that keep a
  bounded window of clips in flight while the main process encodes on the device.
* **Broken inputs never stop a run.**  A clip that cannot be decoded, or that an
  encoder rejects, is recorded as failed with its path and reason; a crashed or
  hung decoder process is replaced and the clip that killed it is isolated and
  recorded.  A clip lacking one stream is stored with that modality flagged
  missing (its embedding row is zeros and must not be read as data).

:func:`extract_rows` (process a set of chunk-aligned ranges of an existing store)
is the unit of work; :func:`extract` opens/creates the store and calls it once,
and a distributed runner can call it once per task.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.backend import resolve_device
from featstore.common.lock import writer_lock
from featstore.common.workers import worker_pool
from featstore.errors import InputError, StoreError
from featstore.extract.decode import DecodedClip, decode_row
from featstore.extract.encoders import Encoder, get_encoder
from featstore.extract.manifest import Manifest, load_manifest
from featstore.progress import make_progress
from featstore.store.core import (
    COMPRESSIONS,
    STATUS_DONE,
    STATUS_PENDING,
    Failure,
    FeatureStore,
    ModalitySpec,
    remove_stale_temps,
    replace_store_dir,
    temp_store_path,
)

FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class ExtractConfig:
    """Everything that decides what ``diccae extract`` computes and how fast.

    ``audio_encoder``/``video_encoder`` may be None to extract one modality only.
    ``audio_config``/``video_config`` override encoder options (e.g. frame count).
    """

    audio_encoder: str | None = "kaldi-fbank"
    video_encoder: str | None = "frame-stats"
    audio_weights: str = "default"
    video_weights: str = "default"
    audio_config: dict[str, Any] = field(default_factory=dict)
    video_config: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    workers: int = 2
    device: str = "auto"
    chunk_rows: int = 1024
    dtype: str = "float16"
    compression: str = "zstd"
    overwrite: bool = False
    progress: bool = True
    label_csv: str | None = None
    manifest_kind: str = "auto"
    decode_timeout: float = 300.0  # seconds one clip may take before its worker is replaced
    encode_threads: int | None = (
        None  # CPU threads for encoding; None: the cores the decode workers leave
    )
    mp_context: str = "spawn"
    splits: tuple[
        str, ...
    ] = ()  # split names kept verbatim besides train/val/test (featstore.store.splits)

    def validate(self) -> None:
        if self.audio_encoder is None and self.video_encoder is None:
            raise InputError("at least one of --audio-encoder / --video-encoder is needed")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise InputError(
                f"--workers must be >= 0 (0 decodes in the main process), got {self.workers}"
            )
        if self.chunk_rows < 1:
            raise InputError(f"--chunk-rows must be >= 1, got {self.chunk_rows}")
        if self.dtype not in ("float16", "float32"):
            raise InputError(f"--dtype must be float16 or float32, got {self.dtype!r}")
        if self.compression not in COMPRESSIONS:
            raise InputError(
                f"--compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )


@dataclass
class ExtractSummary:
    store_path: str
    n_rows: int
    n_done: int  # rows done in the store (this run and earlier ones)
    n_failed: int  # rows failed in the store
    n_processed: int  # rows handled by this run
    n_skipped: int  # rows already finished before this run
    audio_missing: int
    video_missing: int
    failures: list[Failure]
    seconds: float
    clips_per_s: float
    device: str

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [asdict(f) for f in self.failures]
        return d


@dataclass
class RowsResult:
    n_processed: int = 0
    n_failed: int = 0
    failures: list[Failure] = field(default_factory=list)


# ================================================================== encoders
def build_encoders(config: ExtractConfig, device: str) -> dict[str, Encoder]:
    """The configured encoders by modality (weights resolved, on ``device``)."""
    out: dict[str, Encoder] = {}
    if config.audio_encoder:
        out["audio"] = get_encoder(
            config.audio_encoder, weights=config.audio_weights, device=device, **config.audio_config
        )
    if config.video_encoder:
        out["video"] = get_encoder(
            config.video_encoder, weights=config.video_weights, device=device, **config.video_config
        )
    for modality, enc in out.items():
        if enc.modality != modality:
            raise InputError(f"--{modality}-encoder {enc.name!r} is a {enc.modality} encoder")
    return out


def modality_specs(encoders: dict[str, Encoder]) -> dict[str, ModalitySpec]:
    return {m: e.spec() for m, e in encoders.items()}


# ============================================================ decode workers
class _DecodeFeed:
    """Yields ``(row, clip|None, reason|None)`` in row order, decoding ahead in workers.

    A bounded window of clips is in flight; if a worker dies (decoder crash) or a
    clip exceeds the timeout, the pool is replaced and the in-flight clips are
    retried one at a time so only the culprit is marked failed.
    """

    def __init__(
        self,
        manifest: Manifest,
        rows: Sequence[int],
        encoders: dict[str, Encoder],
        config: ExtractConfig,
    ):
        self.manifest = manifest
        self.rows = list(rows)
        self.video_spec = encoders["video"].video_spec if "video" in encoders else None
        self.audio_spec = encoders["audio"].audio_spec if "audio" in encoders else None
        self.workers = config.workers
        self.timeout = config.decode_timeout
        self.ctx = mp.get_context(config.mp_context) if config.workers else None
        self.window = max(2 * config.batch_size, 4 * max(config.workers, 1))
        self.pool: cf.ProcessPoolExecutor | None = None

    def _args(self, row: int) -> tuple:
        e = self.manifest.entries[row]
        return (
            row,
            str(e.path),
            None if e.audio_path is None else str(e.audio_path),
            e.id,
            self.video_spec,
            self.audio_spec,
        )

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return worker_pool(self.workers, self.ctx)  # workers die with this process

    def _kill_pool(self) -> None:
        if self.pool is None:
            return
        procs = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # our own worker processes, by handle
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(timeout=5)
        self.pool = None

    def _isolated(self, row: int) -> tuple[int, DecodedClip | None, str | None]:
        """Decode one clip alone in a fresh pool (after a crash), recording a crash as its failure."""
        self.pool = self._new_pool()
        fut = self.pool.submit(decode_row, *self._args(row))
        try:
            return fut.result(timeout=self.timeout)
        except cf.TimeoutError:
            return (
                row,
                None,
                f"decoding took longer than {self.timeout:.0f} s (decoder hung); skipped",
            )
        except cf.process.BrokenProcessPool:
            return row, None, "the decoder crashed on this file (worker process died)"
        finally:
            self._kill_pool()

    def __iter__(self) -> Iterator[tuple[int, DecodedClip | None, str | None]]:
        if not self.workers:
            for row in self.rows:
                yield decode_row(*self._args(row))
            return
        pending: deque[tuple[int, cf.Future]] = deque()
        todo = deque(self.rows)
        self.pool = self._new_pool()
        try:
            while todo or pending:
                while todo and len(pending) < self.window:
                    row = todo.popleft()
                    pending.append((row, self.pool.submit(decode_row, *self._args(row))))
                row, fut = pending.popleft()
                try:
                    yield fut.result(timeout=self.timeout)
                    continue
                except (cf.TimeoutError, cf.process.BrokenProcessPool):
                    pass
                # the pool is unusable: isolate every clip that was in flight
                retry = [row] + [r for r, _ in pending]
                pending.clear()
                self._kill_pool()
                for r in retry:
                    yield self._isolated(r)
                self.pool = self._new_pool()
        finally:
            self._kill_pool()


# ================================================================ encoding
class _ChunkBuffer:
    """Rows of one chunk: encodes full batches as they fill, writes the chunk when complete."""

    def __init__(
        self, start: int, stop: int, encoders: dict[str, Encoder], batch_size: int, dtype: str
    ):
        self.start, self.stop = start, stop
        n = stop - start
        self.encoders = encoders
        self.batch_size = batch_size
        self.dtype = dtype
        self.emb = {m: np.zeros((n, e.dim), np.float32) for m, e in encoders.items()}
        self.missing = {m: np.zeros(n, bool) for m in encoders}
        self.failed: dict[int, str] = {}
        self.queue: dict[str, list[tuple[int, np.ndarray]]] = {m: [] for m in encoders}
        self.seen = 0

    @property
    def complete(self) -> bool:
        return self.seen == self.stop - self.start

    def add(self, row: int, clip: DecodedClip | None, reason: str | None) -> None:
        self.seen += 1
        if clip is None:
            self.failed[row] = reason or "unknown decode error"
            return
        for m in self.encoders:
            data = clip.video if m == "video" else clip.audio
            if data is None:
                self.missing[m][row - self.start] = True
            else:
                self.queue[m].append((row, data))
                if len(self.queue[m]) >= self.batch_size:
                    self._flush(m)

    def _flush(self, m: str) -> None:
        batch, self.queue[m] = self.queue[m], []
        if not batch:
            return
        enc = self.encoders[m]
        try:
            out = enc.encode([d for _, d in batch])
            results = list(zip([r for r, _ in batch], out, strict=True))
        except Exception:  # one bad clip must not sink its batch: retry one by one
            results = []
            for row, data in batch:
                try:
                    results.append((row, enc.encode([data])[0]))
                except Exception as exc:
                    self.failed[row] = (
                        f"{m} encoder {enc.name} failed: {type(exc).__name__}: {str(exc)[:200]}"
                    )
        for row, vec in results:
            if row in self.failed:
                continue
            if not np.isfinite(vec).all():
                self.failed[row] = f"{m} encoder {enc.name} produced NaN/Inf"
            elif self.dtype == "float16" and np.abs(vec).max(initial=0) > FLOAT16_MAX:
                self.failed[row] = f"{m} embedding exceeds the float16 range; use --dtype float32"
            else:
                self.emb[m][row - self.start] = vec

    def write(self, store: FeatureStore) -> None:
        for m in self.encoders:
            self._flush(m)
        for row in self.failed:  # failed rows carry no data
            for m in self.encoders:
                self.emb[m][row - self.start] = 0
                self.missing[m][row - self.start] = False
        store.write_rows(
            self.start,
            embeddings=self.emb,
            missing=self.missing,
            failed=dict(sorted(self.failed.items())),
        )


def _progress(enabled: bool, total: int, description: str):
    """A rich progress bar with clips/s, ETA and failures so far (or a no-op)."""
    from rich.progress import TextColumn

    progress = make_progress(
        TextColumn("{task.fields[rate]} clips/s"),
        TextColumn("[red]{task.fields[failed]} failed"),
        disable=not enabled,
    )
    task = progress.add_task(description, total=total, rate="-", failed=0)
    return progress, task


def extract_rows(
    store: FeatureStore,
    manifest: Manifest,
    row_ranges: Sequence[tuple[int, int]],
    config: ExtractConfig,
    *,
    encoders: dict[str, Encoder] | None = None,
    progress: bool | None = None,
) -> RowsResult:
    """Decode, encode and write the chunk-aligned ``row_ranges`` of ``store``.

    Each range must be one whole chunk (as from ``store.shard_ranges()``); it is
    written in one go when all its clips are handled.  Safe to run on disjoint
    ranges in parallel processes.
    """
    c = store.chunk_rows
    for s, e in row_ranges:
        if s % c or (e % c and e != store.n_rows) or e - s > c or e <= s:
            raise InputError(f"row range ({s}, {e}) is not one chunk of {c} rows")
    if len(manifest) != store.n_rows:
        raise StoreError(
            f"{store.path} has {store.n_rows} rows but the manifest lists {len(manifest)} clips"
        )
    encoders = encoders or build_encoders(config, resolve_device(config.device))
    ranges = sorted(row_ranges)
    rows = [r for s, e in ranges for r in range(s, e)]
    result = RowsResult()
    with _encode_threads(config, encoders):
        return _extract_rows(store, manifest, ranges, rows, config, encoders, progress, result)


@contextlib.contextmanager
def _encode_threads(config: ExtractConfig, encoders: dict[str, Encoder]):
    """Choose torch's CPU threads so the slower stage gets the cores.

    Light, weightless front ends (fbank, frame statistics) encode far faster than
    clips decode: they get the cores the decode workers leave free, because idle
    OpenMP threads spin after each parallel region and would steal the decoders'
    CPU time.  Neural encoders on the CPU are the slow stage by a wide margin
    (r3d_18: ~1.5 clips/s against ~8 clips/s decoding on 2 cores), so they get every
    core and the decoders, blocked on a full queue most of the time, fill the gaps.
    """
    import torch

    on_cpu = all(not str(e.device).startswith("cuda") for e in encoders.values())
    cores = os.cpu_count() or 1
    neural = any(e.spec().weights != "none" for e in encoders.values())
    if config.encode_threads:
        wanted = config.encode_threads
    elif not on_cpu:
        wanted = None
    else:
        wanted = cores if neural else max(1, cores - config.workers)
    before = torch.get_num_threads()
    if wanted:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _extract_rows(store, manifest, ranges, rows, config, encoders, progress, result) -> RowsResult:
    bar, task = _progress(
        config.progress if progress is None else progress, len(rows), "extracting"
    )
    t0 = time.perf_counter()
    paths = store.paths
    ids = store.ids
    with bar:
        feed = iter(_DecodeFeed(manifest, rows, encoders, config))
        for start, stop in ranges:
            buf = _ChunkBuffer(start, stop, encoders, config.batch_size, store.dtype)
            while not buf.complete:
                row, clip, reason = next(feed)
                buf.add(row, clip, reason)
                result.n_processed += 1
                rate = result.n_processed / max(time.perf_counter() - t0, 1e-9)
                bar.update(
                    task, advance=1, rate=f"{rate:.1f}", failed=result.n_failed + len(buf.failed)
                )
            buf.write(store)
            result.n_failed += len(buf.failed)
            result.failures.extend(
                Failure(r, str(ids[r]), str(paths[r]), why) for r, why in sorted(buf.failed.items())
            )
            bar.update(task, failed=result.n_failed)
    return result


# ==================================================================== store
def _create_store_atomically(
    store_path: Path, manifest: Manifest, specs, config: ExtractConfig
) -> FeatureStore:
    """Build the new store under a hidden name, then swap it in (see replace_store_dir)."""
    tmp = temp_store_path(store_path, "creating")
    if tmp.exists():
        shutil.rmtree(tmp)
    FeatureStore.create(
        tmp,
        ids=manifest.ids,
        modalities=specs,
        labels=manifest.labels,
        splits=manifest.splits,
        paths=manifest.paths,
        class_names=manifest.class_names,
        chunk_rows=config.chunk_rows,
        dtype=config.dtype,
        compression=config.compression,
        manifest_sha256=manifest.sha256,
        source="extract",
        extra_attrs={
            "manifest": {
                "path": str(manifest.source),
                "kind": manifest.kind,
                "notes": manifest.notes,
            },
            "extract": {"batch_size": config.batch_size, "device": config.device},
        },
    )
    try:
        replace_store_dir(tmp, store_path)  # --overwrite never deletes a non-store
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureStore.open(store_path, mode="r+")


def open_or_create_store(
    store_path: str | Path, manifest: Manifest, encoders: dict[str, Encoder], config: ExtractConfig
) -> FeatureStore:
    """The store to extract into: a fresh one, or the existing one if its config matches."""
    store_path = Path(store_path)
    specs = modality_specs(encoders)
    remove_stale_temps(store_path)  # left by a run killed while creating or replacing
    empty_dir = store_path.is_dir() and not any(
        store_path.iterdir()
    )  # an empty folder is a fine place
    if store_path.exists() and not empty_dir and not config.overwrite:
        store = FeatureStore.open(store_path, mode="r+")
        store.check_compatible(
            specs,
            manifest_sha256=manifest.sha256,
            dtype=config.dtype,
            chunk_rows=config.chunk_rows,
            compression=config.compression,
        )
        return store
    return _create_store_atomically(store_path, manifest, specs, config)


def pending_ranges(store: FeatureStore) -> list[tuple[int, int]]:
    """Chunk ranges that still have pending rows (finished chunks are skipped)."""
    status = store.status()
    return [(s, e) for s, e in store.shard_ranges() if (status[s:e] == STATUS_PENDING).any()]


def extract(
    manifest_path: str | Path, store_path: str | Path, config: ExtractConfig | None = None
) -> ExtractSummary:
    """Extract embeddings for every clip of a manifest into a store (resumable).

    Holds the store's writer lock (featstore.common.lock) throughout: a second writer of the
    same store gets :class:`~featstore.errors.StoreLocked` naming this run's pid.
    """
    with writer_lock(store_path):
        return _extract(manifest_path, store_path, config)


def _extract(
    manifest_path: str | Path, store_path: str | Path, config: ExtractConfig | None
) -> ExtractSummary:
    config = config or ExtractConfig()
    config.validate()
    t0 = time.perf_counter()
    manifest = load_manifest(
        manifest_path, label_csv=config.label_csv, kind=config.manifest_kind, splits=config.splits
    )
    device = resolve_device(config.device)
    encoders = build_encoders(config, device)
    store = open_or_create_store(store_path, manifest, encoders, config)
    todo = pending_ranges(store)
    n_todo = sum(e - s for s, e in todo)
    result = extract_rows(store, manifest, todo, config, encoders=encoders)
    counts = store.counts()
    seconds = time.perf_counter() - t0
    return ExtractSummary(
        store_path=str(store.path),
        n_rows=store.n_rows,
        n_done=counts["done"],
        n_failed=counts["failed"],
        n_processed=result.n_processed,
        n_skipped=store.n_rows - n_todo,
        audio_missing=int((store.missing("audio") & (store.status() == STATUS_DONE)).sum())
        if "audio" in encoders
        else 0,
        video_missing=int((store.missing("video") & (store.status() == STATUS_DONE)).sum())
        if "video" in encoders
        else 0,
        failures=store.failures(),
        seconds=seconds,
        clips_per_s=result.n_processed / seconds if seconds > 0 else 0.0,
        device=device,
    )
