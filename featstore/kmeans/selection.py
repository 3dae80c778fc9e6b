"""Choosing among restarts and numbering clusters, the same way on every machine.

Restarts that reach the same partition report inertias that differ in the last bits
(CPU, BLAS, threads, Dask block boundaries), and cluster ids depend on the seeding.
Both are made canonical here, so the same data and seed write byte-identical label files.
"""

from __future__ import annotations

import math

import numpy as np

#: restarts whose inertias differ by less than this (relative) are tied; the earliest wins
RESTART_TIE_RTOL = 1e-5


def pick_best_restart(inertias: list[float], rtol: float = RESTART_TIE_RTOL) -> int:
    """Index of the best restart, robust to rounding: the earliest within ``rtol`` of the minimum.

    Restarts that converge to the same partition report inertias that differ only in
    the last bits, and which one is lowest then depends on the CPU, the BLAS, the
    thread count or the reduction order.  Treating near-equal inertias as a tie and
    taking the earliest makes the choice the same everywhere.
    """
    if not inertias:
        raise ValueError("no restarts")
    finite = [v for v in inertias if math.isfinite(v)]
    if not finite:
        return 0
    low = min(finite)
    limit = low + rtol * abs(low)
    return next(i for i, v in enumerate(inertias) if math.isfinite(v) and v <= limit)


def canonical_relabel(labels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters in order of their first row (clusters without rows go last).

    Two runs that find the same partition (another restart, backend, thread count
    or Dask) then write byte-identical label files.  ``labels`` may hold -1 for rows
    that were not clustered; they stay -1.  Returns new int32 labels and the centres
    permuted to match.
    """
    labels = np.asarray(labels)
    k = centers.shape[0]
    valid = labels >= 0
    present, first = np.unique(labels[valid], return_index=True)
    order = present[np.argsort(first, kind="stable")]
    missing = np.setdiff1d(np.arange(k), order, assume_unique=True)
    old_of_new = np.concatenate([order, missing]).astype(np.int64)
    new_of_old = np.empty(k, np.int32)
    new_of_old[old_of_new] = np.arange(k, dtype=np.int32)
    out = np.full(labels.shape, -1, np.int32)
    out[valid] = new_of_old[labels[valid]]
    return out, np.ascontiguousarray(np.asarray(centers)[old_of_new])
