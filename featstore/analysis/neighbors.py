"""Nearest clips of a clip, with faiss: exact for small stores, a saved IVF index for large.

For a store up to ``exact_max_rows`` usable rows the search is exact and streamed
(``faiss.knn`` per block, top-k merged), one read of the feature view per query and
no file written.  Larger stores get an IVF index (scalar-quantised to float16, the
store's own default precision) built once and saved *beside* the store as
``STORE.neighbors/<features>.faiss`` with a JSON sidecar.  The sidecar's key hashes
the store fingerprint, the feature view, the set of rows indexed and the feature
arrays' metadata, so the index is rebuilt when the store is replaced, when rows
finish or fail, or when a feature array is rewritten, and reused otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.dataset import as_store, class_name_table
from featstore.common.fileio import atomic_write_path
from featstore.errors import BackendUnavailable, InputError, StoreError
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, feature_view

INDEX_VERSION = 1


@dataclass
class NeighborsConfig:
    """How ``diccae neighbors`` searches."""

    k: int = 10
    features: str = COMBINED
    method: str = "auto"  # auto | exact | ivf
    exact_max_rows: int = 200_000  # above this, auto uses the saved IVF index
    nlist: int | None = None  # IVF lists; default ~4 sqrt(N)
    nprobe: int = 32
    rebuild: bool = False
    rows_per_block: int = 65536

    def check(self) -> None:
        if self.k < 1:
            raise InputError(f"--k must be >= 1, got {self.k}")
        if self.method not in ("auto", "exact", "ivf"):
            raise InputError(f"--method must be auto, exact or ivf, got {self.method!r}")
        if self.nprobe < 1:
            raise InputError(f"--nprobe must be >= 1, got {self.nprobe}")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise BackendUnavailable("neighbours need faiss-cpu (pip install faiss-cpu)") from exc
    return faiss


def find_row(
    store: FeatureStore, *, clip_id: str | None = None, path: str | Path | None = None
) -> int:
    """The store row of a clip id or media path (exact match, then resolved path)."""
    if (clip_id is None) == (path is None):
        raise InputError("give exactly one of --id ID or --path CLIP")
    if clip_id is not None:
        hits = np.flatnonzero(store.ids == str(clip_id))
        if hits.size == 0:
            raise InputError(f"{store.path}: no clip with id {clip_id!r}")
        return int(hits[0])
    paths = store.paths
    hits = np.flatnonzero(paths == str(path))
    if hits.size == 0 and path is not None:
        want = str(Path(path).expanduser().resolve())
        hits = np.flatnonzero([str(Path(p).expanduser().resolve()) == want for p in paths.tolist()])
    if hits.size == 0:
        raise InputError(
            f"{store.path}: no clip with path {str(path)!r} (only clips in the store can be queried; "
            "extract new clips into a store first)"
        )
    return int(hits[0])


def index_paths(store: FeatureStore, features: str) -> tuple[Path, Path]:
    folder = store.path.parent / f"{store.path.name}.neighbors"
    safe = features.replace("/", "_")
    return folder / f"{safe}.faiss", folder / f"{safe}.json"


def index_key(store: FeatureStore, features: str, valid: np.ndarray) -> str:
    """What the saved index depends on; any change means a rebuild."""
    h = hashlib.sha256()
    h.update(f"v{INDEX_VERSION}|{store.fingerprint}|{features}|".encode())
    h.update(np.packbits(valid).tobytes())
    parts = list(MODALITIES) if features == COMBINED else [features]
    for p in parts:
        meta = store.path / p / "zarr.json"
        if meta.is_file():
            h.update(meta.read_bytes())
    return h.hexdigest()


def _exact(
    store: FeatureStore, features: str, q: np.ndarray, k: int, rows_per_block: int
) -> tuple[np.ndarray, np.ndarray]:
    faiss = _faiss()
    best_d = np.full(0, np.inf, np.float32)
    best_i = np.full(0, -1, np.int64)
    for rows, x in feature_view(store, features).iter_blocks(rows_per_block=rows_per_block):
        d, i = faiss.knn(q, np.ascontiguousarray(x), min(k, x.shape[0]))
        best_d = np.concatenate([best_d, d[0]])
        best_i = np.concatenate([best_i, rows[i[0]]])
        keep = np.argsort(best_d, kind="stable")[:k]
        best_d, best_i = best_d[keep], best_i[keep]
    return best_d, best_i


def build_ivf(
    store: FeatureStore,
    features: str,
    *,
    nlist: int | None = None,
    rows_per_block: int = 65536,
    progress: ProgressFn | None = None,
) -> Path:
    """Build and save the IVF index of ``features``; returns its path."""
    faiss = _faiss()
    view = feature_view(store, features)
    valid = view.valid_mask()
    n = int(valid.sum())
    if n == 0:
        raise InputError(f"{store.path}: no usable rows for {features!r} to index")
    nlist = int(nlist or min(65536, max(1, int(4 * math.sqrt(n)))))
    nlist = max(1, min(nlist, n // 39))  # faiss wants >= 39 training points per list
    train_rows = min(n, max(64 * nlist, 20_000))
    stride = max(1, n // train_rows)
    sample = []
    for _rows, x in view.iter_blocks(rows_per_block=rows_per_block):
        sample.append(x[::stride])
    train = np.ascontiguousarray(np.concatenate(sample)[:train_rows])

    quantizer = faiss.IndexFlatL2(view.dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, view.dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2
    )
    index.train(train)
    with ProgressTask(
        progress, "ivf-index", total=store.n_rows, description=f"indexing {features} (IVF{nlist})"
    ) as bar:
        for rows, x in view.iter_blocks(rows_per_block=rows_per_block):
            index.add_with_ids(np.ascontiguousarray(x), rows.astype(np.int64))
            bar.update(completed=int(rows[-1]) + 1)
    path, meta = index_paths(store, features)
    atomic_write_path(path, lambda p: faiss.write_index(index, str(p)))
    doc = {
        "version": INDEX_VERSION,
        "key": index_key(store, features, valid),
        "store": str(store.path),
        "features": features,
        "rows": n,
        "nlist": nlist,
        "kind": "IVF,SQfp16",
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_path(meta, lambda p: p.write_text(json.dumps(doc, indent=1)))
    return path


def load_ivf(
    store: FeatureStore,
    features: str,
    *,
    rebuild: bool = False,
    nlist: int | None = None,
    rows_per_block: int = 65536,
    progress: ProgressFn | None = None,
) -> tuple[Any, bool, Path]:
    """The saved index, rebuilt first when missing, stale or ``rebuild``: ``(index, rebuilt, path)``."""
    faiss = _faiss()
    path, meta = index_paths(store, features)
    valid = feature_view(store, features).valid_mask()
    fresh = False
    if not rebuild and path.is_file() and meta.is_file():
        try:
            fresh = json.loads(meta.read_text()).get("key") == index_key(store, features, valid)
        except ValueError:
            fresh = False
    if not fresh:
        build_ivf(store, features, nlist=nlist, rows_per_block=rows_per_block, progress=progress)
    try:
        return faiss.read_index(str(path)), not fresh, path
    except RuntimeError as exc:
        raise StoreError(f"{path}: damaged neighbour index ({exc}); rerun with --rebuild") from exc


def nearest_neighbors(
    store: FeatureStore | str | Path,
    *,
    clip_id: str | None = None,
    path: str | Path | None = None,
    config: NeighborsConfig | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The ``k`` nearest clips to one clip of the store (itself excluded), by L2 distance
    in the feature view (``audio+video`` = per-modality L2-normalised, concatenated)."""
    cfg = config or NeighborsConfig()
    cfg.check()
    store = as_store(store)
    row = find_row(store, clip_id=clip_id, path=path)
    view = feature_view(store, cfg.features)
    valid = view.valid_mask()
    if not valid[row]:
        raise InputError(
            f"{store.path}: clip {store.ids[row]!r} (row {row}) has no {cfg.features} features "
            "(failed, pending or missing a modality)"
        )
    parts = list(MODALITIES) if cfg.features == COMBINED else [cfg.features]
    from featstore.store.features import assemble_block

    raw = [store.read(p, slice(row, row + 1)) for p in parts]
    _r, q = assemble_block(
        raw,
        np.array([0]),
        row,
        combined=cfg.features == COMBINED,
        extra=parts[0] not in MODALITIES,
        what=f"{cfg.features} of {store.path}",
    )
    if q.shape[0] == 0:
        raise InputError(
            f"{store.path}: clip {store.ids[row]!r} has no {cfg.features} values (NaN)"
        )
    n = int(valid.sum())
    method = cfg.method if cfg.method != "auto" else ("exact" if n <= cfg.exact_max_rows else "ivf")
    t0 = time.perf_counter()
    rebuilt, index_path = False, None
    if method == "exact":
        d2, rows = _exact(store, cfg.features, q, cfg.k + 1, cfg.rows_per_block)
    else:
        index, rebuilt, index_path = load_ivf(
            store,
            cfg.features,
            rebuild=cfg.rebuild,
            nlist=cfg.nlist,
            rows_per_block=cfg.rows_per_block,
            progress=progress,
        )
        index.nprobe = min(cfg.nprobe, index.nlist)
        d2, rows = index.search(q, cfg.k + 1)
        d2, rows = d2[0], rows[0]
    keep = (rows >= 0) & (rows != row)
    d2, rows = d2[keep][: cfg.k], rows[keep][: cfg.k]
    labels = store.labels
    names = class_name_table(store, int(labels.max(initial=-1)) + 1)

    def describe(r: int) -> dict[str, Any]:
        lab = int(labels[r])
        return {
            "row": int(r),
            "id": str(store.ids[r]),
            "path": str(store.paths[r]),
            "label": lab,
            "class_name": str(names[lab]) if lab >= 0 else "",
        }

    return {
        "query": describe(row),
        "features": cfg.features,
        "method": method,
        "index": None if index_path is None else str(index_path),
        "rebuilt": rebuilt,
        "seconds": round(time.perf_counter() - t0, 4),
        "neighbors": [
            {"rank": i + 1, **describe(int(r)), "distance": float(np.sqrt(max(float(d), 0.0)))}
            for i, (d, r) in enumerate(zip(d2, rows, strict=True))
        ],
    }
