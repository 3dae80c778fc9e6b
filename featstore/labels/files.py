"""Versioned cluster-label files: write, read (with refusal), align, and `cluster_store`.

A label file is the hand-off between clustering and training, and training runs for
hours on it, so it has to be impossible to use the wrong one by accident:

* ``LABELS.npy``: int32, one entry per store row, ``-1`` = not clustered; plain
  NumPy format, loadable with ``numpy.load(path, allow_pickle=False)``.
* ``LABELS.npy.json``: how it was made (K, inertia of every restart, seed, backend,
  features...), the store's fingerprint, the refinement round and the parent file,
  and the SHA-256 of the label bytes, so a reader notices a label file paired with
  metadata from another run (e.g. a crash between the two renames).

Both are written to temporary files and moved into place with ``os.replace``, so a
crash never leaves a half-written file.  See docs/label-files.md.
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

from featstore.common.fileio import atomic_write_path, check_output_file, json_safe, write_temp
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


# --------------------------------------------------------------------------- alignment
def alignment_map(new: np.ndarray, previous: np.ndarray, k_new: int | None = None) -> np.ndarray:
    """``map[c]`` = id that new cluster ``c`` should take to best match ``previous``.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) maximising the
    number of rows both labelings share, counted on rows clustered in both (``-1``
    ignored).  Ids stay in ``[0, k_new)``: new clusters without a partner, or matched
    to a previous id >= k_new (when K shrank), take the free ids in ascending order.
    """
    from scipy.optimize import linear_sum_assignment

    new = np.asarray(new)
    previous = np.asarray(previous)
    if new.shape != previous.shape:
        raise InputError(
            f"cannot align labelings of different length ({new.shape[0]} vs {previous.shape[0]})"
        )
    k_new = int(k_new if k_new is not None else (new.max() + 1 if new.size else 0))
    k_prev = int(previous.max() + 1) if previous.size and previous.max() >= 0 else 0
    mapping = np.full(k_new, -1, np.int64)
    if k_new == 0:
        return mapping
    both = (new >= 0) & (previous >= 0)
    if k_prev and both.any():
        table = np.zeros((k_new, k_prev), np.int64)
        np.add.at(table, (new[both], previous[both]), 1)
        r, c = linear_sum_assignment(table, maximize=True)
        ok = (table[r, c] > 0) & (c < k_new)
        mapping[r[ok]] = c[ok]
    free = iter(sorted(set(range(k_new)) - set(mapping[mapping >= 0].tolist())))
    for cl in range(k_new):
        if mapping[cl] < 0:
            mapping[cl] = next(free)
    return mapping


def align_labels(new: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Renumber ``new`` cluster ids to best match ``previous`` (``-1`` kept).

    Keeps pseudo-label ids stable across refinement rounds, so the classifier head
    of the trainer keeps its meaning and per-cluster plots can be compared.
    """
    new = np.asarray(new)
    mapping = alignment_map(new, previous)
    out = np.full(new.shape, -1, np.int32)
    keep = new >= 0
    out[keep] = mapping[new[keep]]
    return out


# --------------------------------------------------------------------------- agreement
def agreement_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any] | None:
    """NMI, ARI and purity of ``pred`` against ``truth`` on rows where both are >= 0."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    both = (pred >= 0) & (truth >= 0)
    if not both.any():
        return None
    p, t = pred[both], truth[both]
    _, t_idx = np.unique(t, return_inverse=True)
    _, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((p_idx.max() + 1, t_idx.max() + 1), np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    return {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "purity": float(table.max(axis=1).sum() / both.sum()),
        "n_rows": int(both.sum()),
        "n_classes": int(table.shape[1]),
    }


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


# --------------------------------------------------------------------------- cluster_store
@dataclass
class ClusterResult:
    labels: np.ndarray
    meta: LabelFileMeta
    path: Path
    agreement: dict | None
    centers: np.ndarray | None = None
    sizes: np.ndarray | None = None
    plot: Path | None = None


class _RichProgress:
    """Restart and iteration bars fed by KMeans.fit's progress events."""

    def __init__(self, n_init: int, max_iter: int):
        from rich.console import Console
        from rich.progress import TextColumn

        from featstore.progress import make_progress

        self.progress = make_progress(
            TextColumn("{task.fields[info]}"), console=Console(stderr=True)
        )
        self.n_init, self.max_iter = n_init, max_iter
        self.restarts = self.iters = None

    def __enter__(self) -> _RichProgress:
        self.progress.__enter__()
        self.restarts = self.progress.add_task("restarts", total=self.n_init, info="")
        self.iters = self.progress.add_task("iterations", total=self.max_iter, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, ev: dict[str, Any]) -> None:
        p = self.progress
        kind = ev.get("event")
        if kind == "scan":
            p.update(self.restarts, info="streaming from the store" if ev.get("streamed") else "")
        elif kind == "restart":
            p.update(self.iters, completed=0, description=f"restart {ev['restart'] + 1} iterations")
        elif kind == "iter":
            p.update(self.iters, completed=ev["iter"], info=f"inertia {ev['inertia']:.6g}")
        elif kind == "restart_done":
            p.advance(self.restarts)
            p.update(self.restarts, info=f"last {ev['inertia']:.6g}")
        elif kind == "refine":
            p.update(self.iters, completed=0, description=f"refine on all {ev['rows']} rows")


def cluster_store(
    store: FeatureStore | str | Path,
    *,
    out: str | Path,
    k: int = 300,
    n_init: int = 20,
    seed: int | None = 0,
    features: str = "audio+video",
    backend: str = "auto",
    device: str = "auto",
    align_to: str | Path | None = None,
    round: int | None = None,
    parent: str | Path | None = None,
    memory_budget: Any = None,
    restart_sample: Any = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    progress: bool = True,
    plot: bool = True,
) -> ClusterResult:
    """Cluster a store's features and write a versioned label file (what `diccae cluster` runs).

    The trainer calls it for re-clustering with ``features=<fused array name>``,
    ``align_to=<previous round's file>`` so ids stay stable.  ``round`` defaults to
    the previous round + 1 when aligning, else 0; ``parent`` defaults to ``align_to``.
    """
    from featstore.kmeans.estimator import KMeans

    store, out, previous, prev_meta = prepare_cluster_run(store, out, align_to)
    km = KMeans(
        k,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
        backend=backend,
        device=device,
        memory_budget=memory_budget,
        restart_sample=restart_sample,
        features=features,
    )
    if progress:
        with _RichProgress(n_init, max_iter) as bar:
            km.fit(store, progress=bar)
    else:
        km.fit(store)
    return finish_cluster_run(
        store,
        km,
        out,
        k=k,
        n_init=n_init,
        seed=seed,
        features=features,
        align_to=align_to,
        previous=previous,
        prev_meta=prev_meta,
        round=round,
        parent=parent,
        max_iter=max_iter,
        tol=tol,
        plot=plot,
    )


def prepare_cluster_run(
    store: FeatureStore | str | Path, out: str | Path, align_to: str | Path | None
) -> tuple[FeatureStore, Path, np.ndarray | None, LabelFileMeta | None]:
    """Open the store and check the output name and previous round *before* the long fit."""
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    out = Path(out)
    if out.suffix != ".npy":
        raise InputError(f"label file {out} must end in .npy")
    check_output_file(out, store=store)
    previous = prev_meta = None
    if align_to is not None:
        previous, prev_meta = read_label_file(align_to, store)
    return store, out, previous, prev_meta


def finish_cluster_run(
    store: FeatureStore,
    km: Any,
    out: Path,
    *,
    k: int,
    n_init: int,
    seed: int | None,
    features: str,
    align_to: str | Path | None,
    previous: np.ndarray | None,
    prev_meta: LabelFileMeta | None,
    round: int | None,
    parent: str | Path | None,
    max_iter: int,
    tol: float,
    plot: bool,
    extra: dict[str, Any] | None = None,
) -> ClusterResult:
    """Align a fitted estimator's labels to the previous round, then write the label file,
    its metadata and the size plot.  Shared by the single-machine and Dask paths so both
    produce identical files."""
    labels = km.labels_.astype(np.int32)
    centers = km.cluster_centers_
    alignment = None
    if previous is not None:
        mapping = alignment_map(labels, previous, k)
        keep = labels >= 0
        before = float((labels[keep] == previous[keep]).mean()) if keep.any() else 0.0
        aligned = labels.copy()
        aligned[keep] = mapping[labels[keep]]
        inv = np.empty_like(mapping)
        inv[mapping] = np.arange(k)
        centers = centers[inv]
        labels = aligned
        both = (labels >= 0) & (previous >= 0)
        alignment = {
            "previous_k": int(prev_meta.k),
            "same_id_fraction_before": before,
            "same_id_fraction": float((labels[both] == previous[both]).mean())
            if both.any()
            else 0.0,
            "vs_previous": agreement_metrics(labels, previous),
        }
    truth = store.labels
    agreement = agreement_metrics(labels, truth) if (truth >= 0).any() else None
    if round is None:
        round = (int(prev_meta.round) + 1) if prev_meta is not None else 0
    if parent is None and align_to is not None:
        parent = align_to
    meta = LabelFileMeta(
        k=k,
        inertia=km.inertia_,
        inertias=km.inertias_,
        n_iter=km.n_iter_,
        seed=seed,
        backend=km.backend_,
        features=features,
        store_fingerprint=store.fingerprint,
        round=int(round),
        parent=str(parent) if parent is not None else None,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        device=km.device_,
        restart_sample=km.restart_sample_,
        best_restart=km.best_restart_,
        n_reseeded=km.n_reseeded_,
        seconds=round_seconds(km.fit_seconds_),
        aligned_to=str(align_to) if align_to is not None else None,
        alignment=alignment,
        agreement=agreement,
        choice=getattr(km, "choice_", None),
        store_path=str(store.path),
        extra={
            "streamed": bool(km.streamed_),
            "n_features": int(km.n_features_in_),
            **(extra or {}),
        },
    )
    write_label_file(out, labels, meta)
    png = None
    if plot:
        png = plot_cluster_sizes(
            labels, k, plot_path(out), title=f"{out.name}: K={k}, {features}, round {meta.round}"
        )
    return ClusterResult(
        labels, meta, out, agreement, centers=centers, sizes=cluster_sizes(labels, k), plot=png
    )


def round_seconds(s: float) -> float:
    return float(f"{s:.3f}")
