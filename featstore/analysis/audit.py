"""Per-clip audit: which clips are likely mislabeled, disagree across modalities,
sit where classes overlap, or fit no class at all.

Class-level confusion (:mod:`featstore.confusion.core`) says which classes overlap; a
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
    inside the ``coverage`` (95 %) circles of two or more classes, using exactly the
    PCA plane, centroids and radii of the confusion degree
    (:func:`featstore.confusion.core.confusion_from_store`).
``outlier``
    in some view, the distance to every one of its 3 nearest class centroids, in
    units of that class's median member distance, is beyond ``median + outlier_mads *
    1.4826 * MAD`` of that quantity over all rows (a robust z-score of 6 by default).
    Medians, not moments, so the outliers do not hide themselves by inflating the
    spread of their class.

Two streamed passes over the store (fit, then score) plus the confusion degree's
own passes; memory is O(rows x views) small columns plus per-fold D x D statistics.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.dataset import as_store, class_name_table
from featstore.analysis.probe import ClassProbe
from featstore.analysis.stream import DEFAULT_BLOCK_ROWS, iter_views, resolve_views
from featstore.errors import InputError
from featstore.progress import make_progress
from featstore.store.core import FeatureStore
from featstore.store.features import COMBINED

FLAGS = ("likely_mislabeled", "modality_disagreement", "ambiguous", "outlier")
CIRCLE_BLOCK = 32768  # rows per block when testing every row against every circle
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

    def check(self) -> None:
        if not self.features:
            raise InputError("--features: give at least one feature view")
        if self.n_folds < 2:
            raise InputError(f"n_folds must be >= 2, got {self.n_folds}")
        if not 0 < self.coverage <= 1:
            raise InputError(f"coverage must be within (0, 1], got {self.coverage}")
        if self.outlier_mads <= 0:
            raise InputError(f"outlier_mads must be > 0, got {self.outlier_mads}")
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
    progress: bool = False,
    labels_source: str = "",
) -> AuditResult:
    """Audit every row of ``store`` under per-row ``labels`` (-1 = unlabelled).

    Unlabelled rows get predictions, ``modality_disagreement`` and ``outlier`` but
    not ``likely_mislabeled``/``ambiguous``.  Returns an :class:`AuditResult`; write
    it with :func:`featstore.analysis.report.write_audit`.
    """
    cfg = config or AuditConfig()
    cfg.check()
    store = as_store(store)
    labels = np.asarray(labels)
    if labels.shape != (store.n_rows,):
        raise InputError(
            f"labels have shape {labels.shape} but {store.path} has {store.n_rows} rows"
        )
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    views = resolve_views(store, cfg.features)
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
    folds = np.random.default_rng(cfg.seed).integers(0, cfg.n_folds, store.n_rows)
    folds[cls < 0] = cfg.n_folds  # unlabelled rows: scored by the model fitted on all rows
    C = int(values.size)
    if class_names is not None and len(class_names) != values.size:
        lookup = dict(zip(np.unique(labels[labels >= 0]).tolist(), class_names, strict=False))
        class_names = [lookup.get(v, f"class {v}") for v in values.tolist()]
    names = class_names or [f"class {v}" for v in values.tolist()]

    t0 = time.perf_counter()
    probes = {v.name: ClassProbe(C, n_folds=cfg.n_folds) for v in views}
    n = store.n_rows
    cols: dict[str, np.ndarray] = {}
    for v in views:
        for k in PER_VIEW:
            dt = np.int32 if k in ("centroid", "probe") else np.float32
            cols[f"{v.name}_{k}"] = np.full(n, -1 if dt is np.int32 else np.nan, dt)
    near = {
        v.name: (np.full((n, 3), -1, np.int32), np.full((n, 3), np.inf, np.float32)) for v in views
    }
    with make_progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("audit pass 1/2 (fit)", total=n)
        for _s, _e, blocks in iter_views(
            store,
            views,
            rows_per_block=cfg.rows_per_block,
            on_block=lambda e: bar.update(task, completed=e),
        ):
            for name, (rows, x) in blocks.items():
                probes[name].partial_fit(x, cls[rows], folds[rows])
        for p in probes.values():
            p.finish()
        task = bar.add_task("audit pass 2/2 (score)", total=n)
        for _s, _e, blocks in iter_views(
            store,
            views,
            rows_per_block=cfg.rows_per_block,
            on_block=lambda e: bar.update(task, completed=e),
        ):
            for name, (rows, x) in blocks.items():
                scored = probes[name].score(x, cls[rows], folds[rows])
                nc, nd = scored.pop("near_class"), scored.pop("near_distance")
                near[name][0][rows, : nc.shape[1]] = nc
                near[name][1][rows, : nd.shape[1]] = nd
                for k, val in scored.items():
                    cols[f"{name}_{k}"][rows] = val
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
    naming = cfg.ambiguity_features or (COMBINED if COMBINED in cfg.features else views[-1].name)
    if naming not in probes:
        raise InputError(f"--ambiguity-features {naming!r} must be one of the audited --features")
    _flag_mislabeled(cols, views, cls, naming)
    _flag_disagreement(cols, views)
    for v in views:
        cols[f"{v.name}_outlier_score"] = _outlier_score(
            cols[f"{v.name}_own_distance"], cls, C, *near[v.name]
        )
    metrics["outlier_thresholds"] = _flag_outliers(cols, views, cfg.outlier_mads)
    t1 = time.perf_counter()
    metrics["naming_view"] = naming
    metrics["ambiguity"] = _flag_ambiguous(
        cols, store, labels, values, naming, cfg.coverage, progress
    )
    metrics["seconds"] = {
        "passes": round(t_passes, 3),
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


def _agreed(cols: dict[str, np.ndarray], view: str) -> np.ndarray:
    """The class a view names when its probe and its centroid agree, else -1."""
    p, c = cols[f"{view}_probe"], cols[f"{view}_centroid"]
    return np.where((p >= 0) & (p == c), p, -1)


def _flag_mislabeled(
    cols: dict[str, np.ndarray], views: list, cls: np.ndarray, naming: str
) -> None:
    """No model of any view picks the label, and both models of the ``naming`` view
    (the fused one by default) pick one and the same other class."""
    rejected = cls >= 0
    for v in views:
        for model in ("probe", "centroid"):
            p = cols[f"{v.name}_{model}"]
            rejected &= (p < 0) | (p != cls)
    suggested = _agreed(cols, naming)
    flag = rejected & (suggested >= 0) & (cols[f"{naming}_probe"] >= 0)
    cols["suggested_class_index"] = np.where(flag, suggested, -1).astype(np.int32)
    cols["likely_mislabeled"] = flag
    cols["mislabel_score"] = np.where(flag, cols[f"{naming}_probe_gap"], np.nan).astype(np.float32)


def _flag_disagreement(cols: dict[str, np.ndarray], views: list) -> None:
    names = {v.name for v in views}
    n = next(iter(cols.values())).shape[0]
    if not {"audio", "video"} <= names:
        cols["modality_disagreement"] = np.zeros(n, bool)
        cols["audio_class_index"] = cols["video_class_index"] = np.full(n, -1, np.int32)
        cols["disagreement_score"] = np.full(n, np.nan, np.float32)
        return
    a, v = _agreed(cols, "audio"), _agreed(cols, "video")
    flag = (a >= 0) & (v >= 0) & (a != v)
    cols["modality_disagreement"] = flag
    cols["audio_class_index"], cols["video_class_index"] = a.astype(np.int32), v.astype(np.int32)
    score = np.minimum(cols["audio_probe_margin"], cols["video_probe_margin"])
    cols["disagreement_score"] = np.where(flag, score, np.nan).astype(np.float32)


def class_medians(values: np.ndarray, cls: np.ndarray, n_classes: int) -> np.ndarray:
    """Median of ``values`` per class index (NaN values and cls < 0 ignored; NaN if none)."""
    ok = (cls >= 0) & np.isfinite(values)
    v, c = values[ok], cls[ok]
    order = np.lexsort((v, c))
    v, c = v[order], c[order]
    counts = np.bincount(c, minlength=n_classes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_classes, np.nan)
    has = counts > 0
    lo = starts[has] + (counts[has] - 1) // 2
    hi = starts[has] + counts[has] // 2
    out[has] = (v[lo].astype(np.float64) + v[hi]) / 2
    return out


def _outlier_score(
    own: np.ndarray, cls: np.ndarray, n_classes: int, near_class: np.ndarray, near_dist: np.ndarray
) -> np.ndarray:
    """Distance to the nearest centroids in units of each class's median member distance
    (robust to the outliers themselves), minimised over the row's 3 nearest centroids."""
    scale = class_medians(own, cls, n_classes)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
    s = np.append(scale, np.nan)[np.where(near_class >= 0, near_class, n_classes)]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = near_dist / s
    ratio = np.where(np.isfinite(ratio), ratio, np.inf).min(axis=1)
    return np.where(np.isfinite(ratio), ratio, np.nan).astype(np.float32)


def _flag_outliers(cols: dict[str, np.ndarray], views: list, mads: float) -> dict[str, float]:
    n = next(iter(cols.values())).shape[0]
    flag = np.zeros(n, bool)
    score = np.full(n, np.nan, np.float32)
    thresholds = {}
    for v in views:
        s = cols[f"{v.name}_outlier_score"]
        ok = np.isfinite(s)
        if not ok.any():
            continue
        med = float(np.median(s[ok]))
        mad = float(np.median(np.abs(s[ok] - med))) * 1.4826
        thr = med + mads * max(mad, 1e-6 * max(med, 1e-12))
        thresholds[v.name] = round(thr, 6)
        z = np.where(ok, (s - med) / max(mad, 1e-12), np.nan)
        flag |= ok & (s > thr)
        score = np.fmax(score, z.astype(np.float32))
    cols["outlier"] = flag
    cols["outlier_z"] = score
    return thresholds


def _flag_ambiguous(
    cols: dict[str, np.ndarray],
    store: FeatureStore,
    labels: np.ndarray,
    values: np.ndarray,
    view: str,
    coverage: float,
    progress: bool,
) -> dict[str, Any]:
    """Inside >= 2 of the confusion degree's circles (its own plane, centroids, radii)."""
    from featstore.confusion import confusion_from_store

    n = store.n_rows
    use = np.where(np.isin(labels, values), labels, -1)
    res = confusion_from_store(
        store,
        use,
        features=view,
        n_components=2,
        coverage=coverage,
        keep_plane=True,
        progress=progress,
    )
    # the result's classes are label values; map them to the audit's class indices
    idx = np.searchsorted(values, res.classes)
    centroids = res.centroids[:, :2]
    rows, plane = res.rows, res.plane.astype(np.float64)
    ok = (res.counts > 0) & np.isfinite(res.radii)
    cent = centroids[ok].astype(np.float64)
    r2 = res.radii[ok].astype(np.float64) ** 2
    cidx = idx[ok]
    inside_n = np.zeros(rows.size, np.int16)
    best = np.full((rows.size, 2), -1, np.int32)  # the two circles a row is most inside
    for s in range(0, rows.size, CIRCLE_BLOCK):
        p = plane[s : s + CIRCLE_BLOCK]
        d2 = (p * p).sum(axis=1)[:, None] - 2 * p @ cent.T + (cent * cent).sum(axis=1)[None, :]
        inside = d2 <= r2[None, :]
        inside_n[s : s + CIRCLE_BLOCK] = inside.sum(axis=1)
        ratio = np.where(inside, d2 / np.maximum(r2, 1e-30)[None, :], np.inf)  # (d / r)^2
        b = np.arange(p.shape[0])
        for slot in (0, 1):
            k = ratio.argmin(axis=1)
            hit = np.isfinite(ratio[b, k])
            best[s : s + CIRCLE_BLOCK, slot] = np.where(hit, cidx[k], -1)
            ratio[b, k] = np.inf
    count = np.zeros(n, np.int16)
    first_two = np.full((n, 2), -1, np.int32)
    count[rows] = inside_n
    first_two[rows] = best
    cols["n_circles"] = count
    cols["circle_class_a"], cols["circle_class_b"] = first_two[:, 0], first_two[:, 1]
    cols["ambiguous"] = count >= 2
    return {
        "features": view,
        "coverage": coverage,
        "n_components": 2,
        "rows": int(rows.size),
        "explained_variance_ratio": res.explained_variance_ratio,
    }


def config_json(cfg: AuditConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["features"] = list(cfg.features)
    return d
