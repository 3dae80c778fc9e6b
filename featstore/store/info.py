"""What is in a store, as one JSON-ready dictionary.

``diccae store info`` renders :func:`store_info` as tables (cli/render_store.py);
``--json`` prints the dictionary itself, so a script sees exactly what a person sees.
Nothing here writes to the store, and large arrays are only read chunk by chunk.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from featstore.store.core import FeatureStore, as_store
from featstore.store.schema import MODALITIES


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rows_with_values(store: FeatureStore, name: str) -> int:
    """Rows of an extra feature array that hold numbers (NaN marks 'not computed')."""
    total = 0
    for s, e in store.shard_ranges():
        block = np.asarray(store.read(name, slice(s, e)), dtype=np.float32)
        total += int(np.isfinite(block).all(axis=1).sum())
    return total


def _class_table(store: FeatureStore) -> list[dict[str, Any]]:
    """One entry per class name and per label value that occurs, with row counts."""
    labels = store.labels
    status = store.status()
    names = store.class_names
    total = Counter(labels.tolist())
    done = Counter(labels[status == 1].tolist())
    ids = sorted(set(range(len(names))) | {k for k in total if k >= 0})
    out = [
        {
            "label": int(k),
            "name": names[k] if 0 <= k < len(names) else None,
            "rows": int(total.get(k, 0)),
            "done": int(done.get(k, 0)),
        }
        for k in ids
    ]
    if total.get(-1):
        out.append(
            {"label": -1, "name": None, "rows": int(total[-1]), "done": int(done.get(-1, 0))}
        )
    return out


def store_info(store: FeatureStore | str | Path, *, failures: bool = False) -> dict[str, Any]:
    """Summarise a store as JSON-serialisable data.

    Keys: ``path``, ``format``, ``format_version``, ``diccae_version``, ``source``,
    ``fingerprint``, ``manifest_sha256``, ``n_rows``, ``status`` (done/failed/pending),
    ``dtype``, ``chunk_rows``, ``n_chunks``, ``bytes_on_disk``, ``modalities`` (per
    modality encoder, weights, pretrained, dim, config, rows missing, bytes), ``classes``
    (label, name, rows, done), ``splits`` (name -> rows), ``extra_arrays`` (name -> dim,
    dtype, rows with values, attrs, bytes) and, with ``failures=True``, ``failures``
    (row, id, path, reason for every failed clip).
    """
    store = as_store(store)
    attrs = store.attrs
    status = store.counts()
    modalities = {}
    for name, spec in store.modalities.items():
        store.check_chunks(name)  # a deleted chunk of done rows is damage, not "0 missing"
        modalities[name] = {
            "encoder": spec.encoder,
            "weights": spec.weights,
            "pretrained": spec.pretrained,
            "dim": spec.dim,
            "config": spec.config,
            "missing": int(store.missing(name).sum()),
            "bytes": _dir_bytes(store.path / name),
        }
    extra = {}
    for name in store.feature_arrays():
        if name in MODALITIES:
            continue
        arr = store.array(name)
        extra[name] = {
            "dim": int(arr.shape[1]),
            "dtype": str(arr.dtype),
            "rows_with_values": _rows_with_values(store, name),
            "attrs": dict(arr.attrs),
            "bytes": _dir_bytes(store.path / name),
        }
    splits = Counter(str(s) for s in store.splits.tolist())
    info: dict[str, Any] = {
        "path": str(store.path),
        "format": attrs.get("format"),
        "format_version": attrs.get("format_version"),
        "diccae_version": attrs.get("diccae_version"),
        "source": attrs.get("source"),
        "fingerprint": store.fingerprint,
        "manifest_sha256": attrs.get("manifest_sha256", ""),
        "n_rows": store.n_rows,
        "status": status,
        "dtype": store.dtype,
        "compression": store.compression,
        "chunk_rows": store.chunk_rows,
        "n_chunks": len(store.shard_ranges()),
        "bytes_on_disk": store.bytes_on_disk(),
        "modalities": modalities,
        "classes": _class_table(store),
        "splits": dict(sorted(splits.items())),
        "extra_arrays": extra,
    }
    if failures:
        info["failures"] = [
            {"row": f.row, "id": f.id, "path": f.path, "reason": f.reason} for f in store.failures()
        ]
    return info
