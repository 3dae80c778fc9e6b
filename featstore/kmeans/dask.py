"""``diccae cluster --dask``: K-means over a store on a Dask cluster, same results and label files.

CPU workers (``backend="dask-cpu"``): Lloyd iterations as map-reduce over blocks of
``dask.array.from_zarr`` arrays (:mod:`featstore.kmeans.dask_blocks`), driven by the
*same* restarts driver as :meth:`featstore.kmeans.estimator.KMeans.fit`
(:func:`featstore.kmeans.restarts.fit_restarts`): the same random draws, seeding,
restart sample, choice of the best restart and cluster numbering.  So with the same
seed the Dask run picks the same seeding sample, the same initial centres and
therefore the same clusters as the single-machine run with the same block kernel
(``--backend numpy`` or ``faiss``; the CPU default ``sklearn`` runs scikit-learn's
own loop), up to float rounding of sums over different block boundaries.

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
from featstore.kmeans.backends import make_kernel, resolve_backend
from featstore.kmeans.dask_blocks import DaskBlocks, DaskKernel, DaskSource
from featstore.kmeans.params import KMeansParams
from featstore.kmeans.restarts import FittedState, fit_restarts
from featstore.kmeans.selection import canonical_relabel
from featstore.progress import ProgressFn
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, FeatureView

DASK_BACKENDS = ("auto", "dask-cpu", "dask-cuml")


@dataclass
class DaskKMeansResult(FittedState):
    """A distributed fit: :class:`~featstore.kmeans.restarts.FittedState` (the attributes of a
    fitted ``KMeans``) plus the cluster size.  ``backend_`` is ``dask-cpu`` or ``dask-cuml``;
    ``streamed_`` means ``persist=False`` (blocks re-read from the store every pass)."""

    n_workers_: int = 0


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
    progress: ProgressFn | None = None,
) -> DaskKMeansResult:
    """K-means of a store's features on a Dask cluster (see the module docstring).

    Same parameters and meaning as :class:`featstore.kmeans.estimator.KMeans`; with the same
    ``seed`` the CPU path reproduces ``KMeans(...).fit(store)``.  ``backend``:
    ``auto`` (cuML when every worker has it, else CPU), ``dask-cpu``, ``dask-cuml``,
    or a ``diccae cluster --backend`` name (see :func:`split_backend`);
    ``kernel``: the CPU block kernel (``auto`` = numpy, ``faiss``, ``numpy``, ``torch``).
    ``progress`` receives the same updates as ``KMeans.fit(progress=...)``.
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
    params = KMeansParams(
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
    params.validate()
    FeatureView(store, features)  # a wrong feature name fails before any work is sent
    asked = backend
    if backend not in DASK_BACKENDS:
        backend, kernel = split_backend(backend)
    chosen = _pick_backend(client, backend)
    asked_kernel = kernel
    if kernel == "auto":  # a block kernel: sklearn's loop cannot be split into blocks
        chosen_cpu = resolve_backend("auto", "cpu")[0]
        kernel = "numpy" if chosen_cpu == "sklearn" else chosen_cpu
    elif kernel not in ("faiss", "numpy", "torch"):
        raise BackendUnavailable(
            f"unknown CPU block kernel {kernel!r}; expected auto, faiss, numpy or torch"
        )
    n_workers = len(client.scheduler_info()["workers"])
    what = f"{store.path} ({features})"
    try:
        blocks = DaskBlocks(client, store, features, rows_per_block=rows_per_block, persist=persist)
        try:
            if chosen == "dask-cuml":
                if blocks.n < k:
                    raise InputError(f"{what}: {blocks.n} usable rows, fewer than n_clusters={k}")
                state = _fit_cuml(client, blocks, params, n_rows=store.n_rows)
            else:
                state = fit_restarts(
                    DaskSource(blocks, n_workers),
                    params,
                    backend=kernel,
                    device="cpu",
                    kernel=make_kernel(kernel, "cpu"),
                    full_kernel=DaskKernel(blocks, kernel),
                    n_total=store.n_rows,
                    why_backend=_why_cpu(asked, asked_kernel, kernel),
                    what=what,
                    progress=progress,
                )
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
    fitted = state.as_dict()
    fitted.update(
        backend_=chosen,
        device_="cuda" if chosen == "dask-cuml" else "cpu",
        choice_={**state.choice_, "backend": chosen},
        fit_seconds_=time.perf_counter() - t0,
    )
    return DaskKMeansResult(**fitted, n_workers_=n_workers)


def _why_cpu(asked: str, asked_kernel: str, kernel: str) -> str:
    """Why the CPU workers ran, and why this block kernel (for ``choice_``)."""
    if asked == "auto":
        why = "auto with --dask: cuML is not usable on every worker, so map-reduce Lloyd on the CPU workers"
    else:
        why = f"asked for backend {asked!r} with --dask"
    if asked_kernel == "auto":
        return f"{why}; block kernel {kernel} (scikit-learn's loop cannot be split into blocks)"
    return f"{why}; block kernel {kernel}"


def _fit_cuml(
    client: Any, blocks: DaskBlocks, p: KMeansParams, *, n_rows: int
) -> FittedState:  # pragma: no cover - needs GPUs + cuML
    """``cuml.dask.cluster.KMeans`` on the blocks moved to the workers' GPUs as CuPy."""
    import cupy as cp
    import dask.array as da
    from cuml.dask.cluster import KMeans as DaskCuKMeans
    from dask import delayed

    t0 = time.perf_counter()

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
    init = p.init
    cu_init = (
        "k-means||"
        if isinstance(init, str) and init == "k-means++"
        else (init if isinstance(init, str) else cp.asarray(np.asarray(init, np.float32)))
    )
    km = DaskCuKMeans(
        client=client,
        n_clusters=int(p.n_clusters),
        init=cu_init,
        n_init=p.n_init,
        max_iter=p.max_iter,
        tol=p.tol,
        random_state=p.random_state,
    )
    km.fit(X)
    labels = km.predict(X).compute()
    labels = cp.asnumpy(labels) if hasattr(labels, "get") else np.asarray(labels)
    centers = km.cluster_centers_
    centers = cp.asnumpy(centers) if hasattr(centers, "get") else np.asarray(centers)
    inertia = abs(float(km.score(X)))
    n_iter = int(getattr(getattr(km, "internal_model", None), "n_iter_", 0) or 0)
    placed = np.full(n_rows, -1, np.int32)
    placed[blocks.rows] = labels.astype(np.int32)
    placed, centers = canonical_relabel(placed, centers.astype(np.float32))
    return FittedState(
        labels_=placed,
        cluster_centers_=centers,
        inertia_=inertia,
        n_iter_=n_iter,
        inertias_=[inertia],
        best_restart_=0,
        restart_sample_=0,
        seeds_=[] if p.random_state is None else [int(p.random_state)],
        choice_={
            "backend": "dask-cuml",
            "device": "cuda",
            "kernel": "cuML's distributed KMeans (cuml.dask) on the workers' GPUs",
            "why_backend": "cuML is usable on every Dask worker",
            "restart_sample": 0,
            "why_restart_sample": "off: cuML runs its own restarts on every row",
            "seeding": "cuML's scalable k-means++ (k-means||)"
            if isinstance(init, str) and init == "k-means++"
            else ("random rows" if isinstance(init, str) else "given initial centres"),
            "streamed": False,
        },
        backend_="dask-cuml",
        device_="cuda",
        n_reseeded_=0,
        n_features_in_=blocks.dim,
        n_samples_=blocks.n,
        fit_seconds_=time.perf_counter() - t0,
        seeding_seconds_=0.0,
        streamed_=not blocks.persist,
        rows_=blocks.rows,
    )
