"""The one restarts driver: scan, seed, run ``n_init`` restarts, keep the best, refine.

:meth:`featstore.kmeans.estimator.KMeans.fit` and :func:`featstore.kmeans.dask.kmeans_dask`
both call :func:`fit_restarts`; they differ only in the row source they pass (an array,
a streamed store, blocks on Dask workers) and the kernel that makes passes over it.
So the random draws, the restart-sample rule, the seeding, the choice of the best
restart and the numbering of clusters are the same code everywhere, and the same
seed gives the same clusters on one machine and on Dask.

Random numbers are drawn from one master ``RandomState`` in a fixed order: the scan's
sample keys (one per row), the restart seeds, the restart-sample choice, the seeding
pool, then each restart's own ``RandomState``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from featstore.common.backend import cupy_usable
from featstore.errors import InputError
from featstore.kmeans.batched import batched_lloyd
from featstore.kmeans.kernels import BlockKernel, LloydKernel
from featstore.kmeans.lloyd import RunResult, cuml_run, lloyd, sklearn_run
from featstore.kmeans.seeding import (
    SEED_GROUP_BYTES,
    initial_centers_many,
    seeding_pool,
    seeding_trials,
)
from featstore.kmeans.selection import canonical_relabel, pick_best_restart
from featstore.kmeans.sources import ArraySource, DataScan, RowSource
from featstore.progress import ProgressFn, ProgressTask


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


@dataclass
class FittedState:
    """What a fit found; :class:`KMeans` takes these as its trailing-underscore attributes."""

    labels_: np.ndarray  # int32 per input row (per store row for a store, -1 = excluded)
    cluster_centers_: np.ndarray  # (K, D) float32
    inertia_: float
    n_iter_: int
    inertias_: list[float]  # every restart's final inertia (on the restart sample if sampled)
    best_restart_: int
    restart_sample_: int  # rows the restarts ran on (0 = all)
    seeds_: list[int]
    choice_: dict[str, Any]  # what ran and why, in words (label files, --json)
    backend_: str
    device_: str
    n_reseeded_: int
    n_features_in_: int
    n_samples_: int
    fit_seconds_: float
    seeding_seconds_: float
    streamed_: bool
    rows_: np.ndarray | None  # store rows clustered (None for arrays)

    def as_dict(self) -> dict[str, Any]:
        """Field name -> value (no copies, unlike ``dataclasses.asdict``)."""
        return {f.name: getattr(self, f.name) for f in fields(FittedState)}


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


class _Reporter:
    """Progress of a fit as two tasks: ``restarts`` (done/n_init) and ``iterations``."""

    def __init__(self, progress: ProgressFn | None, n_init: int, max_iter: int, streamed: bool):
        self.restarts = ProgressTask(
            progress,
            "restarts",
            total=n_init,
            info="streaming from the store" if streamed else "",
        )
        self.iters = ProgressTask(progress, "iterations", total=max_iter)

    def start(self, description: str) -> None:
        self.iters.update(completed=0, description=description)

    def iteration(self, it: int, inertia: float, restart: int | None = None) -> None:
        where = f"restart {restart + 1}: " if restart is not None else ""
        self.iters.update(completed=it, info=f"{where}inertia {inertia:.6g}")

    def restart_done(self, inertia: float) -> None:
        self.restarts.advance(1, info=f"last {inertia:.6g}")

    def close(self, inertia: float) -> None:
        self.iters.close()
        self.restarts.close(info=f"kept inertia {inertia:.6g}")


def _run_many(
    src: Any,
    C0s: list[np.ndarray],
    kernel: LloydKernel,
    rep: _Reporter,
    *,
    p: KMeansParams,
    backend: str,
    tol_abs: float,
    seeds: Any,
    moments: dict[str, Any],
    refine: bool = False,
) -> list[RunResult]:
    """Every restart (or, with ``refine``, the one kept) from its starting centres on ``src``.

    Rows in memory run with the backend's own loop (torch: all restarts batched in one
    distance product; sklearn: scikit-learn's fused Lloyd; cuml: cuML); other sources
    (a streamed store, Dask blocks) run :func:`lloyd` block by block with ``kernel``.
    """
    in_memory = isinstance(src, ArraySource)
    if refine:
        rep.start(f"refine on all {src.n} rows")
    if backend == "torch" and in_memory:
        if not refine:
            rep.start(f"all {len(C0s)} restarts batched")
        runs = batched_lloyd(
            src.X,
            np.stack(C0s),
            max_iter=p.max_iter,
            tol_abs=tol_abs,
            precision=p.precision,
            on_iter=lambda r, it, inertia, _e: rep.iteration(it, inertia, None if refine else r),
        )
        for run in runs if not refine else ():
            rep.restart_done(run.inertia)
        return runs
    runs = []
    for i, C0 in enumerate(C0s):
        if not refine:
            rep.start(f"restart {i + 1} iterations")
        if backend == "cuml" and in_memory:
            run = cuml_run(src.X, C0, max_iter=p.max_iter, tol=p.tol, seed=int(seeds[i]))
        elif backend == "sklearn" and in_memory:
            run = sklearn_run(
                src.X, C0, max_iter=p.max_iter, tol_abs=tol_abs, seed=int(seeds[i]), **moments
            )
        else:
            run = lloyd(
                src,
                C0,
                kernel,
                max_iter=p.max_iter,
                tol_abs=tol_abs,
                on_iter=lambda it, inertia, _e: rep.iteration(it, inertia),
            )
        if not refine:
            rep.restart_done(run.inertia)
        runs.append(run)
    return runs


def fit_restarts(
    source: RowSource,
    params: KMeansParams,
    *,
    backend: str,
    device: str,
    kernel: BlockKernel,
    full_kernel: LloydKernel | None = None,
    n_total: int | None = None,
    why_backend: str | None = None,
    what: str = "input",
    seed_bytes: int = SEED_GROUP_BYTES,
    progress: ProgressFn | None = None,
) -> FittedState:
    """Fit k-means to ``source``: the best of ``n_init`` restarts, refined on all rows.

    ``kernel`` holds the restart sample (``put``) and runs passes over rows in memory;
    ``full_kernel`` (default ``kernel``) runs passes over ``source`` itself (Dask:
    the workers).  ``n_total``: labels are placed at ``source.rows`` in an array of
    that many rows, ``-1`` elsewhere.  ``what`` names the data in errors.
    """
    t0 = time.perf_counter()
    p = params
    k = int(p.n_clusters)
    master = p.master_rng()
    init_sample = p.default_init_sample()
    n_guess = source.n if source.n >= 0 else source.n_hint
    restart_rows = p.restart_rows(n_guess, backend, device)
    sample_size = max(init_sample, restart_rows)
    if source.sample_cap is not None:  # a streamed store: the sample must fit the budget
        init_sample = min(init_sample, source.sample_cap)
        sample_size = min(sample_size, max(init_sample, source.sample_cap))
        restart_rows = min(restart_rows, sample_size) if restart_rows else 0
    n_init = 1 if not isinstance(p.init, str) else int(p.n_init)
    rep = _Reporter(progress, n_init, p.max_iter, source.streamed)

    scan: DataScan = source.scan(sample_size, master)
    n = scan.n
    if n < k:
        raise InputError(f"{what}: {n} usable rows, fewer than n_clusters={k}")
    tol_abs = float(p.tol) * scan.mean_var
    seeds = master.randint(0, 2**31 - 1, size=n_init)
    if restart_rows and restart_rows < n:
        sample_host = scan.sample
        if sample_host.shape[0] > restart_rows:
            pick = master.choice(sample_host.shape[0], restart_rows, replace=False)
            sample_host = sample_host[np.sort(pick)]
        restart_src: Any = ArraySource(kernel.put(sample_host), kernel)
    else:
        restart_rows = 0
        restart_src = source
    # seeding runs where xp can: CuPy for cupy/cuml, the host for numpy/faiss/torch/sklearn
    pool_host = seeding_pool(scan.sample, p.init, init_sample, master)
    seed_pool: Any = kernel.put(pool_host) if kernel.name == "cupy" else pool_host
    if kernel.name == "torch" and device.startswith("cuda") and cupy_usable():
        import cupy  # k-means++ is written against xp; host seeding is slow

        seed_pool = cupy.asarray(pool_host)
    t_seed = time.perf_counter()
    rep.restarts.update(info=f"seeding {n_init} restart(s) from {int(seed_pool.shape[0])} rows")
    states = [np.random.RandomState(int(s)) for s in seeds]
    C0s = initial_centers_many(p.init, seed_pool, k, source.dim, states, seed_bytes)
    seeding_seconds = time.perf_counter() - t_seed

    full_kernel = full_kernel or kernel
    moments = {"mean": scan.mean, "mean_var": scan.mean_var}
    common: dict[str, Any] = {"p": p, "backend": backend, "tol_abs": tol_abs}
    runs = _run_many(
        restart_src,
        C0s,
        kernel if restart_rows else full_kernel,
        rep,
        seeds=seeds,
        moments={} if restart_rows else moments,  # a sample's own moments are computed there
        **common,
    )
    inertias = [float(run.inertia) for run in runs]
    best_i = pick_best_restart(inertias)
    best = runs[best_i]
    del runs
    final = best
    if restart_rows:
        final = _run_many(
            source,
            [best.centers],
            full_kernel,
            rep,
            seeds=[seeds[best_i]],
            moments=moments,
            refine=True,
            **common,
        )[0]
        final.n_reseeded += best.n_reseeded

    # cluster ids numbered canonically, so equal partitions give equal label files
    labels, centers = canonical_relabel(final.labels, final.centers)
    if n_total is not None and source.rows is not None:
        placed = np.full(n_total, -1, np.int32)
        placed[source.rows] = labels
        labels = placed
    choice = explain_choice(
        p,
        backend=backend,
        device=device,
        kernel=source.describe(backend, device),
        why_backend=why_backend or why_backend_auto(p, device),
        n=int(n),
        n_init=n_init,
        restart_rows=int(restart_rows),
        pool_rows=int(seed_pool.shape[0]),
        streamed=source.streamed,
    )
    rep.close(float(final.inertia))
    return FittedState(
        labels_=labels,
        cluster_centers_=centers,
        inertia_=float(final.inertia),
        n_iter_=int(final.n_iter),
        inertias_=inertias,
        best_restart_=int(best_i),
        restart_sample_=int(restart_rows),
        seeds_=[int(s) for s in seeds],
        choice_=choice,
        backend_=backend,
        device_=device,
        n_reseeded_=int(final.n_reseeded),
        n_features_in_=int(source.dim),
        n_samples_=int(n),
        fit_seconds_=time.perf_counter() - t0,
        seeding_seconds_=seeding_seconds,
        streamed_=bool(source.streamed),
        rows_=source.rows if n_total is not None else None,
    )
