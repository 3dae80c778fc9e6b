"""Bring precomputed embeddings in from HDF5: ``diccae store import-h5``.

Many audio-visual data sets ship features instead of media: AVE, for instance, has
``audio_feature.h5`` and ``visual_feature.h5``, each holding one dataset of shape
(N, T, D) with one vector per one-second segment.  :func:`import_h5` turns such files
into a regular store (time axes mean-pooled) so clustering, confusion analysis and
training work on them unchanged.  It streams chunk by chunk, so the files may be
larger than memory, and builds the store under a hidden name that is swapped in at
the end (featstore.store.swap): a failed or interrupted import leaves nothing
half-made and never destroys an existing store.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featstore.common.lock import writer_lock
from featstore.errors import InputError
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import FeatureStore
from featstore.store.h5source import (
    EXPORT_FORMAT,
    SHOW_ROWS,
    H5Files,
    H5Source,
    as_text,
    combined_sha256,
    labels_block,
    parse_source,
    pooled_rows,
    rows_per_s,
)
from featstore.store.schema import MODALITIES, STATUS_DONE, STATUS_NAMES, ModalitySpec
from featstore.store.swap import check_replaceable, swap_in

ON_NONFINITE = ("fail", "skip")


def import_h5(
    h5_path: str | Path | None,
    store_path: str | Path,
    *,
    audio_dataset: str,
    video_dataset: str,
    audio_file: str | Path | None = None,
    video_file: str | Path | None = None,
    labels_dataset: str | None = None,
    split_dataset: str | None = None,
    ids_dataset: str | None = None,
    class_names_dataset: str | None = None,
    dtype: str | None = None,
    chunk_rows: int = 1024,
    compression: str = "zstd",
    on_nonfinite: str = "fail",
    pretrained: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> FeatureStore:
    """Create a store at ``store_path`` from embeddings kept in HDF5 file(s).

    ``audio_dataset``/``video_dataset`` name (N, D) arrays, or (N, T, D) arrays whose
    time axis is mean-pooled.  They are looked up in ``audio_file``/``video_file`` when
    given (AVE keeps them in separate files), else in ``h5_path``; any dataset argument
    may instead be ``FILE:DATASET``.  Labels may be (N,) integers, (N, C) one-hot or
    (N, T, C) per-segment one-hot (argmax of the time sum; all-zero rows get -1).

    ``dtype`` defaults to the source's when both modalities are float16 or float32,
    else float32.  Rows with NaN/Inf make the import fail with the dataset and first
    rows named (``on_nonfinite="fail"``, the default, nothing is written) or are
    marked failed with that reason (``"skip"``).  Every modality is recorded with
    encoder ``imported:<file>:<dataset>``, weights ``unknown`` and ``pretrained`` as
    given; ``manifest_sha256`` is the sha256 of the file (or of the files' hashes).

    Files written by :func:`export_h5` also restore missing-stream flags, the status of
    rows that were not done, and the class names.  Holds the store's writer lock
    (featstore.common.lock) from the first check to the final swap.  ``progress``
    receives :class:`~featstore.progress.ProgressUpdate` values (rows imported, rows/s).
    """
    with writer_lock(store_path):
        return _import_h5(
            h5_path,
            store_path,
            audio_dataset=audio_dataset,
            video_dataset=video_dataset,
            audio_file=audio_file,
            video_file=video_file,
            labels_dataset=labels_dataset,
            split_dataset=split_dataset,
            ids_dataset=ids_dataset,
            class_names_dataset=class_names_dataset,
            dtype=dtype,
            chunk_rows=chunk_rows,
            compression=compression,
            on_nonfinite=on_nonfinite,
            pretrained=pretrained,
            overwrite=overwrite,
            progress=progress,
        )


def _import_h5(
    h5_path,
    store_path,
    *,
    audio_dataset,
    video_dataset,
    audio_file,
    video_file,
    labels_dataset,
    split_dataset,
    ids_dataset,
    class_names_dataset,
    dtype,
    chunk_rows,
    compression,
    on_nonfinite,
    pretrained,
    overwrite,
    progress,
) -> FeatureStore:
    store_path = Path(store_path)
    if on_nonfinite not in ON_NONFINITE:
        raise InputError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}")
    if dtype is not None and dtype not in ("float16", "float32"):
        raise InputError(f"dtype must be float16 or float32, got {dtype!r}")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    check_replaceable(store_path, overwrite=overwrite)

    sources = {
        "audio": parse_source(audio_dataset, audio_file or h5_path, what="audio"),
        "video": parse_source(video_dataset, video_file or h5_path, what="video"),
    }
    extra = {
        k: parse_source(v, h5_path, what=k)
        for k, v in (
            ("labels", labels_dataset),
            ("split", split_dataset),
            ("ids", ids_dataset),
            ("class_names", class_names_dataset),
        )
        if v is not None
    }
    with ExitStack() as stack:
        files = H5Files(stack)
        dsets = {m: files.dataset(src) for m, src in sources.items()}
        for m, d in dsets.items():
            if d.ndim < 2:
                raise InputError(
                    f"{sources[m]}: {m} embeddings must be (N, D) or (N, T, ..., D), got shape {d.shape}"
                )
            if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
                raise InputError(
                    f"{sources[m]}: {m} embeddings must be numeric, got dtype {d.dtype}"
                )
            if 0 in d.shape[1:]:
                raise InputError(
                    f"{sources[m]}: {m} embeddings have shape {d.shape}: no feature columns to import"
                )
        others = {k: files.dataset(src) for k, src in extra.items()}
        n = dsets["audio"].shape[0]
        row_sets = {str(sources[m]): d.shape[0] for m, d in dsets.items()}
        row_sets.update(
            {str(extra[k]): d.shape[0] for k, d in others.items() if k != "class_names"}
        )
        if len(set(row_sets.values())) != 1:
            listing = ", ".join(f"{name} has {rows}" for name, rows in row_sets.items())
            raise InputError(f"datasets disagree on the number of rows: {listing}")
        for k in ("split", "ids"):
            if k in others and others[k].ndim != 1:
                raise InputError(
                    f"{extra[k]}: {k} must be one value per row (N,), got shape {others[k].shape}"
                )
        if "labels" in others and others["labels"].ndim not in (1, 2, 3):
            raise InputError(
                f"{extra['labels']}: labels must be (N,), (N, C) or (N, T, C), got shape {others['labels'].shape}"
            )

        if dtype is None:
            kinds = {str(d.dtype) for d in dsets.values()}
            dtype = (
                kinds.pop()
                if len(kinds) == 1 and next(iter(kinds)) in ("float16", "float32")
                else "float32"
            )

        main_file = sources["audio"].file if h5_path is None else Path(h5_path)
        exported = files.dataset(sources["audio"]).file.attrs.get("format") == EXPORT_FORMAT

        labels = None
        if "labels" in others:
            labels = np.empty(n, np.int64)
            for s in range(0, n, chunk_rows):
                labels[s : s + chunk_rows] = labels_block(
                    np.asarray(others["labels"][s : s + chunk_rows]), extra["labels"], s
                )
            if labels.min(initial=0) < -1 or labels.max(initial=0) > np.iinfo(np.int32).max:
                bad = np.flatnonzero((labels < -1) | (labels > np.iinfo(np.int32).max))[:SHOW_ROWS]
                raise InputError(
                    f"{extra['labels']}: labels must be >= -1 (-1 = unknown) and fit int32; rows {bad.tolist()} do not"
                )
        splits = as_text(np.asarray(others["split"][:])) if "split" in others else None
        ids = (
            as_text(np.asarray(others["ids"][:]))
            if "ids" in others
            else [f"{i:0{len(str(max(n - 1, 0)))}d}" for i in range(n)]
        )
        if "class_names" in others:
            class_names = as_text(np.asarray(others["class_names"][:]).reshape(-1))
        elif exported:
            class_names = [
                str(c)
                for c in json.loads(
                    files.dataset(sources["audio"]).file.attrs.get("class_names", "[]")
                )
            ]
        else:
            class_names = []

        specs = {}
        for m, d in dsets.items():
            config: dict[str, Any] = {
                "file": sources[m].file.name,
                "dataset": sources[m].dataset,
                "source_shape": list(d.shape),
                "source_dtype": str(d.dtype),
                "time_pooling": "mean" if d.ndim >= 3 else "none",
            }
            if exported:
                original = json.loads(d.file.attrs.get("modalities", "{}")).get(m)
                if original:
                    config["original"] = original
            specs[m] = ModalitySpec(
                encoder=f"imported:{sources[m].file.name}:{sources[m].dataset}",
                dim=int(d.shape[-1]),
                weights="unknown",
                pretrained=bool(pretrained),
                config=config,
            )

        all_files = [src.file for src in [*sources.values(), *extra.values()]]
        with swap_in(store_path, "importing") as tmp:
            store = FeatureStore.create(
                tmp,
                ids=ids,
                modalities=specs,
                labels=labels,
                splits=splits,
                class_names=class_names,
                chunk_rows=chunk_rows,
                dtype=dtype,
                compression=compression,
                manifest_sha256=combined_sha256(all_files),
                source="import-h5",
                extra_attrs={
                    "import": {
                        "main_file": str(main_file),
                        "datasets": {k: str(v) for k, v in {**sources, **extra}.items()},
                        "on_nonfinite": on_nonfinite,
                    }
                },
            )
            restore = {}
            if exported:
                f = files.dataset(sources["audio"]).file
                restore = {
                    k: f[k]
                    for k in ("audio_missing", "video_missing", "status", "error")
                    if k in f and f[k].shape == (n,)
                }
            _copy_rows(store, dsets, sources, restore, on_nonfinite, progress)
    return FeatureStore.open(store_path, mode="r+")


def _copy_rows(
    store: FeatureStore,
    dsets: dict[str, h5py.Dataset],
    sources: dict[str, H5Source],
    restore: dict[str, h5py.Dataset],
    on_nonfinite: str,
    progress: ProgressFn | None,
) -> None:
    """Stream the embeddings in, one store chunk at a time."""
    bar = ProgressTask(progress, "rows", total=store.n_rows, description="importing")
    t0 = time.perf_counter()
    with bar:
        for s, e in store.shard_ranges():
            emb: dict[str, np.ndarray] = {}
            failed: dict[int, str] = {}
            missing: dict[str, np.ndarray] = {}
            for m, d in dsets.items():
                x = pooled_rows(d, s, e)
                bad = ~np.isfinite(x).all(axis=1)
                if bad.any():
                    rows = (np.flatnonzero(bad) + s).tolist()
                    if on_nonfinite == "fail":
                        raise InputError(
                            f"{sources[m]}: NaN/Inf in {m} embeddings at rows {rows[:SHOW_ROWS]}"
                            f"{' ...' if len(rows) > SHOW_ROWS else ''} (use --on-nonfinite skip to import the "
                            "other rows and mark these failed)"
                        )
                    for r in rows:
                        failed[r] = (
                            failed.get(r, "") + "; " if r in failed else ""
                        ) + f"non-finite values in {m} ({sources[m]})"
                    x[bad] = 0
                emb[m] = x
                if store.dtype == "float16":
                    big = np.abs(x) > np.finfo(np.float16).max
                    if big.any():
                        rows = (np.flatnonzero(big.any(axis=1)) + s).tolist()
                        raise InputError(
                            f"{sources[m]}: {m} values at rows {rows[:SHOW_ROWS]} overflow float16; import with --dtype float32"
                        )
            for m in MODALITIES:
                if f"{m}_missing" in restore:
                    missing[m] = np.asarray(restore[f"{m}_missing"][s:e], dtype=bool)
            if "status" in restore:
                st = np.asarray(restore["status"][s:e])
                err = (
                    as_text(np.asarray(restore["error"][s:e]))
                    if "error" in restore
                    else [""] * (e - s)
                )
                for i in np.flatnonzero(st != STATUS_DONE):
                    name = STATUS_NAMES.get(int(st[i]), str(int(st[i])))
                    reason = f"{name} in the exported store" + (f": {err[i]}" if err[i] else "")
                    failed.setdefault(int(s + i), reason)
            store.write_rows(s, embeddings=emb, missing=missing or None, failed=failed or None)
            done = bar.completed + (e - s)
            bar.advance(e - s, info=rows_per_s(done, time.perf_counter() - t0))
