"""The audit's flags, computed from the per-row columns the class models wrote.

Each function reads ``cols`` (the :class:`~featstore.analysis.audit.AuditResult`
columns, indexed by store row) and adds its flag, its ranking score and the classes
involved.  The definitions are in :mod:`featstore.analysis.audit`'s docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.analysis.stream import View

CIRCLE_BLOCK = 32768  # rows per block when testing every row against every circle


def agreed(cols: dict[str, np.ndarray], view: str) -> np.ndarray:
    """The class a view names when its probe and its centroid agree, else -1."""
    p, c = cols[f"{view}_probe"], cols[f"{view}_centroid"]
    return np.where((p >= 0) & (p == c), p, -1)


def flag_mislabeled(
    cols: dict[str, np.ndarray], views: list[View], cls: np.ndarray, naming: str
) -> None:
    """No model of any view picks the label, and both models of the ``naming`` view
    (the fused one by default) pick one and the same other class."""
    rejected = cls >= 0
    for v in views:
        for model in ("probe", "centroid"):
            p = cols[f"{v.name}_{model}"]
            rejected &= (p < 0) | (p != cls)
    suggested = agreed(cols, naming)
    flag = rejected & (suggested >= 0) & (cols[f"{naming}_probe"] >= 0)
    cols["suggested_class_index"] = np.where(flag, suggested, -1).astype(np.int32)
    cols["likely_mislabeled"] = flag
    cols["mislabel_score"] = np.where(flag, cols[f"{naming}_probe_gap"], np.nan).astype(np.float32)


def flag_disagreement(cols: dict[str, np.ndarray], views: list[View]) -> None:
    names = {v.name for v in views}
    n = next(iter(cols.values())).shape[0]
    if not {"audio", "video"} <= names:
        cols["modality_disagreement"] = np.zeros(n, bool)
        cols["audio_class_index"] = cols["video_class_index"] = np.full(n, -1, np.int32)
        cols["disagreement_score"] = np.full(n, np.nan, np.float32)
        return
    a, v = agreed(cols, "audio"), agreed(cols, "video")
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


def outlier_score(
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


def flag_outliers(cols: dict[str, np.ndarray], views: list[View], mads: float) -> dict[str, float]:
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


def flag_ambiguous(
    cols: dict[str, np.ndarray],
    plane: np.ndarray,
    cls: np.ndarray,
    view: str,
    coverage: float,
    explained_variance_ratio: float | None,
) -> dict[str, Any]:
    """Inside >= 2 of the confusion degree's circles.

    ``plane`` holds every row's coordinates on the top-2 principal plane of ``view``
    (NaN where the view has no value), fitted on the labelled rows - the plane of
    :func:`featstore.confusion.confusion_from_store` ``(features=view, n_components=2)``,
    taken from the audit's own moments instead of two more passes over the store.  The
    centroids and ``coverage`` radii are the confusion degree's own
    (:func:`featstore.confusion.confusion_degree` on those coordinates).
    """
    from featstore.confusion import confusion_degree

    n = cls.shape[0]
    rows = np.flatnonzero((cls >= 0) & np.isfinite(plane[:, 0]))
    p = plane[rows].astype(np.float64)
    res = confusion_degree(p, cls[rows], n_components=None, coverage=coverage)
    # confusion_degree's centroids are relative to the mean of the rows it was given;
    # rows are tested in that frame
    centre = p.mean(axis=0)
    centroids = res.centroids + centre
    del p
    ok = (res.counts > 0) & np.isfinite(res.radii)
    cent = centroids[ok].astype(np.float32)
    inv_r2 = (1.0 / np.maximum(res.radii[ok].astype(np.float64) ** 2, 1e-30)).astype(np.float32)
    cidx = res.classes[ok]
    q32 = (plane[rows] - centre.astype(np.float32)).astype(np.float32)
    cent -= centre.astype(np.float32)
    inside_n = np.zeros(rows.size, np.int16)
    best = np.full((rows.size, 2), -1, np.int32)  # the two circles a row is most inside
    for s in range(0, rows.size, CIRCLE_BLOCK):
        q = q32[s : s + CIRCLE_BLOCK]
        ratio = (q[:, :1] - cent[None, :, 0]) ** 2  # (d / r)^2, in float32 (2-D, centred)
        ratio += (q[:, 1:] - cent[None, :, 1]) ** 2
        ratio *= inv_r2
        inside_n[s : s + CIRCLE_BLOCK] = (ratio <= 1).sum(axis=1)
        b = np.arange(q.shape[0])
        for slot in (0, 1):
            k = ratio.argmin(axis=1)
            hit = ratio[b, k] <= 1
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
        "explained_variance_ratio": explained_variance_ratio,
    }
