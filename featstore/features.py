"""Which numbers a stage works on: the feature view over a store.

Clustering and the confusion analysis both take ``--features``:

* ``audio`` / ``video``: the stored embeddings as they are;
* ``audio+video`` (default): each modality L2-normalised per row, then concatenated,
  so neither modality dominates the distance by its scale;
* any other 2-D array in the store (e.g. fused features written by the trainer).

Rows that failed extraction or lack a needed modality are not part of the view; for
extra arrays, rows whose values are NaN (not computed) are skipped too.  Callers get
the row indices with every block so results can be written back per store row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.backend import get_array_module
from featstore.errors import InputError
from featstore.store import MODALITIES, FeatureStore

COMBINED = "audio+video"


def l2_normalize(x: Any, eps: float = 1e-12) -> Any:
    """Row-wise L2 normalisation for NumPy or CuPy arrays (zero rows stay zero)."""
    xp = get_array_module(x)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are reported by callers
        norms = xp.sqrt((x * x).sum(axis=1, keepdims=True))
        return x / xp.maximum(norms, eps)


@dataclass
class FeatureView:
    """A read-only view of one feature choice over a store, streamed by chunks."""

    store: FeatureStore
    name: str

    def __post_init__(self) -> None:
        available = self.store.feature_arrays()
        if self.name == COMBINED:
            lacking = [m for m in MODALITIES if m not in available]
            if lacking:
                raise InputError(f"{self.store.path}: --features {COMBINED} needs {lacking} in the store")
            self._parts = list(MODALITIES)
        elif self.name in available:
            self._parts = [self.name]
        else:
            raise InputError(
                f"{self.store.path}: no feature array {self.name!r}; choose one of "
                f"{', '.join([COMBINED, *available])}"
            )

    @property
    def dim(self) -> int:
        return sum(int(self.store.array(p).shape[1]) for p in self._parts)

    def valid_mask(self) -> np.ndarray:
        """Rows that take part: extraction done and the needed modalities present."""
        needed = [p for p in self._parts if p in MODALITIES]
        if not needed:  # an extra array (e.g. fused features) needs both modalities
            needed = list(self.store.modalities)
        return self.store.valid_rows(needed)

    def iter_blocks(self, rows_per_block: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(row_indices, X)`` with X float32, only valid rows, in store order.

        Blocks are whole chunks (or groups of chunks up to ``rows_per_block``), so
        each chunk is decompressed exactly once per pass.
        """
        mask = self.valid_mask()
        ranges = self.store.shard_ranges()
        step = max(1, (rows_per_block or self.store.chunk_rows) // self.store.chunk_rows)
        arrays = [self.store.array(p) for p in self._parts]
        for i in range(0, len(ranges), step):
            s, e = ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1]
            keep = np.flatnonzero(mask[s:e])
            if keep.size == 0:
                continue
            parts = [np.asarray(a[s:e], dtype=np.float32)[keep] for a in arrays]
            if self.name == COMBINED:
                parts = [l2_normalize(p) for p in parts]
            x = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
            rows = keep + s
            if self._is_extra:  # extra arrays mark "not computed" rows as all-NaN
                computed = ~np.isnan(x).all(axis=1)
                rows, x = rows[computed], x[computed]
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                bad = rows[~finite][:5].tolist()
                raise InputError(f"{self.store.path}: non-finite values in {self.name} at rows {bad}")
            yield rows, x

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
