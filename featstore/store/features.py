"""Which numbers a stage works on: the feature view over a store.

Clustering and the confusion analysis both take ``--features``:

* ``audio`` / ``video``: the stored embeddings as they are;
* ``audio+video`` (default): each modality L2-normalised per row, then concatenated,
  so neither modality dominates the distance by its scale;
* any other 2-D array in the store;
* a path to features written beside a store, e.g. ``RUN/fused`` (the fused
  features a training run re-clustered): a Zarr group written by
  :func:`write_run_features` with one row per store row, the store's fingerprint
  and its row ids, so they are never read against another store.

Rows that failed extraction or lack a needed modality are not part of the view; for
extra arrays, rows whose values are NaN (not computed) are skipped too.  Callers get
the row indices with every block so results can be written back per store row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import InputError
from featstore.store.blocks import assemble_block, check_finite, l2_normalize, scratch_floats
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.partcache import PartCache

COMBINED = "audio+video"

# the block kernel lives in featstore/store/blocks.py; these names stay importable from here
__all__ = [
    "COMBINED",
    "FeatureView",
    "assemble_block",
    "check_finite",
    "feature_view",
    "is_path_feature",
    "l2_normalize",
    "open_run_features",
    "write_run_features",
]


RUN_FEATURES_FORMAT = "diccae-run-features"


def write_run_features(
    path: str | Path, store: FeatureStore, data: np.ndarray, *, attrs: dict[str, Any] | None = None
) -> Path:
    """Write per-row features of ``store`` outside it, at ``path`` (a Zarr group).

    ``features`` (N, D) float32, NaN rows = not computed; ``ids`` the store's row
    ids; attrs carry the store's fingerprint and path.  Written into a temporary
    sibling and swapped in, so a reader never sees half an array and two runs
    never share one (each writes under its own run directory).
    """
    import shutil

    import zarr

    path = Path(path)
    data = np.asarray(data, np.float32)
    if data.ndim != 2 or data.shape[0] != store.n_rows:
        raise InputError(
            f"run features for {store.path} must be ({store.n_rows}, D), got {data.shape}"
        )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(str(tmp), mode="w")
    arr = group.create_array(
        "features",
        shape=data.shape,
        chunks=(store.chunk_rows, data.shape[1]),
        dtype="float32",
        fill_value=np.nan,
    )
    arr[:] = data
    ids = group.create_array(
        "ids", shape=(store.n_rows,), dtype=str, chunks=(max(1, store.n_rows),)
    )
    ids[:] = np.asarray([str(i) for i in store.ids.tolist()], dtype=object)
    group.attrs.update(
        {
            "format": RUN_FEATURES_FORMAT,
            "store_fingerprint": store.fingerprint,
            "store_path": str(store.path),
            "n_rows": int(store.n_rows),
            **(attrs or {}),
        }
    )
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def open_run_features(path: str | Path, store: FeatureStore) -> Any:
    """The ``features`` array of ``path`` after checking it belongs to ``store`` (row by row)."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:  # noqa: BLE001 - any unreadable group is the same user error
        raise InputError(
            f"{path}: not a features directory written by a training run ({exc})"
        ) from exc
    if attrs.get("format") != RUN_FEATURES_FORMAT:
        raise InputError(
            f"{path}: not a features directory written by a training run (no {RUN_FEATURES_FORMAT} format)"
        )
    if attrs.get("store_fingerprint") != store.fingerprint:
        raise InputError(
            f"{path} holds features of another store ({attrs.get('store_path')}), "
            f"not of {store.path} (fingerprints differ)"
        )
    arr, id_arr = group.get("features"), group.get("ids")
    if not isinstance(arr, zarr.Array) or not isinstance(id_arr, zarr.Array):
        raise InputError(f"{path}: not a features directory written by a training run (no arrays)")
    ids = np.asarray([str(i) for i in np.asarray(id_arr[:]).tolist()])
    mine = np.asarray([str(i) for i in store.ids.tolist()])
    if arr.shape[0] != store.n_rows or ids.shape != mine.shape or not np.array_equal(ids, mine):
        bad = (
            int(np.flatnonzero(ids != mine)[0])
            if ids.shape == mine.shape
            else min(len(ids), len(mine))
        )
        raise InputError(
            f"{path}: row ids do not match {store.path} (first difference at row {bad})"
        )
    return arr


def is_path_feature(name: str) -> bool:
    """``--features`` values naming a directory rather than a store array."""
    return "/" in name or os.sep in name or Path(name).is_dir()


@dataclass
class FeatureView:
    """A read-only view of one feature choice over a store, streamed by chunks."""

    store: FeatureStore
    name: str

    def __post_init__(self) -> None:
        available = self.store.feature_arrays()
        self._external = None
        if self.name not in available and self.name != COMBINED and is_path_feature(self.name):
            self._external = open_run_features(self.name, self.store)
            self._parts = [self.name]
            return
        if self.name == COMBINED:
            lacking = [m for m in MODALITIES if m not in available]
            if lacking:
                raise InputError(
                    f"{self.store.path}: --features {COMBINED} needs {lacking} in the store"
                )
            self._parts = list(MODALITIES)
        elif self.name in available:
            self._parts = [self.name]
        else:
            raise InputError(
                f"{self.store.path}: no feature array {self.name!r}; choose one of "
                f"{', '.join([COMBINED, *available])}"
            )

    def _array(self, part: str) -> Any:
        return self._external if self._external is not None else self.store.array(part)

    def read_part(self, part: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of one part: run features as they are, store arrays with integrity checks."""
        if self._external is not None:
            return np.asarray(self._external[start:stop])
        return self.store.read(part, slice(start, stop))

    @property
    def dim(self) -> int:
        return sum(int(self._array(p).shape[1]) for p in self._parts)

    def assembly_scratch_bytes(self, rows: int) -> int:
        """Scratch memory the reader takes to make one block of ``rows`` rows."""
        dims = [int(self._array(p).shape[1]) for p in self._parts]
        return 4 * scratch_floats(rows, dims, combined=self.name == COMBINED)

    @property
    def stored_row_bytes(self) -> int:
        """Bytes one row takes as stored, before the float32 cast (what a :class:`PartCache` keeps)."""
        return sum(
            int(self._array(p).shape[1]) * np.dtype(self._array(p).dtype).itemsize
            for p in self._parts
        )

    def valid_mask(self) -> np.ndarray:
        """Rows that take part: extraction done and the needed modalities present."""
        needed = [p for p in self._parts if p in MODALITIES]
        if not needed:  # an extra array (e.g. fused features) needs both modalities
            needed = list(self.store.modalities)
            if self._external is None:
                self.store.check_chunks(self._parts[0])  # dask readers too must not see fill values
        return self.store.valid_rows(needed)

    def iter_blocks(
        self, rows_per_block: int | None = None, *, cache: PartCache | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, X)`` with X float32, only valid rows, in store order.

        Blocks are whole chunks (or groups of chunks up to ``rows_per_block``), so
        each chunk is decompressed exactly once per pass.  ``cache``: decoded parts
        kept between passes (see :mod:`featstore.store.partcache`); blocks found there
        are not read again, and the values are the same either way.
        """
        mask = self.valid_mask()
        ranges = self.store.shard_ranges()
        step = max(1, (rows_per_block or self.store.chunk_rows) // self.store.chunk_rows)
        for i in range(0, len(ranges), step):
            s, e = ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1]
            keep = np.flatnonzero(mask[s:e])
            if keep.size == 0:
                continue
            parts = cache.get(s, e) if cache is not None else None
            if parts is None:
                parts = [self.read_part(p, s, e) for p in self._parts]
                if cache is not None:
                    cache.offer(s, e, parts)
            yield assemble_block(
                parts,
                keep,
                s,
                combined=self.name == COMBINED,
                extra=self._is_extra,
                what=f"{self.name} of {self.store.path}",
            )

    @property
    def _is_extra(self) -> bool:
        return self._parts[0] not in MODALITIES

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """All valid rows at once: ``(row_indices, X)``."""
        rows, blocks = [], []
        for r, x in self.iter_blocks(rows_per_block=1 << 16):
            rows.append(r)
            blocks.append(x)
        if not rows:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        return np.concatenate(rows), np.concatenate(blocks)

    def nbytes(self) -> int:
        """Bytes the valid rows take as float32 (to compare with a memory budget)."""
        return int(self.valid_mask().sum()) * self.dim * 4


def feature_view(store: FeatureStore, features: str = COMBINED) -> FeatureView:
    return FeatureView(store, features)
