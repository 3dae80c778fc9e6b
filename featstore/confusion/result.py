"""The confusion degree's result and its scaling (paper Eq. 2's output, Eq. 3).

The definition, with every choice the paper leaves open (docs/confusion-degree.md):

1. PCA fitted on all rows given (centred by their mean), projecting to ``n_components``
   (default 2, the paper's circles; any k; ``None`` = the full space, no projection).
2. Centroid c_i = mean of class i's projected members.
3. Radius r_i = the ``coverage`` quantile (default 0.95, NumPy's linear interpolation)
   of the distances of class i's members to c_i.
4. d_ij = ||c_i - c_j||,  M_ij = max(0, r_i + r_j - d_ij) / d_ij (i != j), M_ii = 0.
   * coincident centroids (d_ij <= ``COINCIDENT_RTOL`` x the size of the configuration)
     would give +inf; they get the largest finite off-diagonal value of M, and at least 1
     (two equal circles each passing through the other's centre): "as confused as the most
     confused measurable pair", finite so that Eq. 3 still spreads the other pairs.
   * a class with one member has radius 0 (the quantile of a single distance 0);
   * a class with no member (only possible with ``num_classes``) has NaN in its row
     and column of M; it is left out of the statistics and gets the neutral weight 1
     in the scaled matrix (the weight every pair gets when nothing is known).
5. M_hat = 2 (M - min) / (max - min) over the finite off-diagonal entries; max == min
   gives 1 everywhere off the diagonal; the diagonal of M_hat is 0.
6. Statistics over the off-diagonal entries (each unordered pair once: M is symmetric).

This module holds the numbers (:class:`ConfusionResult`) and what is computed from M
alone (:func:`scale_confusion`, :func:`confusion_stats`); how M is computed lives in
:mod:`featstore.confusion.engine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featstore.common.backend import get_array_module, to_numpy
from featstore.errors import InputError

#: quantiles reported in :meth:`ConfusionResult.stats`
STAT_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
#: centroids closer than this fraction of the configuration's size count as coincident.  Centroids
#: are means of float32 features, rounded at ~1e-7 of that size, so a smaller distance is rounding
#: noise and must not decide M (seen on an H200: 1e-9 let CPU and GPU differ by 3e7 on one pair)
COINCIDENT_RTOL = 1e-6
#: coincident pairs get at least this confusion degree (equal circles through each other's centre)
COINCIDENT_FLOOR = 1.0
#: weight of a pair whose confusion cannot be measured (a class absent from the data)
NEUTRAL_WEIGHT = 1.0


@dataclass
class ConfusionResult:
    """Everything Eq. 2 is built from, as NumPy arrays indexed like ``classes``."""

    M: np.ndarray  # (C, C) float64, diagonal 0, NaN for absent classes
    radii: np.ndarray  # (C,)
    centroids: np.ndarray  # (C, k) in the PCA space (centred by the mean of all rows)
    distances: np.ndarray  # (C, C) d_ij
    counts: np.ndarray  # (C,) members per class
    classes: np.ndarray  # (C,) label values in row order
    n_rows: int = 0
    n_components: int | None = 2
    coverage: float = 0.95
    explained_variance_ratio: float | None = None  # share of the variance kept by the k components
    n_coincident: int = 0  # unordered pairs with coincident centroids
    coincident_tol: float = 0.0  # d_ij at or below this counted as coincident
    backend: str = "numpy"
    #: optional picture data: store rows used, their class index and first two PCs
    rows: np.ndarray | None = field(default=None, repr=False)
    row_class: np.ndarray | None = field(default=None, repr=False)
    plane: np.ndarray | None = field(default=None, repr=False)

    @property
    def present(self) -> np.ndarray:
        return self.counts > 0

    def scaled(self) -> np.ndarray:
        """Eq. 3: off-diagonal min-max scaling to [0, 2] (see :func:`scale_confusion`)."""
        return scale_confusion(self.M)

    def pair_values(self) -> np.ndarray:
        """M_ij for each unordered pair i < j of present classes (the distribution)."""
        return off_diagonal_values(self.M)

    def stats(self, *, bins: int = 50) -> dict[str, Any]:
        """Mean, variance, quantiles and histogram of the off-diagonal entries of M."""
        out = confusion_stats(self.M, bins=bins)
        out.update(
            n_classes=int(self.M.shape[0]),
            n_classes_present=int(self.present.sum()),
            n_singleton_classes=int((self.counts == 1).sum()),
            n_coincident=int(self.n_coincident),
            rows_used=int(self.n_rows),
            n_components=self.n_components,
            coverage=float(self.coverage),
            explained_variance_ratio=self.explained_variance_ratio,
        )
        return out

    def top_pairs(self, n: int = 20) -> list[tuple[int, int]]:
        """Index pairs (i < j) of the ``n`` most confused classes, largest M first."""
        C = self.M.shape[0]
        iu, ju = np.triu_indices(C, k=1)
        vals = self.M[iu, ju]
        ok = np.isfinite(vals)
        iu, ju, vals = iu[ok], ju[ok], vals[ok]
        order = np.lexsort((ju, iu, -vals))[:n]
        return [(int(iu[o]), int(ju[o])) for o in order]


def _offdiag_mask(xp, C: int):
    return ~xp.eye(C, dtype=bool)


def scale_confusion(M: Any) -> Any:
    """Eq. 3: ``2 (M - min) / (max - min)`` over the finite off-diagonal entries.

    Works on NumPy or CuPy arrays and returns the same kind.  When every measurable
    pair has the same value (max == min, including "no overlap anywhere") all
    off-diagonal weights are 1, i.e. the plain unweighted confusion loss; NaN pairs
    (absent classes) get the neutral weight 1; the diagonal is 0.
    """
    xp = get_array_module(M)
    M = xp.asarray(M, dtype=xp.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise InputError(f"confusion matrix must be square (C, C), got shape {tuple(M.shape)}")
    C = M.shape[0]
    off = _offdiag_mask(xp, C)
    finite = off & xp.isfinite(M)
    out = xp.full((C, C), NEUTRAL_WEIGHT, dtype=xp.float64)
    if bool(finite.any()):
        vals = M[finite]
        lo, hi = float(vals.min()), float(vals.max())
        if hi > lo:
            out = xp.where(finite, 2.0 * (M - lo) / (hi - lo), out)
    out[~off] = 0.0
    return out


def off_diagonal_values(M: Any) -> np.ndarray:
    """Finite M_ij for i < j as NumPy (each unordered pair once)."""
    M = to_numpy(M)
    iu, ju = np.triu_indices(M.shape[0], k=1)
    vals = np.asarray(M[iu, ju], dtype=np.float64)
    return vals[np.isfinite(vals)]


def finite_or_none(v: float) -> float | None:
    """``v`` as a float, or None when it is NaN or infinite (JSON has no such numbers)."""
    return float(v) if math.isfinite(v) else None


def confusion_stats(
    M_or_values: Any, *, bins: int = 50, range_max: float | None = None
) -> dict[str, Any]:
    """Distribution statistics of the confusion degrees (paper section 2.1.2 step 4).

    Accepts a (C, C) matrix (off-diagonal pairs used, each once) or a 1-D array of
    pair values.  ``var`` is the population variance (ddof 0).  Empty -> None values.
    """
    arr = to_numpy(M_or_values)
    vals = (
        off_diagonal_values(arr) if arr.ndim == 2 else np.asarray(arr, np.float64)[np.isfinite(arr)]
    )
    n = int(vals.size)
    if n == 0:
        return {
            "n_pairs": 0,
            "mean": None,
            "var": None,
            "std": None,
            "min": None,
            "max": None,
            "median": None,
            "fraction_overlapping": None,
            "quantiles": {f"{q:g}": None for q in STAT_QUANTILES},
            "histogram": {"edges": [], "counts": []},
        }
    top = float(vals.max()) if range_max is None else float(range_max)
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    counts, edges = np.histogram(np.clip(vals, 0.0, edges[-1]), bins=edges)
    return {
        "n_pairs": n,
        "mean": finite_or_none(vals.mean()),
        "var": finite_or_none(vals.var()),
        "std": finite_or_none(vals.std()),
        "min": finite_or_none(vals.min()),
        "max": finite_or_none(vals.max()),
        "median": finite_or_none(np.median(vals)),
        "fraction_overlapping": float((vals > 0).mean()),
        "quantiles": {
            f"{q:g}": finite_or_none(v)
            for q, v in zip(STAT_QUANTILES, np.quantile(vals, STAT_QUANTILES), strict=True)
        },
        "histogram": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
    }
