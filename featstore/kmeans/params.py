"""The estimator's parameters, the rules that follow from them, and why: which rows
the restarts use, and the ``choice_`` explanation written to label files and ``--json``.

One dataclass for ``KMeans`` and ``kmeans_dask``, so both validate and decide alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.errors import InputError
from featstore.kmeans.seeding import seeding_trials


@dataclass
class KMeansParams:
    """The estimator's parameters (see :class:`featstore.kmeans.estimator.KMeans`)."""

    n_clusters: int = 300
    n_init: int = 20
    max_iter: int = 100
    tol: float = 1e-4
    init: Any = "k-means++"
    random_state: Any = None
    backend: str = "auto"
    device: str = "auto"
    memory_budget: Any = None
    restart_sample: Any = None
    features: str = "audio+video"
    verbose: bool = False
    init_sample: int | None = None
    precision: str = "auto"

    def validate(self) -> None:
        if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 1:
            raise InputError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        if self.n_init < 1 or self.max_iter < 1:
            raise InputError("n_init and max_iter must be >= 1")
        if self.tol < 0:
            raise InputError(f"tol must be >= 0, got {self.tol}")
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise InputError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}")

    def master_rng(self) -> np.random.RandomState:
        if isinstance(self.random_state, np.random.RandomState):
            return self.random_state
        return np.random.RandomState(self.random_state)

    def default_init_sample(self) -> int:
        """Rows k-means++ seeding looks at: ``max(32 K, 10000)`` unless given."""
        return int(self.init_sample or max(32 * int(self.n_clusters), 10000))

    def restart_rows(self, n: int, backend: str | None = None, device: str | None = None) -> int:
        """Rows the restarts run on (0 = all rows)."""
        rs_ = self.restart_sample
        if self.n_init <= 1 or not isinstance(self.init, str):
            return 0
        if rs_ is None and backend == "torch" and str(device).startswith("cuda"):
            return 0  # batched restarts on the GPU are cheap enough to use every row
        if rs_ is None:
            auto = max(64 * self.n_clusters, 20000)
            return auto if n >= 3 * auto else 0
        if isinstance(rs_, float):
            if not 0 <= rs_ <= 1:
                raise InputError(f"restart_sample fraction must be in [0, 1], got {rs_}")
            rows = int(round(rs_ * n))
        else:
            rows = int(rs_)
        if rows <= 0 or rows >= n:
            return 0
        if rows < 4 * self.n_clusters:
            raise InputError(
                f"a restart sample of {rows} rows is too small for K={self.n_clusters} "
                f"(at least {4 * self.n_clusters}); give a fraction such as 0.2, or off"
            )
        return rows


def explain_choice(
    p: KMeansParams,
    *,
    backend: str,
    device: str,
    kernel: str,
    why_backend: str,
    n: int,
    n_init: int,
    restart_rows: int,
    pool_rows: int,
    streamed: bool,
) -> dict[str, Any]:
    """What ``auto`` chose and why, in words (written to label files and ``--json``)."""
    k = int(p.n_clusters)
    auto_rows = max(64 * k, 20000)
    if restart_rows:
        how = "auto" if p.restart_sample is None else f"asked for {p.restart_sample!r}"
        why_sample = (
            f"{how}: the {n_init} restarts ran on {restart_rows} random rows; the best one was then "
            f"refined on all {n} rows (same seeding, measured equal quality: bench/kmeans_quality.py)"
        )
    elif n_init <= 1 or not isinstance(p.init, str):
        why_sample = "off: a single run (n_init=1 or given initial centres)"
    elif p.restart_sample is not None:
        why_sample = f"off: asked for {p.restart_sample!r}"
    elif backend == "torch" and device.startswith("cuda"):
        why_sample = "off: batched restarts on the GPU are cheap enough to use every row"
    else:
        why_sample = f"off: {n} rows < 3 x {auto_rows} (the automatic sample size), so restarts use every row"
    if isinstance(p.init, str) and p.init == "k-means++":
        seeding = (
            f"greedy k-means++, {seeding_trials(k)} candidates per step (2 + 3 ln K), from {pool_rows} "
            "sampled rows, all restarts seeded together"
        )
    else:
        seeding = "random rows" if isinstance(p.init, str) else "given initial centres"
    return {
        "backend": backend,
        "device": device,
        "kernel": kernel,
        "why_backend": why_backend,
        "restart_sample": int(restart_rows),
        "why_restart_sample": why_sample,
        "seeding": seeding,
        "streamed": bool(streamed),
    }


def why_backend_auto(p: KMeansParams, device: str) -> str:
    """Why this backend ran, for a single-machine fit."""
    if p.backend != "auto":
        return f"asked for backend {p.backend!r}"
    if device.startswith("cuda"):
        return "auto on a GPU: torch on CUDA (verified on real hardware)"
    return (
        "auto on the CPU: scikit-learn's loop, the fastest CPU kernel measured by bench/kmeans.py"
    )
