"""Write a store out to one HDF5 file: ``diccae store export-h5``.

For tools that only read HDF5.  The file is written under a hidden name next to the
target and renamed at the end (a file over a file: atomic), so a failed or
interrupted export leaves nothing half-made and never destroys an existing file;
:func:`featstore.store.h5import.import_h5` reads such a file back, restoring the
missing flags, row status and class names.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featstore.errors import DiskFull, InputError
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import FeatureStore
from featstore.store.h5source import EXPORT_FORMAT, EXPORT_VERSION, rows_per_s
from featstore.store.schema import MODALITIES


def check_free_space(path: Path, need: int) -> None:
    """Refuse before writing when the export cannot fit: HDF5 crashes (SIGSEGV) rather
    than raising when the disk fills in the middle of a write."""
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
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Write a store's embeddings and row data to one HDF5 file; returns a summary.

    Datasets: ``audio`` and ``video`` (n, D) in the store's dtype, ``label`` int32,
    ``split``, ``ids``, ``error`` (UTF-8 strings), ``status`` uint8, ``audio_missing``
    and ``video_missing`` bool, ``row`` (the store row of each entry) and
    ``class_names``.  By default only rows that are done with both streams present are
    written (what a plain HDF5 consumer expects); ``include_missing=True`` writes every
    row, and the status/missing datasets tell which rows hold data.  The file's
    attributes carry the store's fingerprint, modality specs (JSON) and dtype.
    ``progress`` receives :class:`~featstore.progress.ProgressUpdate` values.
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
    check_free_space(
        h5_path,
        n_out * (sum(store.modalities[m].dim for m in mods) * np.dtype(store.dtype).itemsize + 256),
    )
    tmp = h5_path.with_name(f".{h5_path.name}.exporting-{os.getpid()}")
    try:
        bar = ProgressTask(progress, "rows", total=store.n_rows, description="exporting")
        t0 = time.perf_counter()
        with h5py.File(tmp, "w") as f, bar:
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
                n = shard.stop - shard.start
                bar.advance(n, info=rows_per_s(bar.completed + n, time.perf_counter() - t0))
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
