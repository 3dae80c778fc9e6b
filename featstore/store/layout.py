"""Lay out a new store: every array, its chunking and the provenance attributes.

:meth:`FeatureStore.create <featstore.store.core.FeatureStore.create>` is a thin
wrapper around :func:`create_group`.  Everything is validated before the disk is
touched, so a bad call leaves nothing behind; every row starts pending.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import featstore.store.integrity as integrity
from featstore.errors import InputError, StoreError
from featstore.store.schema import (
    DTYPES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MODALITIES,
    STATUS_PENDING,
    ModalitySpec,
    compressors,
    content_fingerprint,
    diccae_version,
    is_store_dir,
    row_strings,
)
from featstore.store.structure import reseal


def create_group(
    path: Path,
    *,
    ids: Sequence[str],
    modalities: dict[str, ModalitySpec],
    labels: Sequence[int] | np.ndarray | None,
    splits: Sequence[str] | None,
    paths: Sequence[str] | None,
    class_names: Sequence[str],
    chunk_rows: int,
    dtype: str,
    compression: str,
    manifest_sha256: str,
    source: str,
    overwrite: bool,
    extra_attrs: dict[str, Any] | None,
) -> zarr.Group:
    """Create the Zarr group of a new store at ``path`` (see FeatureStore.create)."""
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be >= 1, got {chunk_rows}")
    codecs = compressors(compression)
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise InputError(f"unknown modalities {sorted(unknown)}; expected {MODALITIES}")
    n = len(ids)
    # validate everything before touching the disk: a bad call leaves nothing behind
    ids_arr = row_strings(ids, n, "id")
    paths_arr = row_strings(paths, n, "path")
    splits_arr = row_strings(splits, n, "split")
    if len(set(ids_arr.tolist())) != n:
        seen: set[str] = set()
        for dup, v in enumerate(ids_arr.tolist()):
            if v in seen:
                raise InputError(f"duplicate clip id {v!r} at row {dup}")
            seen.add(v)
    label_arr = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, np.int32)
    if label_arr.shape != (n,):
        raise InputError(f"expected {n} labels, got {label_arr.shape}")
    if path.exists():
        if not overwrite:
            raise StoreError(f"{path} already exists (use --overwrite to start fresh)")
        if path.is_dir() and any(path.iterdir()) and not is_store_dir(path):
            raise StoreError(f"{path} exists and is not a diccae store; refusing to replace it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    rows = chunk_rows  # kept as requested: a small store is one partial chunk
    row_dims = ("row",)
    for name, spec in modalities.items():
        group.create_array(
            name,
            shape=(n, spec.dim),
            chunks=(rows, spec.dim),
            dtype=dtype,
            fill_value=0,
            dimension_names=("row", f"{name}_dim"),
            compressors=codecs,
        )
        group.create_array(
            f"{name}_missing",
            shape=(n,),
            chunks=(rows,),
            dtype="bool",
            fill_value=False,
            dimension_names=row_dims,
        )
    group.create_array(
        "status",
        shape=(n,),
        chunks=(rows,),
        dtype="uint8",
        fill_value=STATUS_PENDING,
        dimension_names=row_dims,
    )
    label = group.create_array(
        "label", shape=(n,), chunks=(rows,), dtype="int32", fill_value=-1, dimension_names=row_dims
    )
    for name, values in (
        ("ids", ids_arr),
        ("paths", paths_arr),
        ("split", splits_arr),
        ("error", row_strings(None, n, "error")),
    ):
        arr = group.create_array(
            name, shape=(n,), chunks=(rows,), dtype=str, fill_value="", dimension_names=row_dims
        )
        if n and name != "error":
            arr[:] = values
    if n:
        label[:] = label_arr

    specs_json = {k: v.to_json() for k, v in sorted(modalities.items())}
    fingerprint = content_fingerprint(
        manifest_sha256=manifest_sha256,
        n_rows=n,
        modalities=specs_json,
        ids=ids_arr.tolist(),
        dtype=dtype,
    )
    group.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "diccae_version": diccae_version(),
            "source": source,
            "n_rows": n,
            "chunk_rows": rows,
            "dtype": dtype,
            "compression": compression,
            "class_names": [str(c) for c in class_names],
            "modalities": specs_json,
            "manifest_sha256": manifest_sha256,
            "fingerprint": fingerprint,
            **(extra_attrs or {}),
        }
    )
    group.create_group(integrity.LEDGER_GROUP)
    n_chunks = -(-n // rows)
    integrity.write_created(path, {a: group[a] for a in integrity.CREATION_ARRAYS}, n_chunks)
    reseal(group)
    return group
