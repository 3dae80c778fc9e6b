"""Pictures of the confusion degree, reused by ``diccae confusion``, the trainer's eval and the demo.

* :func:`plot_confusion_histogram` - distribution(s) of M_ij over class pairs, overlaid
  like the paper's Figure 2 ("with and without DICCAE"), with mean and variance;
* :func:`plot_confusion_heatmap` - M restricted to the most confused classes, named;
* :func:`plot_confusion_circles` - the 2-D PCA plane with members, centroids and
  coverage circles of the most confused classes (the picture Eq. 2 is defined on).

All functions write a PNG with the Agg backend and return its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.backend import to_numpy
from featstore.common.fileio import atomic_write_path
from featstore.confusion.result import ConfusionResult, off_diagonal_values
from featstore.errors import InputError


def _save(fig, path: str | Path) -> Path:
    """Lay out, write the PNG (creating its folder) and free the figure."""
    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write_path(path, lambda p: fig.savefig(p, dpi=120))  # never a 0-byte PNG
    finally:
        _pyplot().close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _values_or_hist(item: Any) -> tuple[np.ndarray | None, dict | None]:
    """Pair values from a ConfusionResult / (C, C) matrix / 1-D values, or a stats dict."""
    if isinstance(item, ConfusionResult):
        return item.pair_values(), None
    if isinstance(item, dict):
        if "histogram" not in item or not item["histogram"].get("edges"):
            raise InputError(
                "a stats dict needs a non-empty 'histogram' (from ConfusionResult.stats())"
            )
        return None, item
    arr = np.asarray(to_numpy(item), dtype=np.float64)
    if arr.ndim == 2:
        return off_diagonal_values(arr), None
    if arr.ndim == 1:
        return arr[np.isfinite(arr)], None
    raise InputError(f"cannot plot a confusion distribution from an array of shape {arr.shape}")


def plot_confusion_histogram(
    stats_or_M_list: Sequence[Any] | Any,
    labels: Sequence[str] | str,
    path: str | Path,
    *,
    bins: int = 50,
    title: str = "Inter-class confusion degree distribution",
    log_y: bool = False,
) -> Path:
    """Overlay the distributions of M_ij (one per item) on shared bins.

    Items may be ConfusionResults, (C, C) matrices, 1-D arrays of pair values or the
    ``stats()`` dicts (drawn from their stored histogram).  Heights are the fraction of
    class pairs, so runs with different numbers of classes compare directly.  With two
    items the legend also gives the change in mean and variance (the paper's Figure 2
    reports these: lower mean and variance = better separated classes).
    """
    items = (
        list(stats_or_M_list) if isinstance(stats_or_M_list, (list, tuple)) else [stats_or_M_list]
    )
    names = [labels] if isinstance(labels, str) else list(labels)
    if len(names) != len(items):
        raise InputError(f"{len(items)} distributions but {len(names)} labels")
    plt = _pyplot()
    parsed = [_values_or_hist(it) for it in items]
    top = max([float(v.max()) for v, _ in parsed if v is not None and v.size] + [1e-12])
    edges = np.linspace(0.0, top, bins + 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    summary = []
    for (vals, hist), name in zip(parsed, names, strict=True):
        if vals is not None:
            n = max(vals.size, 1)
            counts, e = np.histogram(vals, bins=edges)
            mean, var = (
                (float(vals.mean()), float(vals.var())) if vals.size else (float("nan"),) * 2
            )
        else:
            assert hist is not None  # _values_or_hist gives values or a stats dict
            e = np.asarray(hist["histogram"]["edges"], dtype=np.float64)
            counts = np.asarray(hist["histogram"]["counts"], dtype=np.float64)
            n = max(counts.sum(), 1)
            mean = float("nan") if hist.get("mean") is None else float(hist["mean"])
            var = float("nan") if hist.get("var") is None else float(hist["var"])
        line = ax.stairs(
            counts / n, e, label=f"{name} (mean {mean:.3f}, var {var:.3f})", linewidth=1.8
        )
        if np.isfinite(mean):
            ax.axvline(mean, color=line.get_edgecolor(), linestyle="--", linewidth=1)
        summary.append((mean, var))
    if len(summary) == 2 and all(np.isfinite(summary[0] + summary[1])):
        dm, dv = summary[1][0] - summary[0][0], summary[1][1] - summary[0][1]
        ax.plot([], [], " ", label=f"change: mean {dm:+.3f}, var {dv:+.3f}")
    ax.set_xlabel("confusion degree $M_{ij}$ (Eq. 2), one value per class pair")
    ax.set_ylabel("fraction of class pairs")
    if log_y:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _most_confused_classes(M: np.ndarray, limit: int) -> list[int]:
    """Class indices of the top pairs, in order of first appearance, at most ``limit``."""
    C = M.shape[0]
    iu, ju = np.triu_indices(C, k=1)
    vals = M[iu, ju]
    ok = np.isfinite(vals)
    order = np.argsort(-vals[ok], kind="stable")
    picked: list[int] = []
    for o in order:
        for c in (int(iu[ok][o]), int(ju[ok][o])):
            if c not in picked and len(picked) < limit:
                picked.append(c)
        if len(picked) >= limit:
            break
    return picked


def plot_confusion_heatmap(
    M: Any, names: Sequence[str], path: str | Path, *, top: int = 20, title: str | None = None
) -> Path:
    """Heatmap of M over the (at most ``top``) classes involved in the most confused pairs."""
    M = np.asarray(to_numpy(M), dtype=np.float64)
    if len(names) != M.shape[0]:
        raise InputError(f"{len(names)} class names for a {M.shape[0]}-class matrix")
    picked = _most_confused_classes(M, max(2, top)) or list(range(min(top, M.shape[0])))
    sub = M[np.ix_(picked, picked)]
    plt = _pyplot()
    size = 3.0 + 0.35 * len(picked)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(np.ma.masked_invalid(sub), cmap="magma_r", vmin=0.0)
    ax.set_xticks(
        range(len(picked)), [str(names[i]) for i in picked], rotation=70, ha="right", fontsize=7
    )
    ax.set_yticks(range(len(picked)), [str(names[i]) for i in picked], fontsize=7)
    fig.colorbar(im, ax=ax, label="$M_{ij}$")
    ax.set_title(title or f"Most confused classes ({len(picked)} of {M.shape[0]})")
    return _save(fig, path)


def plot_confusion_circles(
    result: Any,
    names: Sequence[str],
    path: str | Path,
    *,
    max_classes: int = 6,
    max_points: int = 1500,
    seed: int = 0,
) -> Path:
    """Members, centroids and coverage circles of the most confused classes in the PCA plane.

    Needs a result computed with ``keep_plane=True`` (first two principal components of
    every row).  With ``n_components == 2`` the circles are exactly the ones M was
    computed from; otherwise they are recomputed in this plane (same coverage quantile)
    and the title says so, because k-dimensional balls have no faithful 2-D picture.
    """
    if result.plane is None or result.row_class is None:
        raise InputError("circles need a result computed with keep_plane=True")
    plane = np.asarray(result.plane)
    if plane.shape[1] < 2:  # 1-D features: draw the line inside the plane
        plane = np.column_stack([plane, np.zeros(plane.shape[0], plane.dtype)])
    M = result.M
    picked = _most_confused_classes(M, max_classes) or list(range(min(max_classes, M.shape[0])))
    exact = result.n_components == 2
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    cmap = plt.get_cmap("tab10")
    theta = np.linspace(0, 2 * np.pi, 200)
    for n, c in enumerate(picked):
        pts = plane[result.row_class == c].astype(np.float64)
        if pts.shape[0] == 0:
            continue
        if exact:
            centre, radius = result.centroids[c], float(result.radii[c])
        else:
            centre = pts.mean(axis=0)
            radius = float(np.quantile(np.linalg.norm(pts - centre, axis=1), result.coverage))
        show = (
            pts
            if pts.shape[0] <= max_points
            else pts[rng.choice(pts.shape[0], max_points, replace=False)]
        )
        colour = cmap(n % 10)
        ax.scatter(show[:, 0], show[:, 1], s=4, alpha=0.35, color=colour)
        ax.plot(
            centre[0] + radius * np.cos(theta),
            centre[1] + radius * np.sin(theta),
            color=colour,
            linewidth=1.6,
            linestyle="-" if exact else "--",
        )
        ax.scatter(
            [centre[0]],
            [centre[1]],
            marker="x",
            s=70,
            color=colour,
            label=f"{names[c]} (n={int(result.counts[c])}, r={radius:.3g})",
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    cov = f"{100 * result.coverage:g}%"
    if exact:
        ax.set_title(f"Most confused classes: members, centroids and {cov} circles (PCA plane)")
    else:
        k = "full space" if result.n_components is None else f"k={result.n_components}"
        ax.set_title(f"{cov} circles recomputed in the PCA plane (M used {k})", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
