"""Dynamic weighting of the confusion loss (paper section 2.1.3).

After every epoch the fused features of the update set give a C x C confusion
degree matrix (Eq. 2, computed by :mod:`featstore.confusion`, the one shared
implementation); it is min-max scaled to [0, 2] (Eq. 3) and weights each
different-class pair of the next epoch's confusion loss (Eq. 4).  Before the
first update every pair weighs 1.  ``static`` keeps every pair at 1 (the "w/o
M_ij" ablation); its weight w scales the whole confusion term instead (see
:func:`trainer.build.build_model_and_loss`), because a constant on the
different-class pairs alone cancels in the loss's weight-sum normaliser, so the
Figure 3 sweep would vary nothing the paper varies.

:func:`confusion_of_features` is the single call into featstore.confusion, so a
distributed trainer only has to gather features before calling it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_of_features(z: np.ndarray, y: np.ndarray, num_classes: int):
    """ConfusionResult of features ``z`` with labels ``y`` (classes 0..num_classes-1)."""
    from featstore.confusion import confusion_degree

    return confusion_degree(
        np.asarray(z, np.float64),
        np.asarray(y),
        n_components=2,
        coverage=0.95,
        num_classes=num_classes,
    )


def uniform_weights(num_classes: int, value: float = 1.0) -> np.ndarray:
    w = np.full((num_classes, num_classes), float(value), np.float32)
    np.fill_diagonal(w, 1.0)
    return w


def off_diagonal_stats(m: np.ndarray) -> dict[str, float]:
    """Mean and variance of the finite M_ij, i != j (NaN = absent class, skipped)."""
    m = np.asarray(m, np.float64)
    off = m[~np.eye(m.shape[0], dtype=bool)]
    off = off[np.isfinite(off)]
    if off.size == 0:
        return {"mean": float("nan"), "var": float("nan")}
    return {"mean": float(off.mean()), "var": float(off.var())}


@dataclass
class PairWeights:
    """The pair-weight matrix in use and how it was obtained."""

    kind: str  # dynamic | static | uniform
    num_classes: int
    static_weight: float = 1.0
    matrix: np.ndarray | None = None
    updates: int = 0

    def __post_init__(self) -> None:
        if self.matrix is None:
            self.reset()

    def reset(self) -> None:
        self.matrix = uniform_weights(
            self.num_classes, 1.0
        )  # static: w scales the loss term, not the pairs
        self.updates = 0

    def update(self, z: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Recompute from update-set features; returns raw and scaled M stats for logging.

        Static/uniform weighting still measures the confusion (it is logged) but
        keeps its constant matrix.
        """
        keep = y >= 0
        z, y = z[keep], y[keep]
        if len(np.unique(y)) < 2:
            return {}
        result = confusion_of_features(z, y, self.num_classes)
        scaled = np.asarray(result.scaled(), np.float32)
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=2.0, neginf=0.0)
        if self.kind == "dynamic":
            self.matrix = scaled
            self.updates += 1
        raw = off_diagonal_stats(result.M)
        sc = off_diagonal_stats(scaled)
        return {
            "confusion_mean": raw["mean"],
            "confusion_var": raw["var"],
            "mhat_mean": sc["mean"],
            "mhat_var": sc["var"],
        }
