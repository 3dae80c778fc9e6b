"""Per-clip audit: which clips are likely mislabeled, disagree across modalities,
sit where classes overlap, or fit no class at all.

Class-level confusion (:mod:`featstore.confusion`) says which classes overlap; a
curator needs the clips.  For every row and every feature view (default ``audio``,
``video`` and the fused ``audio+video``) two independent class models give an
opinion (:class:`~featstore.analysis.probe.ClassProbe`): the nearest class centroid
(leave-one-out for the row's own class) and a 5-fold cross-validated ridge probe, so
no row is judged by a model that saw its label.  The flags:

``likely_mislabeled``
    labelled row; no model (probe or centroid) of any view picks its label, and both
    models of the fused view (``audio+video``, or ``ambiguity_features``) pick one and
    the same other class, the ``suggested`` class.  Requiring each single modality to
    name that same class as well is stricter (precision up, recall down sharply when
    each modality alone is weak; docs/analysis.md gives the measurements).
``modality_disagreement``
    the audio view (probe and centroid agreeing) names one class and the video view
    (probe and centroid agreeing) another.
``ambiguous``
    inside the ``coverage`` (95 %) circles of two or more classes: the confusion
    degree's definition (top-2 principal plane of the fused view, class means, radii
    from :func:`featstore.confusion.confusion_degree`), the plane taken from the
    audit's own moments (:func:`featstore.analysis.flags.flag_ambiguous`).
``outlier``
    in some view, the distance to every one of its 3 nearest class centroids, in
    units of that class's median member distance, is beyond ``median + outlier_mads *
    1.4826 * MAD`` of that quantity over all rows (a robust z-score of 6 by default).
    Medians, not moments, so the outliers do not hide themselves by inflating the
    spread of their class.

Two streamed passes over the store, each reading every array once per block for all
views: fit (per-fold ``X'X`` and class sums), then score (one GEMM per block, fold and
view gives centroid distances, probe scores and plane coordinates).  Each block's
per-view, per-fold products are tasks for one worker thread per core, each on one BLAS
thread (:func:`featstore.common.run_all`); every sum is still added in block order, so the results do not
depend on the number of workers.  The cost is O(rows x D x classes) multiply-adds,
against O(rows x D) for reading the store (bench/audit.py; docs/analysis.md).  Memory is
O(rows x views) small columns plus per-fold D x D statistics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.dataset import as_store, class_name_table
from featstore.analysis.flags import (
    flag_ambiguous,
    flag_disagreement,
    flag_mislabeled,
    flag_outliers,
    outlier_score,
)
from featstore.analysis.probe import ClassProbe, stratified_folds
from featstore.analysis.stream import DEFAULT_BLOCK_ROWS, iter_views, resolve_views
from featstore.common import default_workers, one_thread_per_worker, run_all
from featstore.errors import InputError
from featstore.progress import ProgressFn, ProgressTask
from featstore.store.core import FeatureStore, row_labels
from featstore.store.features import COMBINED

FLAGS = ("likely_mislabeled", "modality_disagreement", "ambiguous", "outlier")
PER_VIEW = ("centroid", "centroid_margin", "probe", "probe_margin", "probe_gap", "own_distance")


@dataclass
class AuditConfig:
    """Settings of one audit (saved in audit.json)."""

    features: tuple[str, ...] = ("audio", "video", COMBINED)
    n_folds: int = 5
    seed: int = 0
    coverage: float = 0.95  # the confusion degree's circles
    ambiguity_features: str | None = (
        None  # the fused view: audio+video when audited, else the last view
    )
    outlier_mads: float = 6.0
    top: int = 20  # clips per flag in review.md
    rows_per_block: int = DEFAULT_BLOCK_ROWS
    workers: int | None = None  # threads, one BLAS thread each; None: one per core

    def check(self) -> None:
        if not self.features:
            raise InputError("--features: give at least one feature view")
        if self.n_folds < 2:
            raise InputError(f"n_folds must be >= 2, got {self.n_folds}")
        if not 0 < self.coverage <= 1:
            raise InputError(f"coverage must be within (0, 1], got {self.coverage}")
        if self.outlier_mads <= 0:
            raise InputError(f"outlier_mads must be > 0, got {self.outlier_mads}")
        if self.workers is not None and self.workers < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if self.top < 1:
            raise InputError(f"top must be >= 1, got {self.top}")


@dataclass
class AuditResult:
    """Per-row columns (indexed by store row) and what they were computed from."""

    columns: dict[str, np.ndarray]
    classes: np.ndarray  # label value of each class index
    class_names: list[str]
    views: list[str]
    audited: np.ndarray  # rows seen by at least one view
    metrics: dict[str, Any] = field(default_factory=dict)
    config: AuditConfig = field(default_factory=AuditConfig)
    store_path: str = ""
    store_fingerprint: str = ""
    labels_source: str = ""

    def flag(self, name: str) -> np.ndarray:
        return self.columns[name]

    def counts(self) -> dict[str, int]:
        return {f: int(self.columns[f].sum()) for f in FLAGS}


def load_labels(
    store: FeatureStore, labels_path: str | Path | None, ground_truth: bool
) -> tuple[np.ndarray, str, bool]:
    """``(labels, source, is_ground_truth)`` from a label file or the store's labels."""
    if (labels_path is None) == (not ground_truth):
        raise InputError("give exactly one label source: a label file (--labels) or --ground-truth")
    if ground_truth:
        labels = np.asarray(store.labels, dtype=np.int64)
        if not (labels >= 0).any():
            raise InputError(
                f"{store.path} has no ground-truth labels (every row is -1); use --labels"
            )
        return labels, "ground-truth", True
    from featstore.labels.files import read_label_file

    assert labels_path is not None  # checked above: exactly one source
    labels, _meta = read_label_file(labels_path, store)
    return labels.astype(np.int64), str(labels_path), False


def class_names_for(store: FeatureStore, values: np.ndarray, ground_truth: bool) -> list[str]:
    if not ground_truth:
        return [f"cluster {v}" for v in values.tolist()]
    table = class_name_table(store, int(values.max(initial=-1)) + 1)
    return [str(table[v]) for v in values.tolist()]


def run_audit(
    store: FeatureStore | str | Path,
    labels: np.ndarray,
    *,
    config: AuditConfig | None = None,
    class_names: list[str] | None = None,
    progress: ProgressFn | None = None,
    labels_source: str = "",
) -> AuditResult:
    """Audit every row of ``store`` under per-row ``labels`` (-1 = unlabelled).

    Unlabelled rows get predictions, ``modality_disagreement`` and ``outlier`` but
    not ``likely_mislabeled``/``ambiguous``.  Returns an :class:`AuditResult`; write
    it with :func:`featstore.analysis.report.write_audit`.  ``progress`` receives one
    task per pass (:class:`featstore.progress.ProgressUpdate`).
    """
    cfg = config or AuditConfig()
    cfg.check()
    store = as_store(store)
    labels = row_labels(store, labels)
    views = resolve_views(store, cfg.features)
    naming = cfg.ambiguity_features or (COMBINED if COMBINED in cfg.features else views[-1].name)
    if naming not in {v.name for v in views}:
        raise InputError(f"--ambiguity-features {naming!r} must be one of the audited --features")
    audited = np.zeros(store.n_rows, bool)
    for v in views:
        audited |= v.valid
    values = np.unique(labels[audited & (labels >= 0)])
    if values.size < 2:
        raise InputError(
            f"{store.path}: the audit needs labelled rows of at least 2 classes, found {values.size}"
        )
    cls = np.full(store.n_rows, -1, np.int64)
    known = labels >= 0
    cls[known] = np.searchsorted(values, labels[known])
    cls[known & ~np.isin(labels, values)] = -1
    folds = stratified_folds(cls, cfg.n_folds, cfg.seed)
    C = int(values.size)
    if class_names is not None and len(class_names) != values.size:
        lookup = dict(zip(np.unique(labels[labels >= 0]).tolist(), class_names, strict=False))
        class_names = [lookup.get(v, f"class {v}") for v in values.tolist()]
    names = class_names or [f"class {v}" for v in values.tolist()]

    t0 = time.perf_counter()
    probes = {
        v.name: ClassProbe(C, n_folds=cfg.n_folds, keep_plane=v.name == naming) for v in views
    }
    n = store.n_rows
    cols: dict[str, np.ndarray] = {}
    for v in views:
        for k in PER_VIEW:
            dt = np.int32 if k in ("centroid", "probe") else np.float32
            cols[f"{v.name}_{k}"] = np.full(n, -1 if dt is np.int32 else np.nan, dt)
    near = {
        v.name: (np.full((n, 3), -1, np.int32), np.full((n, 3), np.inf, np.float32)) for v in views
    }
    plane = np.full((n, 2), np.nan, np.float32)
    workers = cfg.workers or default_workers(np)
    # large views first: their tasks are the longest, so the pool ends the block together
    order = sorted(views, key=lambda v: -v.dim)

    def run(tasks: Iterable[Callable[[], Any]]) -> None:
        # one single-threaded BLAS call per core rather than one multithreaded call at a
        # time: on a shared machine a descheduled BLAS thread stalls its whole team
        run_all(tasks, workers, name="diccae-audit")

    with one_thread_per_worker(workers):
        with ProgressTask(
            progress, "audit-fit", total=n, description="audit pass 1/2 (fit)"
        ) as bar:
            for _s, e, blocks in iter_views(store, views, rows_per_block=cfg.rows_per_block):
                run(
                    task
                    for v in order
                    if v.name in blocks
                    for task in probes[v.name].fit_tasks(
                        blocks[v.name][1], cls[blocks[v.name][0]], folds[blocks[v.name][0]]
                    )
                )
                bar.update(completed=e)
        t_fit = time.perf_counter()
        run(p.finish for p in probes.values())
        t_solve = time.perf_counter()
        with ProgressTask(
            progress, "audit-score", total=n, description="audit pass 2/2 (score)"
        ) as bar:
            for _s, e, blocks in iter_views(store, views, rows_per_block=cfg.rows_per_block):
                scored = {}
                tasks = []
                for v in order:
                    if v.name not in blocks:
                        continue
                    rows, x = blocks[v.name]
                    scored[v.name] = probes[v.name].new_scores(rows.size)
                    tasks += probes[v.name].score_tasks(x, cls[rows], folds[rows], scored[v.name])
                run(tasks)
                for name, sc in scored.items():
                    rows = blocks[name][0]
                    nc, nd = sc.pop("near_class"), sc.pop("near_distance")
                    near[name][0][rows, : nc.shape[1]] = nc
                    near[name][1][rows, : nd.shape[1]] = nd
                    if "plane" in sc:
                        plane[rows] = sc.pop("plane")
                    for k, val in sc.items():
                        cols[f"{name}_{k}"][rows] = val
                bar.update(completed=e)
    t_passes = time.perf_counter() - t0

    metrics: dict[str, Any] = {"views": {}}
    for v in views:
        seen = cols[f"{v.name}_probe"] >= 0
        lab = seen & (cls >= 0)
        p = probes[v.name]
        metrics["views"][v.name] = {
            "rows": int(seen.sum()),
            "probe_cv_accuracy": _share(cols[f"{v.name}_probe"][lab] == cls[lab]),
            "centroid_loo_accuracy": _share(cols[f"{v.name}_centroid"][lab] == cls[lab]),
            "ridge_alpha": p.alpha_,
            "dim": v.dim,
        }
    flag_mislabeled(cols, views, cls, naming)
    flag_disagreement(cols, views)
    for v in views:
        cols[f"{v.name}_outlier_score"] = outlier_score(
            cols[f"{v.name}_own_distance"], cls, C, *near[v.name]
        )
    metrics["outlier_thresholds"] = flag_outliers(cols, views, cfg.outlier_mads)
    t1 = time.perf_counter()
    metrics["naming_view"] = naming
    evr = probes[naming].explained_variance_ratio_
    metrics["ambiguity"] = flag_ambiguous(cols, plane, cls, naming, cfg.coverage, evr)
    metrics["seconds"] = {
        "passes": round(t_passes, 3),
        "fit": round(t_fit - t0, 3),
        "solve": round(t_solve - t_fit, 3),
        "ambiguity": round(time.perf_counter() - t1, 3),
    }
    cols["label"] = labels.astype(np.int32)
    cols["class_index"] = cls.astype(np.int32)
    return AuditResult(
        columns=cols,
        classes=values,
        class_names=names,
        views=[v.name for v in views],
        audited=audited,
        metrics=metrics,
        config=cfg,
        store_path=str(store.path),
        store_fingerprint=store.fingerprint,
        labels_source=labels_source,
    )


def _share(ok: np.ndarray) -> float | None:
    return None if ok.size == 0 else round(float(ok.mean()), 6)


def config_json(cfg: AuditConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["features"] = list(cfg.features)
    return d
