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
from featstore.kmeans.lloyd import PassResult, RunResult, cuml_run, lloyd, sklearn_run
from featstore.kmeans.params import KMeansParams, explain_choice, why_backend_auto
from featstore.kmeans.seeding import SEED_GROUP_BYTES, initial_centers_many, seeding_pool
from featstore.kmeans.selection import canonical_relabel, pick_best_restart
from featstore.kmeans.sources import ArraySource, DataScan, RowSource
from featstore.progress import ProgressFn, ProgressTask


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
        # a streamed pass that is unlikely to be the last does not compute its inertia
        what = f"inertia {inertia:.6g}" if np.isfinite(inertia) else "labels still moving"
        self.iters.update(completed=it, info=f"{where}{what}")

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
    first: PassResult | None = None,
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
            rep.iteration(run.n_iter, run.inertia)  # these loops report only when done
        elif backend == "sklearn" and in_memory:
            run = sklearn_run(
                src.X, C0, max_iter=p.max_iter, tol_abs=tol_abs, seed=int(seeds[i]), **moments
            )
            rep.iteration(run.n_iter, run.inertia)
        else:
            run = lloyd(
                src,
                C0,
                kernel,
                max_iter=p.max_iter,
                tol_abs=tol_abs,
                on_iter=lambda it, inertia, _e: rep.iteration(it, inertia),
                first=first if i == 0 else None,
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

    full_kernel = full_kernel or kernel
    first: PassResult | None = None
    scan: DataScan
    scan_assign = getattr(source, "scan_assign", None)
    if scan_assign is not None and not isinstance(p.init, str):
        # given starting centres need no sample: the scan makes the first Lloyd pass too
        C_given = initial_centers_many(p.init, None, k, source.dim, [master])[0]
        scan, first = scan_assign(master, C_given, full_kernel)
    else:
        scan = source.scan(sample_size, master)
    n = scan.n
    if n < k:
        raise InputError(f"{what}: {n} usable rows, fewer than n_clusters={k}")
    tol_abs = float(p.tol) * scan.mean_var
    seeds = master.randint(0, 2**31 - 1, size=n_init)
    restart_src: Any = source
    if restart_rows and restart_rows < n:
        sample_host = scan.sample
        if sample_host.shape[0] > restart_rows:
            pick = master.choice(sample_host.shape[0], restart_rows, replace=False)
            sample_host = sample_host[np.sort(pick)]
        restart_src = ArraySource(kernel.put(sample_host), kernel)
        del sample_host
    else:
        restart_rows = 0
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
    pool_rows = int(seed_pool.shape[0])
    # the sample is done with (the restarts hold their own copy): a streamed store's
    # passes keep decoded rows in that memory (featstore.kmeans.streamed.stream_plan)
    del pool_host, seed_pool
    scan.sample = np.empty((0, source.dim), np.float32)

    moments = {"mean": scan.mean, "mean_var": scan.mean_var}
    common: dict[str, Any] = {"p": p, "backend": backend, "tol_abs": tol_abs}
    runs = _run_many(
        restart_src,
        C0s,
        kernel if restart_rows else full_kernel,
        rep,
        seeds=seeds,
        moments={} if restart_rows else moments,  # a sample's own moments are computed there
        first=first,
        **common,
    )
    inertias = [float(run.inertia) for run in runs]
    best_i = pick_best_restart(inertias)
    best = runs[best_i]
    del runs
    final = best
    if restart_rows:
        restart_src = None  # the restarts' sample, before the passes over all rows
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
        pool_rows=pool_rows,
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
