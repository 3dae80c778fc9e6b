"""Versioned cluster-label files: write, read (with refusal), and their size plot.

A label file is the hand-off between clustering and training, and training runs for
hours on it, so it has to be impossible to use the wrong one by accident:

* ``LABELS.npy``: int32, one entry per store row, ``-1`` = not clustered; plain
  NumPy format, loadable with ``numpy.load(path, allow_pickle=False)``.
* ``LABELS.npy.json``: how it was made (K, inertia of every restart, seed, backend,
  features...), the store's fingerprint, the refinement round and the parent file,
  and the SHA-256 of the label bytes, so a reader notices a label file paired with
  metadata from another run (e.g. a crash between the two renames).

Both are written to temporary files and moved into place with ``os.replace``, so a
crash never leaves a half-written file.  See docs/label-files.md.  Renumbering between
rounds is :mod:`featstore.labels.align`; making a file from a store is :mod:`featstore.labels.make`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.fileio import atomic_write_path, json_safe, write_temp
from featstore.errors import InputError, LabelFileError
from featstore.store.core import FeatureStore, diccae_version

LABEL_FORMAT = "diccae-labels"
LABEL_FORMAT_VERSION = 1


@dataclass
class LabelFileMeta:
    """Everything needed to reproduce, trust and chain a label file."""

    k: int
    inertia: float
    inertias: list[float]
    n_iter: int
    seed: int | None
    backend: str
    features: str
    store_fingerprint: str
    round: int = 0
    parent: str | None = None
    created: str = ""
    n_rows: int = 0
    n_clustered: int = 0
    diccae_version: str = ""
    n_init: int = 1
    max_iter: int = 0
    tol: float = 0.0
    device: str = "cpu"
    restart_sample: int = 0
    best_restart: int = 0
    n_reseeded: int = 0
    seconds: float = 0.0
    aligned_to: str | None = None
    alignment: dict[str, Any] | None = None
    agreement: dict[str, Any] | None = None
    #: what ``auto`` chose and why: kernel, restart sample, seeding (KMeans.choice_)
    choice: dict[str, Any] | None = None
    store_path: str = ""
    labels_sha256: str = ""
    format: str = LABEL_FORMAT
    format_version: int = LABEL_FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LabelFileMeta:
        if not isinstance(d, dict):
            raise LabelFileError("label metadata is not a JSON object")
        names = {f.name for f in fields(cls)}
        required = (
            "k",
            "inertia",
            "inertias",
            "n_iter",
            "seed",
            "backend",
            "features",
            "store_fingerprint",
            "labels_sha256",
            "format",
            "format_version",
        )
        missing = [r for r in required if r not in d]
        if missing:
            raise LabelFileError(f"label metadata lacks {missing}")
        known = {k: v for k, v in d.items() if k in names}
        unknown = {k: v for k, v in d.items() if k not in names}
        meta = cls(**known)
        meta.extra = {**meta.extra, **unknown}
        try:
            meta.k = int(meta.k)
            meta.n_rows = int(meta.n_rows)
            # null is how a non-finite inertia is written (Infinity is not JSON)
            meta.inertia = float("inf") if meta.inertia is None else float(meta.inertia)
            meta.inertias = [float("inf") if v is None else float(v) for v in meta.inertias]
        except (TypeError, ValueError) as exc:
            raise LabelFileError(f"label metadata has a malformed field: {exc}") from exc
        return meta


def meta_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def plot_path(path: str | Path) -> Path:
    """``LABELS.npy`` -> ``LABELS.png`` (the cluster-size histogram)."""
    path = Path(path)
    return path.with_suffix(".png") if path.suffix == ".npy" else path.with_name(path.name + ".png")


def labels_sha256(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int32).tobytes()).hexdigest()


def _check_values(labels: np.ndarray, k: int, where: str) -> None:
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < -1 or hi >= k:
            bad = np.flatnonzero((labels < -1) | (labels >= k))
            raise LabelFileError(
                f"{where}: label values must lie in [-1, {k - 1}] (K={k}); rows {bad[:10].tolist()} hold "
                f"{labels[bad[:10]].tolist()}"
            )


def write_label_file(path: str | Path, labels: np.ndarray, meta: LabelFileMeta) -> None:
    """Write ``LABELS.npy`` and ``LABELS.npy.json`` atomically (temp files + os.replace).

    Both temp files are complete before either is moved into place; the JSON holds
    the labels' SHA-256, so the pair can be checked on reading.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    labels = labels.astype(np.int32, copy=False)
    _check_values(labels, meta.k, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.n_rows = int(labels.shape[0])
    meta.n_clustered = int((labels >= 0).sum())
    meta.labels_sha256 = labels_sha256(labels)
    meta.created = meta.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta.diccae_version = meta.diccae_version or diccae_version()
    text = (
        json.dumps(json_safe(meta.to_json()), indent=2, sort_keys=False, allow_nan=False).encode()
        + b"\n"
    )
    tmp_npy = write_temp(path, lambda f: np.save(f, labels, allow_pickle=False))
    try:
        tmp_json = write_temp(meta_path(path), lambda f: f.write(text))
    except BaseException:
        tmp_npy.unlink(missing_ok=True)
        raise
    os.replace(tmp_npy, path)
    os.replace(tmp_json, meta_path(path))


def read_label_file(
    path: str | Path, store: FeatureStore | str | Path | None = None
) -> tuple[np.ndarray, LabelFileMeta]:
    """Load and check a label file; with ``store``, also check it belongs to that store.

    Raises LabelFileError naming the file and what is wrong: unreadable or pickled
    data, wrong dtype/shape, missing or garbled JSON, labels that do not match their
    metadata, values outside [-1, K-1], a length or fingerprint that differs from
    the store's.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"{path}: label file not found")
    try:
        labels = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise LabelFileError(f"{path}: not a readable .npy label file ({exc})") from exc
    if not isinstance(labels, np.ndarray):
        raise LabelFileError(f"{path}: expected one array, found {type(labels).__name__}")
    if labels.dtype != np.int32:
        raise LabelFileError(f"{path}: labels must be int32, found {labels.dtype}")
    if labels.ndim != 1:
        raise LabelFileError(
            f"{path}: labels must be 1-D (one per store row), found shape {labels.shape}"
        )
    mpath = meta_path(path)
    if not mpath.is_file():
        raise LabelFileError(
            f"{path}: its metadata {mpath.name} is missing (was the file copied alone?)"
        )
    try:
        meta = LabelFileMeta.from_json(json.loads(mpath.read_text()))
    except LabelFileError as exc:
        raise LabelFileError(f"{mpath}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise LabelFileError(f"{mpath}: garbled label metadata ({exc})") from exc
    if meta.format != LABEL_FORMAT:
        raise LabelFileError(f"{mpath}: not a diccae label file (format {meta.format!r})")
    if meta.format_version != LABEL_FORMAT_VERSION:
        raise LabelFileError(
            f"{mpath}: label format version {meta.format_version} is not supported"
        )
    if meta.n_rows != labels.shape[0]:
        raise LabelFileError(
            f"{path}: holds {labels.shape[0]} labels but its metadata says {meta.n_rows}"
        )
    if meta.labels_sha256 and meta.labels_sha256 != labels_sha256(labels):
        raise LabelFileError(
            f"{path}: labels do not match their metadata {mpath.name} (SHA-256 differs; "
            "interrupted write or files from two runs)"
        )
    _check_values(labels, meta.k, str(path))
    if store is not None:
        if not isinstance(store, FeatureStore):
            store = FeatureStore.open(store)
        if labels.shape[0] != store.n_rows:
            raise LabelFileError(
                f"{path}: {labels.shape[0]} labels but store {store.path} has {store.n_rows} rows"
            )
        if meta.store_fingerprint != store.fingerprint:
            raise LabelFileError(
                f"{path}: made from another store (fingerprint {meta.store_fingerprint[:12]}..., "
                f"{store.path} has {store.fingerprint[:12]}...)"
            )
    return labels, meta


def cluster_sizes(labels: np.ndarray, k: int) -> np.ndarray:
    lab = np.asarray(labels)
    return np.bincount(lab[lab >= 0], minlength=k)[:k]


def plot_cluster_sizes(labels: np.ndarray, k: int, path: str | Path, *, title: str = "") -> Path:
    """Cluster sizes sorted largest first (bar) and their distribution (histogram) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = cluster_sizes(labels, k)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    ax1.bar(np.arange(k), np.sort(sizes)[::-1], width=1.0, color="#4472c4")
    ax1.set_xlabel("cluster (sorted by size)")
    ax1.set_ylabel("rows")
    ax1.set_title("cluster sizes")
    ax2.hist(sizes, bins=min(50, max(5, k // 4)), color="#ed7d31")
    ax2.set_xlabel("rows per cluster")
    ax2.set_ylabel("clusters")
    ax2.set_title(f"size distribution (empty: {int((sizes == 0).sum())})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write_path(path, lambda p: fig.savefig(p, dpi=110))  # never a 0-byte PNG
    finally:
        plt.close(fig)
    return path
