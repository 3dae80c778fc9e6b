"""``diccae cluster --dask``: K-means over a store on a Dask cluster, same results and label files.

CPU workers (``backend="dask-cpu"``): Lloyd iterations as map-reduce over blocks of
``dask.array.from_zarr`` arrays.  Each block (whole store chunks) is turned into
the chosen features on its worker (``audio+video``: each modality L2-normalised,
then concatenated; invalid rows dropped, exactly as :class:`featstore.store.features.FeatureView`),
kept in the workers' memory (``persist=True``; ``False`` re-reads the store every
pass, for data larger than the cluster's memory), and every iteration:

1. the centres are broadcast to all workers (``client.scatter(..., broadcast=True)``);
2. each block returns its labels, per-cluster partial sums and counts, inertia and
   farthest rows (the same block kernel as the single-machine path: faiss/NumPy);
3. the client adds the partial results and computes the new centres.

Everything that decides the result is *reused* from :mod:`featstore.kmeans.estimator`, not
rewritten: the Lloyd loop and its stopping rules (``_lloyd``), the update with
empty-cluster re-seeding (``_Accumulator``), the k-means++ seeding (``_initial_centers_many``), the
restart-sample rule (``KMeans._restart_rows``) and the block kernels.  The random
numbers are drawn on the client in the same order as ``KMeans.fit`` draws them, so
with the same seed the Dask run picks the same seeding sample, the same initial
centres and therefore the same clusters as the single-machine run with the same
block kernel (``--backend numpy`` or ``faiss``; the CPU default ``sklearn`` runs
scikit-learn's own loop), up to float rounding of sums over different block boundaries.

GPU workers (``backend="dask-cuml"``): ``cuml.dask.cluster.KMeans`` on CuPy blocks
(workers from dask-cuda's ``LocalCUDACluster`` or ``dask cuda worker``).  cuML runs
its own restarts and scalable k-means++ (``k-means||``), so its result follows cuML's
seeding rather than ours, and only the best restart's inertia is reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.dask_runtime import dask_client
from featstore.errors import BackendUnavailable, DiccaeError, InputError
from featstore.kmeans.estimator import (
    MEMORY_BLOCK_ROWS,
    BlockStats,
    KMeans,
    _ArraySource,
    _initial_centers_many,
    _lloyd,
    _make_kernel,
    _seeding_pool,
    canonical_relabel,
    pick_best_restart,
    resolve_backend,
)
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, FeatureView, assemble_block

DASK_BACKENDS = ("auto", "dask-cpu", "dask-cuml")


# ============================================================== worker side
def _block_features(
    parts: list[np.ndarray], keep: np.ndarray, start: int, combined: bool, extra: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Worker side: the same block assembly as FeatureView.iter_blocks (one definition)."""
    return assemble_block(parts, keep, start, combined=combined, extra=extra, what=what)


def _block_rows(block: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return block[0]


def _block_moments(block: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x64 = block[1].astype(np.float64)
    return x64.sum(axis=0), (x64 * x64).sum(axis=0)


def _block_take(block: tuple[np.ndarray, np.ndarray], positions: np.ndarray) -> np.ndarray:
    return block[1][positions]


_KERNELS: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    if name not in _KERNELS:  # one per worker process (faiss/torch setup is not free)
        _KERNELS[name] = _make_kernel(name, "cpu")
    return _KERNELS[name]


def _block_step(
    block: tuple[np.ndarray, np.ndarray], centers: np.ndarray, kernel: str, k: int, n_far: int
) -> tuple[np.ndarray, BlockStats]:
    """Map step of one Lloyd iteration: labels and the block's partial sums/counts/inertia."""
    kern = _kernel(kernel)
    return kern.step(kern.prepare(centers), kern.put(block[1]), k, n_far)


def _block_assign(
    block: tuple[np.ndarray, np.ndarray], centers: np.ndarray, kernel: str
) -> tuple[np.ndarray, float]:
    kern = _kernel(kernel)
    return kern.assign(kern.prepare(centers), kern.put(block[1]))


# ============================================================== client side
class DaskBlocks:
    """A store's feature choice as blocks on the workers (whole chunks, valid rows only)."""

    def __init__(
        self,
        client: Any,
        store: FeatureStore,
        features: str,
        *,
        rows_per_block: int | None = None,
        persist: bool = True,
    ):
        import dask.array as da
        from dask import delayed

        self.client = client
        self.persist = persist
        view = FeatureView(store, features)  # validates the choice with the usual message
        parts = list(MODALITIES) if features == COMBINED else [features]
        self.dim = view.dim
        mask = view.valid_mask()
        c = store.chunk_rows
        rpb = max(c, (rows_per_block or MEMORY_BLOCK_ROWS) // c * c)
        url = str(Path(store.path).resolve())
        arrays = [da.from_zarr(url, component=p).rechunk({0: rpb}) for p in parts]
        blocks_of = [a.to_delayed().ravel() for a in arrays]
        extra = parts[0] not in MODALITIES
        pieces = []
        for i, start in enumerate(range(0, store.n_rows, rpb)):
            keep = np.flatnonzero(mask[start : start + rpb])
            if keep.size == 0:
                continue
            pieces.append(
                delayed(_block_features, pure=True)(
                    [b[i] for b in blocks_of],
                    keep,
                    start,
                    features == COMBINED,
                    extra,
                    f"{store.path} ({features})",
                )
            )
        self.blocks = client.compute(pieces) if persist else pieces
        rows = client.gather(self._map(_block_rows)) if self.blocks else []
        self.rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        sizes = [r.shape[0] for r in rows]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = int(self.starts[-1])

    def _map(self, fn: Any, *args: Any) -> list:
        """``fn(block, *args)`` for every block, as futures (args may be futures)."""
        if self.persist:
            return self.client.map(
                fn, self.blocks, *[[a] * len(self.blocks) for a in args], pure=False
            )
        from dask import delayed

        return self.client.compute([delayed(fn, pure=False)(b, *args) for b in self.blocks])

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        s1 = np.zeros(self.dim, np.float64)
        s2 = np.zeros(self.dim, np.float64)
        for a, b in self.client.gather(self._map(_block_moments)):
            s1 += a
            s2 += b
        return s1, s2

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted feature positions (0..n-1), gathered to the client in order."""
        out = np.empty((positions.size, self.dim), np.float32)
        which = np.searchsorted(self.starts, positions, side="right") - 1
        futs, where = [], []
        for b in np.unique(which):
            sel = np.flatnonzero(which == b)
            futs.append(self._map_one(int(b), _block_take, positions[sel] - self.starts[b]))
            where.append(sel)
        for sel, rows in zip(where, self.client.gather(futs), strict=True):
            out[sel] = rows
        return out

    def _map_one(self, i: int, fn: Any, *args: Any) -> Any:
        if self.persist:
            return self.client.submit(fn, self.blocks[i], *args, pure=False)
        from dask import delayed

        return self.client.compute(delayed(fn, pure=False)(self.blocks[i], *args))

    def release(self) -> None:
        if self.persist:
            self.client.cancel(self.blocks)
        self.blocks = []


class _DaskSource:
    """``_lloyd``'s data source: block i starts at feature position ``starts[i]``."""

    def __init__(self, blocks: DaskBlocks):
        self.n = blocks.n
        self.dim = blocks.dim
        self._starts = blocks.starts

    def blocks(self):
        for i, s in enumerate(self._starts[:-1]):
            yield int(s), i


class _Pass:
    """One pass over the blocks with fixed centres; submitted on first use."""

    def __init__(self, centers: np.ndarray):
        self.centers = centers
        self.futures: list | None = None
        self.kind = ""


class _DaskKernel:
    """``_lloyd``'s kernel whose block work runs on the Dask workers.

    ``prepare`` only records the centres; the first ``step``/``assign`` of a pass
    broadcasts them and submits the map over all blocks at once, so the blocks are
    processed in parallel while ``_lloyd`` consumes their results in order.
    """

    name = "dask"

    def __init__(self, blocks: DaskBlocks, block_kernel: str):
        self.b = blocks
        self.block_kernel = block_kernel

    def prepare(self, centers: np.ndarray) -> _Pass:
        return _Pass(np.ascontiguousarray(centers, np.float32))

    def _submit(self, p: _Pass, kind: str, *args: Any) -> None:
        if p.futures is None:
            c = self.b.client.scatter(p.centers, broadcast=True, hash=False)
            fn = _block_step if kind == "step" else _block_assign
            p.futures = self.b._map(fn, c, self.block_kernel, *args)
            p.kind = kind

    def step(self, p: _Pass, i: int, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]:
        self._submit(p, "step", k, n_far)
        return p.futures[i].result()

    def assign(self, p: _Pass, i: int) -> tuple[np.ndarray, float]:
        self._submit(p, "assign")
        return p.futures[i].result()


@dataclass
class DaskKMeansResult:
    """What a distributed fit found; the attribute names follow :class:`featstore.kmeans.estimator.KMeans`."""

    labels_: np.ndarray  # int32 per store row, -1 = excluded
    cluster_centers_: np.ndarray
    inertia_: float
    inertias_: list[float]
    n_iter_: int
    best_restart_: int
    restart_sample_: int
    seeds_: list[int]
    backend_: str
    device_: str
    n_reseeded_: int
    n_features_in_: int
    n_samples_: int
    fit_seconds_: float
    n_workers_: int
    streamed_: bool = False  # "persist=False": blocks re-read from the store every pass


def split_backend(backend: str) -> tuple[str, str]:
    """``diccae cluster --backend`` value -> ``(Dask backend, CPU block kernel)``.

    ``auto``/``cuml`` keep their meaning (cuML when the workers have it); ``faiss``,
    ``numpy`` and ``torch`` select the CPU block kernel of ``dask-cpu``.
    """
    if backend in ("auto", "dask-cpu", "dask-cuml"):
        return backend, "auto"
    if backend == "cuml":
        return "dask-cuml", "auto"
    if backend in ("faiss", "numpy", "torch"):
        return "dask-cpu", backend
    if backend == "sklearn":
        return "dask-cpu", "numpy"
    raise BackendUnavailable(
        f"--backend {backend!r} is not available with --dask; use auto, cuml, faiss, numpy, torch, dask-cpu or dask-cuml"
    )


def _pick_backend(client: Any, backend: str) -> str:
    if backend not in DASK_BACKENDS:
        raise BackendUnavailable(
            f"unknown Dask k-means backend {backend!r}; expected one of {', '.join(DASK_BACKENDS)}"
        )
    if backend == "dask-cpu":
        return backend

    def probe() -> bool:
        from featstore.common.backend import cuml_usable

        return cuml_usable()

    usable = client.run(probe)
    every = bool(usable) and all(usable.values())
    if backend == "dask-cuml" and not every:
        raise BackendUnavailable(
            "backend dask-cuml needs cuML and a GPU on every Dask worker "
            f"(usable on {sum(usable.values())} of {len(usable)}); start the workers with dask-cuda"
        )
    return "dask-cuml" if every else "dask-cpu"


def kmeans_dask(
    store: FeatureStore | str | Path,
    *,
    k: int = 300,
    n_init: int = 20,
    seed: int | None = 0,
    features: str = COMBINED,
    scheduler: str | None = None,
    client: Any = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    init: Any = "k-means++",
    restart_sample: Any = None,
    init_sample: int | None = None,
    backend: str = "auto",
    kernel: str = "auto",
    rows_per_block: int | None = None,
    persist: bool = True,
    progress: Any = None,
) -> DaskKMeansResult:
    """K-means of a store's features on a Dask cluster (see the module docstring).

    Same parameters and meaning as :class:`featstore.kmeans.estimator.KMeans`; with the same
    ``seed`` the CPU path reproduces ``KMeans(...).fit(store)``.  ``backend``:
    ``auto`` (cuML when every worker has it, else CPU), ``dask-cpu``, ``dask-cuml``,
    or a ``diccae cluster --backend`` name (see :func:`split_backend`);
    ``kernel``: the CPU block kernel (``auto`` = faiss, ``numpy``, ``torch``).
    ``progress`` receives the same events as ``KMeans.fit(progress=...)``.
    """
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    if client is None:
        if scheduler is None:
            raise InputError("kmeans_dask needs scheduler= (tcp://host:8786 or local:N) or client=")
        with dask_client(scheduler) as own:
            return kmeans_dask(
                store,
                k=k,
                n_init=n_init,
                seed=seed,
                features=features,
                client=own,
                max_iter=max_iter,
                tol=tol,
                init=init,
                restart_sample=restart_sample,
                init_sample=init_sample,
                backend=backend,
                kernel=kernel,
                rows_per_block=rows_per_block,
                persist=persist,
                progress=progress,
            )
    t0 = time.perf_counter()
    est = KMeans(
        k,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        init=init,
        random_state=seed,
        restart_sample=restart_sample,
        features=features,
        init_sample=init_sample,
    )
    est._validate()
    FeatureView(store, features)  # a wrong feature name fails before any work is sent
    if backend not in DASK_BACKENDS:
        backend, kernel = split_backend(backend)
    chosen = _pick_backend(client, backend)
    if kernel == "auto":  # a block kernel: sklearn's loop cannot be split into blocks
        chosen_cpu = resolve_backend("auto", "cpu")[0]
        kernel = "numpy" if chosen_cpu == "sklearn" else chosen_cpu
    elif kernel not in ("faiss", "numpy", "torch"):
        raise BackendUnavailable(
            f"unknown CPU block kernel {kernel!r}; expected auto, faiss, numpy or torch"
        )
    emit = progress or (lambda ev: None)
    try:
        blocks = DaskBlocks(client, store, features, rows_per_block=rows_per_block, persist=persist)
        try:
            if blocks.n < k:
                raise InputError(
                    f"{store.path} ({features}): {blocks.n} usable rows, fewer than n_clusters={k}"
                )
            if chosen == "dask-cuml":
                res = _fit_cuml(
                    client,
                    blocks,
                    k=k,
                    n_init=n_init,
                    max_iter=max_iter,
                    tol=tol,
                    seed=seed,
                    init=init,
                )
            else:
                res = _fit_cpu(blocks, est, kernel, emit)
        finally:
            blocks.release()
    except DiccaeError:
        raise
    except (
        Exception
    ):  # the workers read chunks through dask.array: name a damaged one if that is why
        damage = store.find_damage(list(MODALITIES) if features == COMBINED else [features])
        if damage is not None:
            raise damage from None
        raise
    labels = np.full(store.n_rows, -1, np.int32)
    labels[blocks.rows] = res["labels"]
    labels, res["centers"] = canonical_relabel(
        labels, res["centers"]
    )  # same numbering as KMeans.fit
    seconds = time.perf_counter() - t0
    emit({"event": "done", "inertia": res["inertia"], "seconds": seconds})
    return DaskKMeansResult(
        labels_=labels,
        cluster_centers_=res["centers"],
        inertia_=float(res["inertia"]),
        inertias_=[float(v) for v in res["inertias"]],
        n_iter_=int(res["n_iter"]),
        best_restart_=int(res["best"]),
        restart_sample_=int(res["restart_rows"]),
        seeds_=res["seeds"],
        backend_=chosen,
        device_="cuda" if chosen == "dask-cuml" else "cpu",
        n_reseeded_=int(res["reseeded"]),
        n_features_in_=blocks.dim,
        n_samples_=blocks.n,
        fit_seconds_=seconds,
        n_workers_=len(client.scheduler_info()["workers"]),
        streamed_=not persist,
    )


def _fit_cpu(blocks: DaskBlocks, est: KMeans, kernel_name: str, emit: Any) -> dict[str, Any]:
    """``KMeans.fit``'s in-memory orchestration, with full-data passes on the workers.

    The random draws happen in fit's order: the seeding-sample keys (one per row, in
    row order, as ``_scan`` draws them), then the restart seeds, then the
    restart-sample choice, then the seeding pool (``_seeding_pool``), then each
    restart's own RandomState.
    """
    k = int(est.n_clusters)
    master = (
        est.random_state
        if isinstance(est.random_state, np.random.RandomState)
        else np.random.RandomState(est.random_state)
    )
    init_sample = int(est.init_sample or max(32 * k, 10000))
    n = blocks.n
    restart_rows = est._restart_rows(n)
    sample_size = max(init_sample, restart_rows)
    emit({"event": "scan", "streamed": not blocks.persist})
    keys = master.random_sample(n)  # _scan's keys: the smallest sample_size keys win
    if n <= sample_size:
        positions = np.arange(n)
    else:
        positions = np.sort(np.argpartition(keys, sample_size - 1)[:sample_size])
    sample = blocks.take(positions)
    s1, s2 = blocks.moments()
    var = s2 / n - (s1 / n) ** 2
    tol_abs = float(est.tol) * float(np.maximum(var, 0).mean())

    explicit_init = not isinstance(est.init, str)
    n_init = 1 if explicit_init else int(est.n_init)
    seeds = master.randint(0, 2**31 - 1, size=n_init)
    dask_kernel = _DaskKernel(blocks, kernel_name)
    full = _DaskSource(blocks)
    local = _make_kernel(kernel_name, "cpu")
    if restart_rows and restart_rows < n:
        sample_host = (
            sample
            if sample.shape[0] <= restart_rows
            else sample[np.sort(master.choice(sample.shape[0], restart_rows, replace=False))]
        )
        restart_src, restart_kernel = _ArraySource(local.put(sample_host)), local
    else:
        restart_rows = 0
        restart_src, restart_kernel = full, dask_kernel

    pool = _seeding_pool(sample, est.init, init_sample, master)
    C0s = _initial_centers_many(
        est.init, pool, k, blocks.dim, [np.random.RandomState(int(seeds[i])) for i in range(n_init)]
    )
    runs = []
    for i in range(n_init):
        C0 = C0s[i]
        emit({"event": "restart", "restart": i, "n_init": n_init})

        def on_iter(it: int, inertia: float, n_empty: int, _i: int = i) -> None:
            emit(
                {
                    "event": "iter",
                    "restart": _i,
                    "iter": it,
                    "max_iter": est.max_iter,
                    "inertia": inertia,
                    "reseeded": n_empty,
                }
            )

        run = _lloyd(
            restart_src, C0, restart_kernel, max_iter=est.max_iter, tol_abs=tol_abs, on_iter=on_iter
        )
        runs.append(run)
        emit({"event": "restart_done", "restart": i, "inertia": run.inertia, "n_iter": run.n_iter})
    inertias = [run.inertia for run in runs]
    best_i = pick_best_restart(inertias)
    best = runs[best_i]
    if restart_rows:
        emit({"event": "refine", "rows": n})

        def on_refine(it: int, inertia: float, n_empty: int) -> None:
            emit(
                {
                    "event": "iter",
                    "restart": "refine",
                    "iter": it,
                    "max_iter": est.max_iter,
                    "inertia": inertia,
                    "reseeded": n_empty,
                }
            )

        final = _lloyd(
            full,
            best.centers,
            dask_kernel,
            max_iter=est.max_iter,
            tol_abs=tol_abs,
            on_iter=on_refine,
        )
        final.n_reseeded += best.n_reseeded
    else:
        final = best
    return {
        "labels": final.labels,
        "centers": final.centers,
        "inertia": final.inertia,
        "inertias": inertias,
        "n_iter": final.n_iter,
        "best": best_i,
        "restart_rows": restart_rows,
        "seeds": [int(s) for s in seeds],
        "reseeded": final.n_reseeded,
    }


def _fit_cuml(
    client: Any,
    blocks: DaskBlocks,
    *,
    k: int,
    n_init: int,
    max_iter: int,
    tol: float,
    seed: int | None,
    init: Any,
) -> dict[str, Any]:  # pragma: no cover - needs GPUs + cuML
    """``cuml.dask.cluster.KMeans`` on the blocks moved to the workers' GPUs as CuPy."""
    import cupy as cp
    import dask.array as da
    from cuml.dask.cluster import KMeans as DaskCuKMeans
    from dask import delayed

    def to_gpu(block: tuple[np.ndarray, np.ndarray]) -> Any:
        import cupy

        return cupy.asarray(block[1])

    sizes = np.diff(blocks.starts)
    parts = [
        da.from_delayed(
            delayed(to_gpu)(b),
            shape=(int(s), blocks.dim),
            dtype=np.float32,
            meta=cp.empty((0, blocks.dim), cp.float32),
        )
        for b, s in zip(blocks.blocks, sizes, strict=True)
    ]
    X = client.persist(da.concatenate(parts, axis=0))
    cu_init = (
        "k-means||"
        if isinstance(init, str) and init == "k-means++"
        else (init if isinstance(init, str) else cp.asarray(np.asarray(init, np.float32)))
    )
    km = DaskCuKMeans(
        client=client,
        n_clusters=k,
        init=cu_init,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    km.fit(X)
    labels = km.predict(X).compute()
    labels = cp.asnumpy(labels) if hasattr(labels, "get") else np.asarray(labels)
    centers = km.cluster_centers_
    centers = cp.asnumpy(centers) if hasattr(centers, "get") else np.asarray(centers)
    inertia = abs(float(km.score(X)))
    n_iter = int(getattr(getattr(km, "internal_model", None), "n_iter_", 0) or 0)
    return {
        "labels": labels.astype(np.int32),
        "centers": centers.astype(np.float32),
        "inertia": inertia,
        "inertias": [inertia],
        "n_iter": n_iter,
        "best": 0,
        "restart_rows": 0,
        "seeds": [] if seed is None else [int(seed)],
        "reseeded": 0,
    }


# ============================================================== label files
def cluster_store_dask(
    store: FeatureStore | str | Path,
    *,
    out: str | Path,
    scheduler: str | None = None,
    client: Any = None,
    k: int = 300,
    n_init: int = 20,
    seed: int | None = 0,
    features: str = COMBINED,
    backend: str = "auto",
    align_to: str | Path | None = None,
    round: int | None = None,
    parent: str | Path | None = None,
    restart_sample: Any = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    persist: bool = True,
    progress: bool = True,
    plot: bool = True,
) -> Any:
    """:func:`featstore.labels.files.cluster_store` on a Dask cluster: same label file, metadata and plot.

    Returns a :class:`featstore.labels.files.ClusterResult`; ``meta.backend`` is
    ``dask-cpu`` or ``dask-cuml`` and ``meta.extra`` records the scheduler and workers.
    """
    from featstore.labels.files import _RichProgress, finish_cluster_run, prepare_cluster_run

    store, out, previous, prev_meta = prepare_cluster_run(store, out, align_to)
    kw = dict(
        k=k,
        n_init=n_init,
        seed=seed,
        features=features,
        scheduler=scheduler,
        client=client,
        max_iter=max_iter,
        tol=tol,
        restart_sample=restart_sample,
        backend=backend,
        persist=persist,
    )
    if progress:
        with _RichProgress(n_init, max_iter) as bar:
            km = kmeans_dask(store, progress=bar, **kw)
    else:
        km = kmeans_dask(store, **kw)
    return finish_cluster_run(
        store,
        km,
        out,
        k=k,
        n_init=n_init,
        seed=seed,
        features=features,
        align_to=align_to,
        previous=previous,
        prev_meta=prev_meta,
        round=round,
        parent=parent,
        max_iter=max_iter,
        tol=tol,
        plot=plot,
        extra={
            "dask": {
                "scheduler": scheduler or "client",
                "n_workers": km.n_workers_,
                "persist": persist,
            }
        },
    )
