"""Notebook views of a store: a lazy ``xarray.Dataset`` and a per-row pandas table.

Both are thin wrappers over the Zarr arrays, so a researcher can slice, group and
plot stored embeddings with the tools they already use.  Laziness is the point: a
store of millions of rows opens in milliseconds and only the chunks a computation
touches are read.  xarray and pandas are optional (``pip install 'diccae[analysis]'``);
nothing else in diccae imports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import BackendUnavailable, InputError
from featstore.store.core import MODALITIES, STATUS_NAMES, FeatureStore

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
#: coordinates of :func:`open_dataset`
COORDS = ("id", "label", "class_name", "split", "status", "path")
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


def _require(module: str) -> Any:
    """Import an optional dependency or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"{module} is not installed; install the analysis extra: pip install 'diccae[analysis]'"
        ) from exc


def as_store(store: FeatureStore | str | Path) -> FeatureStore:
    return store if isinstance(store, FeatureStore) else FeatureStore.open(store)


def class_name_table(store: FeatureStore, n: int | None = None) -> np.ndarray:
    """Names indexed by label value; labels beyond the store's names get ``class <v>``."""
    names = list(store.class_names)
    n = max(len(names), n or 0)
    return np.asarray(names + [f"class {v}" for v in range(len(names), n)], dtype=object)


def _names_for(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    out = np.full(labels.shape, "", dtype=object)
    ok = (labels >= 0) & (labels < len(table))
    out[ok] = table[labels[ok]]
    return out


def open_dataset(
    store: FeatureStore | str | Path,
    *,
    features: Sequence[str] | None = None,
    chunk_rows: int | None = None,
) -> Any:
    """The store as an ``xarray.Dataset`` of Dask arrays; nothing is read until used.

    Data variables: every 2-D feature array (``audio``, ``video`` and extras such as
    fused features, or only ``features``) with dims ``("row", "<name>_dim")``, plus
    ``audio_missing``/``video_missing``.  Coordinates along ``row``: ``id``, ``label``
    (-1 unknown), ``class_name`` (from the store's class names; "" when unknown),
    ``split``, ``status`` (0 pending, 1 done, 2 failed) and ``path``.  They are Dask
    arrays too, so ``ds.audio.where(ds.status == 1)`` reads only what it needs;
    ``chunk_rows`` groups store chunks (default: one store chunk per Dask chunk).
    Attributes carry the store's fingerprint, class names and encoder specs.
    """
    xr = _require("xarray")
    da = _require("dask.array")
    store = as_store(store)
    available = store.feature_arrays()
    wanted = list(available if features is None else features)
    unknown = [f for f in wanted if f not in available]
    if unknown:
        raise InputError(
            f"{store.path}: no feature array {unknown[0]!r} (has: {', '.join(available)})"
        )
    rows = store.chunk_rows if chunk_rows is None else int(chunk_rows)
    if rows < 1:
        raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    rows = max(store.chunk_rows, rows // store.chunk_rows * store.chunk_rows)

    def lazy(name: str) -> Any:
        arr = store.array(name)
        return da.from_zarr(arr, chunks=(rows, *arr.shape[1:]), inline_array=True)

    data_vars: dict[str, Any] = {}
    for name in wanted:
        data_vars[name] = (("row", f"{name}_dim"), lazy(name))
    for m in MODALITIES:
        if f"{m}_missing" in store.array_names():
            data_vars[f"{m}_missing"] = (("row",), lazy(f"{m}_missing"))
    label = lazy("label")
    table = class_name_table(store)
    class_name = label.map_blocks(
        _names_for, table, dtype=object, meta=np.empty((0,), dtype=object)
    )
    coords = {
        "id": ("row", lazy("ids")),
        "label": ("row", label),
        "class_name": ("row", class_name),
        "split": ("row", lazy("split")),
        "status": ("row", lazy("status")),
        "path": ("row", lazy("paths")),
    }
    attrs = {
        "store": str(store.path),
        "fingerprint": store.fingerprint,
        "class_names": list(store.class_names),
        "status_names": [STATUS_NAMES[k] for k in sorted(STATUS_NAMES)],
        "encoders": {k: v.encoder for k, v in store.modalities.items()},
        "dtype": store.dtype,
    }
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)


def store_table(
    store: FeatureStore | str | Path,
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
    pd = _require("pandas")
    store = as_store(store)
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
                else _names_for(label, class_name_table(store, int(label.max(initial=-1)) + 1))
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
