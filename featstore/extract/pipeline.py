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
and a distributed runner (:mod:`featstore.extract.dask`) calls it once per task.
The stages live in ``feed`` (decoding ahead in workers), ``encode`` (batches of one
chunk) and ``featstore.store.swap`` (building a fresh store under a hidden name).
Progress is reported as :class:`~featstore.progress.ProgressUpdate` values.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from featstore.common.backend import resolve_device
from featstore.common.lock import writer_lock
from featstore.errors import InputError, StoreError
from featstore.extract.config import ExtractConfig
from featstore.extract.encode import ChunkBuffer, encode_threads
from featstore.extract.encoders import Encoder, get_encoder
from featstore.extract.feed import DecodeFeed
from featstore.extract.manifest import Manifest, load_manifest
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import FeatureStore
from featstore.store.schema import STATUS_DONE, STATUS_PENDING, Failure, ModalitySpec
from featstore.store.swap import is_empty_dir, remove_stale_temps, swap_in

__all__ = [
    "ExtractConfig",
    "ExtractSummary",
    "RowsResult",
    "build_encoders",
    "extract",
    "extract_rows",
    "modality_specs",
    "open_or_create_store",
    "pending_ranges",
    "rate_info",
]


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


# ================================================================= chunks
def extract_rows(
    store: FeatureStore,
    manifest: Manifest,
    row_ranges: Sequence[tuple[int, int]],
    config: ExtractConfig,
    *,
    encoders: dict[str, Encoder] | None = None,
    progress: ProgressFn | None = None,
) -> RowsResult:
    """Decode, encode and write the chunk-aligned ``row_ranges`` of ``store``.

    Each range must be one whole chunk (as from ``store.shard_ranges()``); it is
    written in one go when all its clips are handled.  Safe to run on disjoint
    ranges in parallel processes.  ``progress`` receives one update per clip (clips/s
    and failures so far in ``info``).
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
    with encode_threads(config, encoders):
        return _extract_rows(store, manifest, ranges, rows, config, encoders, progress, result)


def _extract_rows(
    store: FeatureStore,
    manifest: Manifest,
    ranges: list[tuple[int, int]],
    rows: list[int],
    config: ExtractConfig,
    encoders: dict[str, Encoder],
    progress: ProgressFn | None,
    result: RowsResult,
) -> RowsResult:
    bar = ProgressTask(progress, "clips", total=len(rows), description="extracting")
    t0 = time.perf_counter()
    paths = store.paths
    ids = store.ids
    with bar:
        feed = iter(DecodeFeed(manifest, rows, encoders, config))
        for start, stop in ranges:
            buf = ChunkBuffer(start, stop, encoders, config.batch_size, store.dtype)
            while not buf.complete:
                row, clip, reason = next(feed)
                buf.add(row, clip, reason)
                result.n_processed += 1
                if progress is not None:
                    rate = result.n_processed / max(time.perf_counter() - t0, 1e-9)
                    bar.advance(1, info=rate_info(rate, result.n_failed + len(buf.failed)))
            buf.write(store)
            result.n_failed += len(buf.failed)
            if progress is not None:  # encoder failures found when the chunk was flushed
                rate = result.n_processed / max(time.perf_counter() - t0, 1e-9)
                bar.update(info=rate_info(rate, result.n_failed))
            result.failures.extend(
                Failure(r, str(ids[r]), str(paths[r]), why) for r, why in sorted(buf.failed.items())
            )
    return result


def rate_info(clips_per_s: float, failed: int) -> str:
    """The text beside an extraction bar: throughput and failures so far."""
    return f"{clips_per_s:.1f} clips/s, {failed} failed"


# ==================================================================== store
def _create_store(
    store_path: Path, manifest: Manifest, specs: dict[str, ModalitySpec], config: ExtractConfig
) -> FeatureStore:
    """Build the new store under a hidden name, then swap it in (featstore.store.swap)."""
    with swap_in(store_path, "creating") as tmp:  # --overwrite never deletes a non-store
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
    return FeatureStore.open(store_path, mode="r+")


def open_or_create_store(
    store_path: str | Path, manifest: Manifest, encoders: dict[str, Encoder], config: ExtractConfig
) -> FeatureStore:
    """The store to extract into: a fresh one, or the existing one if its config matches."""
    store_path = Path(store_path)
    specs = modality_specs(encoders)
    remove_stale_temps(store_path)  # left by a run killed while creating or replacing
    # an empty folder is a fine place
    if store_path.exists() and not is_empty_dir(store_path) and not config.overwrite:
        store = FeatureStore.open(store_path, mode="r+")
        store.check_compatible(
            specs,
            manifest_sha256=manifest.sha256,
            dtype=config.dtype,
            chunk_rows=config.chunk_rows,
            compression=config.compression,
        )
        return store
    return _create_store(store_path, manifest, specs, config)


def pending_ranges(store: FeatureStore) -> list[tuple[int, int]]:
    """Chunk ranges that still have pending rows (finished chunks are skipped)."""
    status = store.status()
    return [(s, e) for s, e in store.shard_ranges() if (status[s:e] == STATUS_PENDING).any()]


def extract(
    manifest_path: str | Path,
    store_path: str | Path,
    config: ExtractConfig | None = None,
    *,
    progress: ProgressFn | None = None,
) -> ExtractSummary:
    """Extract embeddings for every clip of a manifest into a store (resumable).

    Holds the store's writer lock (featstore.common.lock) throughout: a second writer of the
    same store gets :class:`~featstore.errors.StoreLocked` naming this run's pid.
    ``progress`` receives :class:`~featstore.progress.ProgressUpdate` values (clips
    done, clips/s and failures so far).  Failed clips do not raise: they are in the
    summary (the CLI turns them into exit status 6).
    """
    with writer_lock(store_path):
        return _extract(manifest_path, store_path, config, progress)


def _extract(
    manifest_path: str | Path,
    store_path: str | Path,
    config: ExtractConfig | None,
    progress: ProgressFn | None,
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
    result = extract_rows(store, manifest, todo, config, encoders=encoders, progress=progress)
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
