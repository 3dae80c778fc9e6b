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

from featstore.errors import InputError
from featstore.store.core import MODALITIES, STATUS_NAMES, FeatureStore, as_store
from featstore.store.table import (
    TABLE_COLUMNS,
    class_name_table,
    names_for,
    require_optional,
    rows_table,
)

#: coordinates of :func:`open_dataset`
COORDS = ("id", "label", "class_name", "split", "status", "path")


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
    xr = require_optional("xarray")
    da = require_optional("dask.array")
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
    class_name = label.map_blocks(names_for, table, dtype=object, meta=np.empty((0,), dtype=object))
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
    """The per-row table of ``store`` (an open store or its path) as a pandas DataFrame;
    see :func:`featstore.store.table.rows_table` (``FeatureStore.to_pandas`` is the same)."""
    return rows_table(as_store(store), columns, rows=rows)


__all__ = ["COORDS", "TABLE_COLUMNS", "as_store", "class_name_table", "open_dataset", "store_table"]
