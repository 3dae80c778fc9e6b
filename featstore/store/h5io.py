"""Bring precomputed embeddings in from HDF5, and write a store out to HDF5.

Many audio-visual data sets ship features instead of media: AVE, for instance, has
``audio_feature.h5`` and ``visual_feature.h5``, each holding one dataset of shape
(N, T, D) with one vector per one-second segment.  :func:`import_h5` turns such files
into a regular store (time axes mean-pooled) so clustering, confusion analysis and
training work on them unchanged; :func:`export_h5` goes the other way for tools that
only read HDF5.

Dataset names are given as ``DATASET`` (looked up in the main file, or in the
modality's own file) or ``FILE:DATASET`` (any file).  Both directions stream chunk by
chunk, so the files may be larger than memory, and both write to a temporary sibling
first and rename at the end: a failed or interrupted run leaves nothing half-made and
never destroys an existing store or file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featstore.common.lock import writer_lock
from featstore.errors import DiskFull, InputError, StoreError
from featstore.progress import make_progress
from featstore.store.core import (
    MODALITIES,
    STATUS_DONE,
    STATUS_NAMES,
    FeatureStore,
    ModalitySpec,
    is_store_dir,
    remove_stale_temps,
    replace_store_dir,
    sha256_file,
    temp_store_path,
)

EXPORT_FORMAT = "diccae-h5-export"
EXPORT_VERSION = 1
ON_NONFINITE = ("fail", "skip")
_SHOW_ROWS = 10


# --------------------------------------------------------------- sources


@dataclass(frozen=True)
class H5Source:
    """One dataset in one HDF5 file."""

    file: Path
    dataset: str

    def __str__(self) -> str:
        return f"{self.file}:{self.dataset}"


def parse_source(spec: str, default_file: str | Path | None, *, what: str) -> H5Source:
    """``FILE:DATASET`` or ``DATASET`` (in ``default_file``) -> :class:`H5Source`.

    The file part is recognised only when it names an existing file, so dataset
    names that contain a colon still work.
    """
    if ":" in spec:
        file, dataset = spec.rsplit(":", 1)
        if file and dataset and Path(file).is_file():
            return H5Source(Path(file), dataset)
    if default_file is None:
        raise InputError(
            f"{what} dataset {spec!r}: no HDF5 file given for it (use FILE:DATASET or pass the file)"
        )
    return H5Source(Path(default_file), spec)


class _Files:
    """Opens every HDF5 file once and looks datasets up with clear errors."""

    def __init__(self, stack: ExitStack):
        self._stack = stack
        self._open: dict[Path, h5py.File] = {}

    def dataset(self, src: H5Source) -> h5py.Dataset:
        path = src.file.resolve()
        if path not in self._open:
            if not path.is_file():
                raise InputError(f"{src.file}: no such HDF5 file")
            try:
                self._open[path] = self._stack.enter_context(h5py.File(path, "r"))
            except OSError as exc:
                raise InputError(f"{src.file}: not a readable HDF5 file ({exc})") from exc
        f = self._open[path]
        obj = f.get(src.dataset)
        if not isinstance(obj, h5py.Dataset):
            have = []
            f.visititems(lambda name, o: have.append(name) if isinstance(o, h5py.Dataset) else None)
            raise InputError(
                f"{src.file}: no dataset {src.dataset!r} (has: {', '.join(have) or 'none'})"
            )
        return obj

    def file(self, path: Path) -> h5py.File:
        return self._open[path.resolve()]


def _text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _labels_block(raw: np.ndarray, src: H5Source, start: int) -> np.ndarray:
    """Integer labels from (N,) ints, (N, C) one-hot/scores or AVE's (N, T, C) per-segment one-hot.

    One-hot style inputs take the class with the largest (time-summed) value; rows that
    are all zero have no label (-1).
    """
    if raw.ndim == 1:
        if np.issubdtype(raw.dtype, np.floating):
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
                bad = (
                    np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))[:_SHOW_ROWS] + start
                )
                raise InputError(
                    f"{src}: labels must be whole numbers; rows {bad.tolist()} are not"
                )
        elif not np.issubdtype(raw.dtype, np.integer):
            raise InputError(f"{src}: labels must be numbers, got dtype {raw.dtype}")
        return raw.astype(np.int64)
    scores = raw.sum(axis=1) if raw.ndim == 3 else raw
    out = scores.argmax(axis=1).astype(np.int64)
    out[~(scores != 0).any(axis=1)] = -1
    return out


def _combined_sha256(files: list[Path]) -> str:
    """sha256 of the one file, or of the sorted ``sha  name`` lines of several."""
    unique = sorted({p.resolve() for p in files})
    if len(unique) == 1:
        return sha256_file(unique[0])
    lines = "".join(f"{sha256_file(p)}  {p.name}\n" for p in unique)
    return hashlib.sha256(lines.encode()).hexdigest()


@contextmanager
def _progress(enabled: bool, total: int, what: str) -> Iterator[Callable[[int], None]]:
    """A rich bar (rows, rows/s, ETA); yields ``advance(n_rows)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")

    with make_progress(RowsPerSecond()) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


# ----------------------------------------------------------------- import


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
    progress: bool = True,
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
    (featstore.common.lock) from the first check to the final swap.
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
    if store_path.exists() and not (store_path.is_dir() and not any(store_path.iterdir())):
        if not overwrite:
            raise StoreError(f"{store_path} already exists (use --overwrite to replace it)")
        if not (
            is_store_dir(store_path) or (store_path.is_dir() and not any(store_path.iterdir()))
        ):
            raise StoreError(
                f"{store_path} exists and is not a diccae store; refusing to replace it"
            )
    remove_stale_temps(store_path)

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
        files = _Files(stack)
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
                labels[s : s + chunk_rows] = _labels_block(
                    np.asarray(others["labels"][s : s + chunk_rows]), extra["labels"], s
                )
            if labels.min(initial=0) < -1 or labels.max(initial=0) > np.iinfo(np.int32).max:
                bad = np.flatnonzero((labels < -1) | (labels > np.iinfo(np.int32).max))[:_SHOW_ROWS]
                raise InputError(
                    f"{extra['labels']}: labels must be >= -1 (-1 = unknown) and fit int32; rows {bad.tolist()} do not"
                )
        splits = _text(np.asarray(others["split"][:])) if "split" in others else None
        ids = (
            _text(np.asarray(others["ids"][:]))
            if "ids" in others
            else [f"{i:0{len(str(max(n - 1, 0)))}d}" for i in range(n)]
        )
        if "class_names" in others:
            class_names = _text(np.asarray(others["class_names"][:]).reshape(-1))
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
        tmp = temp_store_path(store_path, "importing")
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
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
                manifest_sha256=_combined_sha256(all_files),
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
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        replace_store_dir(tmp, store_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return FeatureStore.open(store_path, mode="r+")


_READ_BYTES = 64 << 20


def _pooled_rows(d: h5py.Dataset, s: int, e: int) -> np.ndarray:
    """Rows ``s:e`` as float64 (n, D), every axis between N and D mean-pooled.

    AVE's visual features are (N, 10, 7, 7, 512): pooling time and space.  Rows are
    read in slices of about 64 MiB so a big per-row block never sits in memory whole.
    """
    row_bytes = max(1, int(np.prod(d.shape[1:])) * d.dtype.itemsize)
    step = max(1, _READ_BYTES // row_bytes)
    out = np.empty((e - s, d.shape[-1]), np.float64)
    axes = tuple(range(1, d.ndim - 1))
    for i in range(s, e, step):
        block = np.asarray(d[i : min(e, i + step)], dtype=np.float64)
        out[i - s : i - s + block.shape[0]] = block.mean(axis=axes) if axes else block
    return out


def _copy_rows(
    store: FeatureStore,
    dsets: dict[str, h5py.Dataset],
    sources: dict[str, H5Source],
    restore: dict[str, h5py.Dataset],
    on_nonfinite: str,
    progress: bool,
) -> None:
    """Stream the embeddings in, one store chunk at a time."""
    with _progress(progress, store.n_rows, "importing") as advance:
        for s, e in store.shard_ranges():
            emb: dict[str, np.ndarray] = {}
            failed: dict[int, str] = {}
            missing: dict[str, np.ndarray] = {}
            for m, d in dsets.items():
                x = _pooled_rows(d, s, e)
                bad = ~np.isfinite(x).all(axis=1)
                if bad.any():
                    rows = (np.flatnonzero(bad) + s).tolist()
                    if on_nonfinite == "fail":
                        raise InputError(
                            f"{sources[m]}: NaN/Inf in {m} embeddings at rows {rows[:_SHOW_ROWS]}"
                            f"{' ...' if len(rows) > _SHOW_ROWS else ''} (use --on-nonfinite skip to import the "
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
                            f"{sources[m]}: {m} values at rows {rows[:_SHOW_ROWS]} overflow float16; import with --dtype float32"
                        )
            for m in MODALITIES:
                if f"{m}_missing" in restore:
                    missing[m] = np.asarray(restore[f"{m}_missing"][s:e], dtype=bool)
            if "status" in restore:
                st = np.asarray(restore["status"][s:e])
                err = (
                    _text(np.asarray(restore["error"][s:e]))
                    if "error" in restore
                    else [""] * (e - s)
                )
                for i in np.flatnonzero(st != STATUS_DONE):
                    name = STATUS_NAMES.get(int(st[i]), str(int(st[i])))
                    reason = f"{name} in the exported store" + (f": {err[i]}" if err[i] else "")
                    failed.setdefault(int(s + i), reason)
            store.write_rows(s, embeddings=emb, missing=missing or None, failed=failed or None)
            advance(e - s)


# ----------------------------------------------------------------- export


def _check_free_space(path: Path, need: int) -> None:
    """Refuse before writing when the export cannot fit: HDF5 crashes (SIGSEGV) rather
    than raising when the disk fills in the middle of a write."""
    import shutil

    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    except OSError:
        return
    if free < need + (16 << 20):
        raise DiskFull(
            f"cannot write {path}: about {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free on its disk; nothing written"
        )


def export_h5(
    store: FeatureStore | str | Path,
    h5_path: str | Path,
    *,
    include_missing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a store's embeddings and row data to one HDF5 file; returns a summary.

    Datasets: ``audio`` and ``video`` (n, D) in the store's dtype, ``label`` int32,
    ``split``, ``ids``, ``error`` (UTF-8 strings), ``status`` uint8, ``audio_missing``
    and ``video_missing`` bool, ``row`` (the store row of each entry) and
    ``class_names``.  By default only rows that are done with both streams present are
    written (what a plain HDF5 consumer expects); ``include_missing=True`` writes every
    row, and the status/missing datasets tell which rows hold data.  The file's
    attributes carry the store's fingerprint, modality specs (JSON) and dtype.
    """
    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    h5_path = Path(h5_path)
    if h5_path.exists() and not overwrite:
        raise InputError(f"{h5_path} already exists (use --overwrite to replace it)")
    if h5_path.is_dir():
        raise InputError(
            f"{h5_path} is a directory; export-h5 writes a file and never replaces a directory"
        )
    if h5_path.resolve().is_relative_to(store.path.resolve()):
        raise InputError(
            f"{h5_path} lies inside the store {store.path}; write the export elsewhere"
        )
    mods = [m for m in MODALITIES if m in store.modalities]
    keep = np.ones(store.n_rows, bool) if include_missing else store.valid_rows(mods)
    n_out = int(keep.sum())
    str_dt = h5py.string_dtype("utf-8")
    _check_free_space(
        h5_path,
        n_out * (sum(store.modalities[m].dim for m in mods) * np.dtype(store.dtype).itemsize + 256),
    )
    tmp = h5_path.with_name(f".{h5_path.name}.exporting-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f, _progress(progress, store.n_rows, "exporting") as advance:
            rows_chunk = max(1, min(store.chunk_rows, n_out))
            out = {}
            for m in mods:
                dim = store.modalities[m].dim
                out[m] = f.create_dataset(
                    m,
                    shape=(n_out, dim),
                    dtype=store.dtype,
                    chunks=(rows_chunk, dim) if n_out else None,
                )
            for name, dt in (
                ("label", "int32"),
                ("status", "uint8"),
                ("row", "int64"),
                ("audio_missing", "bool"),
                ("video_missing", "bool"),
                ("ids", str_dt),
                ("split", str_dt),
                ("error", str_dt),
            ):
                out[name] = f.create_dataset(
                    name, shape=(n_out,), dtype=dt, chunks=(rows_chunk,) if n_out else None
                )
            f.create_dataset(
                "class_names", data=np.array(store.class_names, dtype=object), dtype=str_dt
            )
            f.attrs.update(
                {
                    "format": EXPORT_FORMAT,
                    "format_version": EXPORT_VERSION,
                    "store_fingerprint": store.fingerprint,
                    "store_path": str(store.path),
                    "dtype": store.dtype,
                    "modalities": json.dumps({k: v.to_json() for k, v in store.modalities.items()}),
                    "class_names": json.dumps(store.class_names),
                    "include_missing": include_missing,
                }
            )
            pos = 0
            arrays = [
                *mods,
                "label",
                "status",
                "ids",
                "split",
                "error",
                *(f"{m}_missing" for m in mods),
            ]
            for shard in store.iter_shards(arrays):
                sel = np.flatnonzero(keep[shard.start : shard.stop])
                k = sel.size
                if k:
                    for name in arrays:
                        values = shard.data[name][sel]
                        if values.dtype.kind in ("T", "U", "O"):
                            values = np.array([str(v) for v in values], dtype=object)
                        out[name][pos : pos + k] = values
                    out["row"][pos : pos + k] = sel + shard.start
                    for m in MODALITIES:
                        if m not in mods:
                            out[f"{m}_missing"][pos : pos + k] = True
                    pos += k
                advance(shard.stop - shard.start)
        os.replace(tmp, h5_path)  # a file over a file: atomic, never a directory
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "path": str(h5_path),
        "rows": n_out,
        "store_rows": store.n_rows,
        "include_missing": include_missing,
        "modalities": mods,
        "dtype": store.dtype,
    }
