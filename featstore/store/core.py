"""The feature store: embeddings of every clip in one chunked Zarr v3 group.

Layout (see docs/store-format.md for the full contract)::

    STORE/                      zarr v3 group, attributes describe the whole store
      audio     (N, Da)  float16|float32   chunked (chunk_rows, Da)
      video     (N, Dv)  float16|float32   chunked (chunk_rows, Dv)
      status    (N,)     uint8   0 pending, 1 done, 2 failed
      audio_missing / video_missing (N,) bool   clip has no such stream
      ids, paths, split, error (N,) strings;  label (N,) int32 (-1 unknown)
      <other 2-D arrays>  e.g. fused features written by the trainer

Every row array is chunked by the same ``chunk_rows`` so that a *shard* (one chunk
of rows) can be read, written or handed to a worker on its own.  Writers fill whole
shards and write the data before the status, and zarr's LocalStore replaces chunk
files atomically, so a killed writer never leaves a row marked done without data.

This module holds the store's life cycle (create, open, write); reading is in
:mod:`featstore.store.handle`, the names of the format in :mod:`featstore.store.schema`,
the array layout in :mod:`featstore.store.layout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import featstore.store.integrity as integrity
from featstore.errors import InputError, StoreConfigMismatch, StoreDamaged, StoreError
from featstore.store.handle import StoreHandle
from featstore.store.layout import create_group
from featstore.store.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MODALITIES,
    ROW_ARRAYS,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NAMES,
    ModalitySpec,
    compressors,
    diccae_version,
)
from featstore.store.structure import reseal, structural_problems

# every written chunk gets a file, even one equal to the fill value, so that "no chunk
# file" can only mean "never written" (see featstore/store/integrity.py)
zarr.config.set({"array.write_empty_chunks": True})

#: other packages import these from here; new code imports from :mod:`featstore.store`
__all__ = ["MODALITIES", "STATUS_NAMES", "FeatureStore", "ModalitySpec", "diccae_version"]


class FeatureStore(StoreHandle):
    """A handle on one store directory.  Use :meth:`create` or :meth:`open`."""

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        ids: Sequence[str],
        modalities: dict[str, ModalitySpec],
        labels: Sequence[int] | np.ndarray | None = None,
        splits: Sequence[str] | None = None,
        paths: Sequence[str] | None = None,
        class_names: Sequence[str] = (),
        chunk_rows: int = 1024,
        dtype: str = "float16",
        compression: str = "zstd",
        manifest_sha256: str = "",
        source: str = "extract",
        overwrite: bool = False,
        extra_attrs: dict[str, Any] | None = None,
    ) -> FeatureStore:
        """Lay out a new store with every row pending.

        Refuses to touch an existing directory unless ``overwrite`` is set, so an
        accidental rerun never destroys finished extraction work.
        """
        path = Path(path)
        group = create_group(
            path,
            ids=ids,
            modalities=modalities,
            labels=labels,
            splits=splits,
            paths=paths,
            class_names=class_names,
            chunk_rows=chunk_rows,
            dtype=dtype,
            compression=compression,
            manifest_sha256=manifest_sha256,
            source=source,
            overwrite=overwrite,
            extra_attrs=extra_attrs,
        )
        return cls(group, path, read_only=False)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> FeatureStore:
        """Open an existing store; ``mode`` is ``"r"`` (default) or ``"r+"``."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise InputError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} is not a diccae store (no zarr.json found)")
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as exc:  # damaged metadata
            raise StoreDamaged(
                f"{path}: cannot open as a Zarr v3 group ({type(exc).__name__}: {exc})"
            ) from None
        if group.attrs.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{path} is a Zarr group but not a diccae store (format attribute missing)"
            )
        version = group.attrs.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"{path}: store format version {version} is not supported (expected {FORMAT_VERSION})"
            )
        store = cls(group, path, read_only=(mode == "r"))
        problems = store.open_problems()
        if problems:
            more = (
                f" (and {len(problems) - 1} more; see `diccae store verify`)"
                if len(problems) > 1
                else ""
            )
            raise StoreDamaged(f"{path}: the store is damaged: {problems[0]}{more}")
        return store

    def open_problems(self) -> list[str]:
        """Structural damage found without reading data: missing or unreadable arrays,
        shapes that disagree with the attributes, attributes edited after writing."""
        return structural_problems(self.path, self._group)

    # ----------------------------------------------------------------- writing
    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only")

    def update_attrs(self, **values: Any) -> None:
        from featstore.common.lock import writer_lock

        self._require_writable()
        with writer_lock(self.path):
            self._group.attrs.update(values)
            reseal(self._group)

    def check_compatible(
        self,
        modalities: dict[str, ModalitySpec],
        *,
        manifest_sha256: str,
        dtype: str,
        chunk_rows: int | None = None,
        compression: str | None = None,
    ) -> None:
        """Raise :class:`StoreConfigMismatch` if continuing this store would mix configs."""
        problems = []
        mine = self.attrs["modalities"]
        theirs = {k: v.to_json() for k, v in modalities.items()}
        for name in sorted(set(mine) | set(theirs)):
            if mine.get(name) != theirs.get(name):
                problems.append(
                    f"{name} encoder: store has {mine.get(name)}, requested {theirs.get(name)}"
                )
        if self.attrs.get("manifest_sha256") != manifest_sha256:
            problems.append("the manifest differs from the one the store was made from")
        if self.dtype != dtype:
            problems.append(f"dtype: store has {self.dtype}, requested {dtype}")
        if chunk_rows is not None and self.chunk_rows != chunk_rows:
            problems.append(f"chunk_rows: store has {self.chunk_rows}, requested {chunk_rows}")
        if compression is not None and self.compression != compression:
            problems.append(f"compression: store has {self.compression}, requested {compression}")
        if problems:
            raise StoreConfigMismatch(
                f"{self.path} was made with a different configuration; refusing to continue it "
                "(use --overwrite to start fresh):\n  - " + "\n  - ".join(problems)
            )

    def write_rows(
        self,
        start: int,
        *,
        embeddings: dict[str, np.ndarray],
        missing: dict[str, np.ndarray] | None = None,
        failed: dict[int, str] | None = None,
    ) -> None:
        """Write a contiguous block of rows and only then mark it finished.

        ``embeddings[m]`` has one row per clip in the block; ``missing[m]`` flags
        clips lacking that stream (their embedding rows are left as zeros and must
        not be read as data); ``failed`` maps absolute row -> reason for clips that
        could not be decoded at all.  Data first, status last: a kill in between
        leaves the rows pending and they are redone on resume.
        """
        self._require_writable()
        missing = missing or {}
        failed = failed or {}
        lengths = {v.shape[0] for v in (*embeddings.values(), *missing.values())}
        if not embeddings or len(lengths) != 1:
            raise InputError(
                f"write_rows needs at least one modality, all blocks of one length (got lengths {sorted(lengths)})"
            )
        (n,) = lengths
        if start < 0 or start + n > self.n_rows:
            raise InputError(
                f"rows [{start}, {start + n}) fall outside the store's {self.n_rows} rows"
            )
        outside = [r for r in failed if not start <= r < start + n]
        if outside:
            raise InputError(
                f"failed rows {outside[:5]} are outside the block [{start}, {start + n})"
            )
        # validated: now data first, status last
        for name, values in embeddings.items():
            self.array(name)[start : start + n] = values.astype(self.dtype, copy=False)
        for name, flags in missing.items():
            self.array(f"{name}_missing")[start : start + n] = flags
        status = np.full(n, STATUS_DONE, np.uint8)
        # the block's reasons are always rewritten, so a redone block never keeps a
        # reason from a killed earlier attempt
        err = np.full(n, "", dtype=object)
        for row, reason in failed.items():
            status[row - start] = STATUS_FAILED
            err[row - start] = reason
        self.array("error")[start : start + n] = err
        self.array("status")[start : start + n] = status
        # the ledger comes after the status: a record always means "these rows are done"
        written = [*embeddings, *(f"{m}_missing" for m in missing), "error", "status"]
        arrays = {a: self.array(a) for a in written}
        c = self.chunk_rows
        for chunk in range(start // c, -(-(start + n) // c)):
            integrity.write_chunk(self.path, chunk, arrays)
        self.forget_checks()

    def write_feature_array(
        self,
        name: str,
        data: np.ndarray,
        *,
        attrs: dict[str, Any] | None = None,
        dtype: str | None = None,
        overwrite: bool = True,
    ) -> zarr.Array:
        """Store an extra (N, D) feature array, e.g. fused features from a training run.

        Rows that have no value should be NaN; feature readers skip them.
        """
        from featstore.common.lock import writer_lock

        self._require_writable()
        with writer_lock(self.path):
            return self._write_feature_array(
                name, data, attrs=attrs, dtype=dtype, overwrite=overwrite
            )

    def _write_feature_array(
        self,
        name: str,
        data: np.ndarray,
        *,
        attrs: dict[str, Any] | None,
        dtype: str | None,
        overwrite: bool,
    ) -> zarr.Array:
        if name in ROW_ARRAYS or name in MODALITIES or name == integrity.LEDGER_GROUP:
            raise InputError(f"{name!r} is a reserved store array name")
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != self.n_rows:
            raise InputError(f"feature array {name!r} must be ({self.n_rows}, D), got {data.shape}")
        if name in self._group:
            if not overwrite:
                raise StoreError(f"{self.path} already has an array {name!r}")
            integrity.remove_extra(self.path, name)
            del self._group[name]
        arr = self._group.create_array(
            name,
            shape=data.shape,
            chunks=(self.chunk_rows, data.shape[1]),
            dtype=dtype or str(data.dtype),
            fill_value=np.nan,
            dimension_names=("row", f"{name}_dim"),
            compressors=compressors(self.compression),
        )
        arr[:] = data
        arr.attrs.update(attrs or {})
        integrity.write_extra(self.path, name, arr, len(self.shard_ranges()))
        self.forget_checks(name)
        reseal(self._group)
        return arr

    # ---------------------------------------------------------------- analysis
    def to_pandas(self, columns: Sequence[str] | None = None, *, rows: Any = None) -> Any:
        """The per-row table as a pandas DataFrame, reading only ``columns`` (and ``rows``);
        see :func:`featstore.store.table.rows_table`."""
        from featstore.store.table import rows_table

        return rows_table(self, columns, rows=rows)


def as_store(store: FeatureStore | str | Path) -> FeatureStore:
    """``store`` itself, or the store opened at that path."""
    return store if isinstance(store, FeatureStore) else FeatureStore.open(store)


def row_labels(store: FeatureStore, labels: Any) -> np.ndarray:
    """``labels`` as one int64 label per row of ``store`` (-1 = none), or a named InputError.

    Every per-row analysis (confusion, audit) takes labels this way, so a label array
    of another store's length or a float array is refused with the same message.
    """
    labels = np.asarray(labels)
    if labels.shape != (store.n_rows,):
        raise InputError(
            f"labels have shape {labels.shape} but {store.path} has {store.n_rows} rows"
        )
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    return labels.astype(np.int64)
