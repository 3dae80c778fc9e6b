"""Reading embeddings and row data out of HDF5 files, for ``store import-h5``.

Dataset names are given as ``DATASET`` (looked up in the main file, or in the
modality's own file) or ``FILE:DATASET`` (any file).  :class:`H5Files` opens each file
once and names the datasets a file does have when one is missing; the helpers turn
labels in any of the usual shapes into integers and pool per-segment features.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from featstore.errors import InputError
from featstore.store.schema import sha256_file

#: ``format`` attribute of files written by :func:`featstore.store.h5export.export_h5`;
#: the import restores their missing flags, row status and class names
EXPORT_FORMAT = "diccae-h5-export"
EXPORT_VERSION = 1
#: at most this many row numbers are named in one error message
SHOW_ROWS = 10


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


class H5Files:
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


def as_text(values: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def labels_block(raw: np.ndarray, src: H5Source, start: int) -> np.ndarray:
    """Integer labels from (N,) ints, (N, C) one-hot/scores or AVE's (N, T, C) per-segment one-hot.

    One-hot style inputs take the class with the largest (time-summed) value; rows that
    are all zero have no label (-1).
    """
    if raw.ndim == 1:
        if np.issubdtype(raw.dtype, np.floating):
            if not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
                bad = np.flatnonzero(~np.isfinite(raw) | (raw != np.round(raw)))[:SHOW_ROWS] + start
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


def combined_sha256(files: list[Path]) -> str:
    """sha256 of the one file, or of the sorted ``sha  name`` lines of several."""
    unique = sorted({p.resolve() for p in files})
    if len(unique) == 1:
        return sha256_file(unique[0])
    lines = "".join(f"{sha256_file(p)}  {p.name}\n" for p in unique)
    return hashlib.sha256(lines.encode()).hexdigest()


READ_BYTES = 64 << 20


def pooled_rows(d: h5py.Dataset, s: int, e: int) -> np.ndarray:
    """Rows ``s:e`` as float64 (n, D), every axis between N and D mean-pooled.

    AVE's visual features are (N, 10, 7, 7, 512): pooling time and space.  Rows are
    read in slices of about 64 MiB so a big per-row block never sits in memory whole.
    """
    row_bytes = max(1, int(np.prod(d.shape[1:])) * d.dtype.itemsize)
    step = max(1, READ_BYTES // row_bytes)
    out = np.empty((e - s, d.shape[-1]), np.float64)
    axes = tuple(range(1, d.ndim - 1))
    for i in range(s, e, step):
        block = np.asarray(d[i : min(e, i + step)], dtype=np.float64)
        out[i - s : i - s + block.shape[0]] = block.mean(axis=axes) if axes else block
    return out


def rows_per_s(rows: float, seconds: float) -> str:
    """The rate shown beside an import/export bar."""
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 and rows else "- rows/s"
