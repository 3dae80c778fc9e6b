"""The read side of a store handle: metadata, row arrays, shards, and damage checks.

:class:`StoreHandle` holds an opened Zarr group and reads from it; every read goes
through :meth:`StoreHandle._get`, which first checks that the chunks it needs exist
(see featstore/store/integrity.py) and turns decoder errors into one-line
:class:`~featstore.errors.StoreDamaged` messages naming the chunk.
:class:`~featstore.store.core.FeatureStore` adds creation, opening and writing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import featstore.store.integrity as integrity
from featstore.errors import DiccaeError, StoreDamaged, StoreError
from featstore.store.chunkread import ChunkLayout
from featstore.store.schema import (
    MODALITIES,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NAMES,
    Failure,
    ModalitySpec,
    Shard,
    content_fingerprint,
)


class StoreHandle:
    """An opened store group, read-only API (use :class:`FeatureStore`)."""

    def __init__(self, group: zarr.Group, path: Path, read_only: bool):
        self._group = group
        self.path = path
        self.read_only = read_only
        self._cache: dict[str, np.ndarray] = {}
        self._checked: set[str] = set()
        self._layouts: dict[str, ChunkLayout | None] = {}

    # ---------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def _attr(self, key: str) -> Any:
        """One group attribute as plain JSON data (zarr types it as a JSON union)."""
        value: Any = self._group.attrs[key]
        return value

    @property
    def n_rows(self) -> int:
        return int(self._attr("n_rows"))

    def __len__(self) -> int:
        return self.n_rows

    @property
    def chunk_rows(self) -> int:
        return int(self._attr("chunk_rows"))

    @property
    def dtype(self) -> str:
        return str(self._attr("dtype"))

    @property
    def compression(self) -> str:
        return str(self._group.attrs.get("compression", "zstd"))

    @property
    def fingerprint(self) -> str:
        return str(self._attr("fingerprint"))

    @property
    def class_names(self) -> list[str]:
        return list(self.attrs.get("class_names", []))

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {k: ModalitySpec.from_json(v) for k, v in self._attr("modalities").items()}

    # -------------------------------------------------------------- row arrays
    def array(self, name: str) -> zarr.Array:
        """The raw zarr array ``name`` (for dask: ``dask.array.from_zarr(store.array(name))``)."""
        try:
            node = self._group[name]
        except KeyError as exc:
            raise StoreError(
                f"{self.path} has no array {name!r} (has: {', '.join(self.array_names())})"
            ) from exc
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.path}: {name!r} is a group, not an array")
        return node

    def array_names(self) -> list[str]:
        return sorted(self._group.array_keys())

    def _row_array(self, name: str) -> np.ndarray:
        """Whole small per-row arrays (ids, labels...), cached once read."""
        if name not in self._cache:
            self._cache[name] = self._get(name, slice(None))
        return self._cache[name]

    @property
    def ids(self) -> np.ndarray:
        return self._row_array("ids")

    @property
    def paths(self) -> np.ndarray:
        return self._row_array("paths")

    @property
    def labels(self) -> np.ndarray:
        return self._row_array("label")

    @property
    def splits(self) -> np.ndarray:
        return self._row_array("split")

    def status(self) -> np.ndarray:
        """Current status of every row (never cached: writers change it)."""
        return self._get("status", slice(None))

    def missing(self, modality: str) -> np.ndarray:
        name = f"{modality}_missing"
        if name not in self._group:
            return np.ones(self.n_rows, dtype=bool)
        return self._get(name, slice(None))

    def counts(self) -> dict[str, int]:
        st = self.status()
        return {STATUS_NAMES[k]: int((st == k).sum()) for k in STATUS_NAMES}

    def valid_rows(self, modalities: Iterable[str] = MODALITIES) -> np.ndarray:
        """Boolean mask: extraction done and every named modality present."""
        mask = self.status() == STATUS_DONE
        for m in modalities:
            mask &= ~self.missing(m)
            if m in self._group:
                self.check_chunks(m)  # readers of these rows (dask too) must not see zeros
        return mask

    def failures(self) -> list[Failure]:
        st = self.status()
        rows = np.flatnonzero(st == STATUS_FAILED)
        self.check_chunks("error")
        if rows.size == 0:
            return []
        err = self._get("error", slice(None))
        return [Failure(int(r), str(self.ids[r]), str(self.paths[r]), str(err[r])) for r in rows]

    def feature_arrays(self) -> list[str]:
        """Names of all 2-D per-row arrays (the modalities plus any written later)."""
        out = []
        for name in self.array_names():
            arr = self.array(name)
            if arr.ndim == 2 and arr.shape[0] == self.n_rows:
                out.append(name)
        return out

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # ------------------------------------------------------------------ shards
    def shard_ranges(self, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
        """Chunk-aligned ``(start, stop)`` row ranges covering ``[start, stop)``."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        c = self.chunk_rows
        out = []
        s = start
        while s < stop:
            e = min(stop, (s // c + 1) * c)
            out.append((s, e))
            s = e
        return out

    def iter_shards(
        self,
        arrays: Sequence[str] = MODALITIES,
        *,
        order: Sequence[int] | None = None,
    ) -> Iterator[Shard]:
        """Yield shards (one chunk of rows each) as NumPy arrays.

        ``order`` permutes the shard sequence (the trainer passes a shuffled order);
        reading whole chunks keeps each read a single decompression per array.
        """
        ranges = self.shard_ranges()
        if order is not None:
            ranges = [ranges[i] for i in order]
        zarrs = [self.array(a) for a in arrays]
        for s, e in ranges:
            yield Shard(
                s, e, {a: self._get(a, slice(s, e), z) for a, z in zip(arrays, zarrs, strict=True)}
            )

    def read(self, name: str, rows: slice | np.ndarray | Sequence[int]) -> np.ndarray:
        """Rows of array ``name``; ``rows`` is a slice or sorted/unsorted row indices."""
        if isinstance(rows, slice):
            return self._get(name, rows)
        arr = self.array(name)
        idx = np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        order = np.argsort(idx, kind="stable")
        out = self._get(name, (idx[order],) + (slice(None),) * (arr.ndim - 1), arr)
        result = np.empty_like(out)
        result[order] = out
        return result

    # ---------------------------------------------------------------- damage
    def fingerprint_problems(self) -> list[str]:
        """Recompute the fingerprint from the content it covers (reads the ids)."""
        fp = content_fingerprint(
            manifest_sha256=self.attrs.get("manifest_sha256", ""),
            n_rows=self.n_rows,
            modalities=self.attrs["modalities"],
            ids=[str(i) for i in self.ids.tolist()],
            dtype=self.dtype,
        )
        if fp != self.fingerprint:
            return [
                f"fingerprint {self.fingerprint} does not match the store's content (expected {fp})"
            ]
        return []

    def check_chunks(self, name: str) -> None:
        """Raise :class:`StoreDamaged` if a chunk of ``name`` is absent although written.

        One directory scan per array and handle; the rule per array is in
        featstore/store/integrity.py.
        """
        if name in self._checked:
            return
        integrity.check_chunks_present(self, name)
        self._checked.add(name)

    def forget_checks(self, name: str | None = None) -> None:
        """Check ``name`` (every array if None) again on its next read, after a write
        (and look its chunk layout up again: the array may have been replaced)."""
        if name is None:
            self._checked.clear()
            self._layouts.clear()
        else:
            self._checked.discard(name)
            self._layouts.pop(name, None)

    def find_damage(self, names: Iterable[str]) -> StoreDamaged | None:
        """The first damaged chunk of ``names`` as a StoreDamaged (not raised), or None.

        For readers that bypass :meth:`read` (``dask.array.from_zarr``): on a decoder
        error they call this to turn it into the one-line message naming the chunk.
        """
        for name in names:
            try:
                self.check_chunks(name)
                for s, e in self.shard_ranges():
                    self._get(name, slice(s, e))
            except StoreDamaged as exc:
                return exc
        return None

    def _get(self, name: str, sel: Any, arr: zarr.Array | None = None) -> np.ndarray:
        """Read ``arr[sel]`` (rows first); decoder failures become :class:`StoreDamaged`."""
        self.check_chunks(name)
        layout = None
        if isinstance(sel, slice) and sel.step in (None, 1):
            # the layout is looked up once per array: opening the zarr array took 0.7 ms
            # per read (its metadata read through zarr's event loop), twice per block
            if name not in self._layouts:
                self._layouts[name] = ChunkLayout.of(self.array(name) if arr is None else arr)
            layout = self._layouts[name]
        if layout is None:
            arr = self.array(name) if arr is None else arr
        try:
            if layout is not None:  # decoded in this thread (see chunkread's docstring)
                s, e, _ = sel.indices(layout.shape[0])
                return layout.read_rows(s, e)
            assert arr is not None
            if isinstance(sel, tuple) and sel and isinstance(sel[0], np.ndarray):
                return np.asarray(arr.get_orthogonal_selection(sel))
            return np.asarray(arr[sel])
        except DiccaeError:
            raise
        except Exception as exc:  # noqa: BLE001 - zstd, JSON, reshape ... all mean damage
            arr = self.array(name) if arr is None else arr
            rows = sel[0] if isinstance(sel, tuple) else sel
            if isinstance(rows, slice):
                s, e, _ = rows.indices(self.n_rows)
            else:
                idx = np.asarray(rows)
                s, e = (int(idx.min()), int(idx.max()) + 1) if idx.size else (0, 0)
            c = self.chunk_rows
            for k in range(s // c, max(s // c + 1, -(-e // c))):
                ks, ke = k * c, min((k + 1) * c, self.n_rows)
                try:
                    np.asarray(arr[ks:ke])
                except Exception:  # noqa: BLE001
                    raise integrity.damaged(
                        self.path,
                        name,
                        k,
                        ks,
                        ke,
                        f"cannot be decoded ({type(exc).__name__}: {exc})",
                    ) from None
            raise StoreDamaged(
                f"{self.path}: array {name!r} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
