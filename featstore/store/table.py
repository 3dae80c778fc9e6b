"""The per-row table of a store (ids, paths, splits, labels, status ...) as pandas.

It lives with the store because ``FeatureStore.to_pandas`` returns it; the
notebook views in :mod:`featstore.analysis.dataset` build on the same helpers.
pandas is optional (``pip install 'diccae[analysis]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from featstore.errors import BackendUnavailable, InputError
from featstore.store.schema import STATUS_NAMES

if TYPE_CHECKING:
    from featstore.store.core import FeatureStore

#: per-row scalar columns of :func:`store_table`, in their default order
TABLE_COLUMNS = (
    "id",
    "path",
    "split",
    "label",
    "class_name",
    "status",
    "audio_missing",
    "video_missing",
    "error",
)
_ARRAY_OF = {
    "id": "ids",
    "path": "paths",
    "split": "split",
    "label": "label",
    "status": "status",
    "audio_missing": "audio_missing",
    "video_missing": "video_missing",
    "error": "error",
}


def require_optional(module: str) -> Any:
    """Import an optional dependency or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"{module} is not installed; install the analysis extra: pip install 'diccae[analysis]'"
        ) from exc


def class_name_table(store: FeatureStore, n: int | None = None) -> np.ndarray:
    """Names indexed by label value; labels beyond the store's names get ``class <v>``."""
    names = list(store.class_names)
    n = max(len(names), n or 0)
    return np.asarray(names + [f"class {v}" for v in range(len(names), n)], dtype=object)


def names_for(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape, "", dtype=object)
    ok = (labels >= 0) & (labels < len(table))
    out[ok] = table[labels[ok]]
    return out


def rows_table(
    store: FeatureStore,
    columns: Sequence[str] | None = None,
    *,
    rows: slice | np.ndarray | Sequence[int] | None = None,
) -> Any:
    """The per-row table as a ``pandas.DataFrame`` indexed by store row.

    ``columns`` picks from ``id, path, split, label, class_name, status,
    audio_missing, video_missing, error`` (default: all of them) and any feature array
    name, which expands to one column per dimension (``audio_0`` ...).  Only the
    named columns (and ``rows``) are read.  ``status`` is given by name
    (pending/done/failed) as a categorical.
    """
    pd = require_optional("pandas")
    cols = list(TABLE_COLUMNS if columns is None else columns)
    features = store.feature_arrays()
    bad = [c for c in cols if c not in TABLE_COLUMNS and c not in features]
    if bad:
        raise InputError(
            f"{store.path}: unknown column {bad[0]!r}; choose from {', '.join(TABLE_COLUMNS)} "
            f"or a feature array ({', '.join(features)})"
        )
    sel: slice | np.ndarray
    if rows is None or isinstance(rows, slice):
        sel = slice(None) if rows is None else rows
    else:
        sel = np.asarray(rows, dtype=np.int64)
        if sel.size and (sel.min() < 0 or sel.max() >= store.n_rows):
            raise InputError(f"rows must lie within 0..{store.n_rows - 1}")
    index = np.arange(store.n_rows)[sel]
    out: dict[str, Any] = {}
    label = None
    for c in cols:
        if c in features:
            block = store.read(c, sel)
            if block.dtype == np.float16:  # pandas handles float16 poorly
                block = block.astype(np.float32)
            for j in range(block.shape[1]):
                out[f"{c}_{j}"] = block[:, j]
            continue
        if c == "class_name" or c == "label":
            if label is None:
                label = store.read("label", sel).astype(np.int64)
            out[c] = (
                label
                if c == "label"
                else names_for(label, class_name_table(store, int(label.max(initial=-1)) + 1))
            )
            continue
        name = _ARRAY_OF[c]
        if name not in store.array_names():  # e.g. a store without video
            out[c] = np.ones(index.size, dtype=bool)
            continue
        values = store.read(name, sel)
        if c == "status":
            codes = sorted(STATUS_NAMES)
            values = pd.Categorical.from_codes(
                values.astype(np.int64), [STATUS_NAMES[k] for k in codes]
            )
        elif values.dtype.kind in "OUT":
            values = np.asarray(values, dtype=object)
        out[c] = values
    return pd.DataFrame(out, index=pd.Index(index, name="row"))
