"""K-means pseudo-labels at the speed of the hardware, in memory or streamed from a store.

DICCAE's self-supervised phase trains on K-means cluster ids (K=300, best of 20
restarts) and re-clusters fused features every few epochs, so clustering runs many
times on millions of rows.  The design follows from that (one idea per module):

* **One Lloyd loop, many kernels** (:mod:`~featstore.kmeans.lloyd`,
  :mod:`~featstore.kmeans.kernels`).  Every backend only supplies a *block kernel*;
  the centre update, empty-cluster re-seeding and convergence test are written once.
  In memory, the CPU default runs scikit-learn's fused Lloyd loop, and the ``torch``
  backend runs all restarts at once (:mod:`~featstore.kmeans.batched`).
* **The same loop in memory and out of core** (:mod:`~featstore.kmeans.sources`): when
  the features exceed ``memory_budget`` the blocks are read from the store on every pass.
* **Restarts on a sample, one driver** (:mod:`~featstore.kmeans.restarts`): the best of
  ``n_init`` seedings is picked on a random sample and only the winner is refined on
  all rows; the Dask path (:mod:`~featstore.kmeans.dask`) calls the same driver.
* **k-means++ seeding on a sample** (:mod:`~featstore.kmeans.seeding`), all restarts
  seeded together.

This module is the scikit-learn-style front: an inert ``__init__``, ``fit`` returning
``self`` and trailing-underscore results.  Rows with NaN/Inf are reported as an
:class:`~featstore.errors.InputError` naming them, never clustered silently.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from featstore.errors import InputError
from featstore.kmeans.backends import make_kernel, resolve_backend
from featstore.kmeans.inputs import as_float32_2d, check_finite, parse_bytes
from featstore.kmeans.params import KMeansParams
from featstore.kmeans.restarts import FittedState, fit_restarts
from featstore.kmeans.seeding import SEED_GROUP_BYTES, kmeans_plusplus
from featstore.kmeans.sources import MEMORY_BLOCK_ROWS, ArraySource
from featstore.kmeans.streamed import store_source
from featstore.progress import ProgressFn

#: importable here for callers written before the split (bench/kmeans.py, bench/gpu_suite.py)
__all__ = ["KMeans", "kmeans_plusplus", "resolve_backend"]


class KMeans:
    """K-means with scikit-learn's estimator contract, on arrays or a feature store.

    Parameters
    ----------
    n_clusters, n_init, max_iter, tol, init, random_state
        As in scikit-learn.  ``tol`` is relative to the mean per-feature variance.
        ``init`` is ``"k-means++"`` (greedy, on a sample of ``init_sample`` rows),
        ``"random"`` (distinct random rows) or an array of starting centres (then
        ``n_init`` is 1).  All restarts draw their seeds from one
        ``RandomState(random_state)``, so a fixed seed gives identical results.
    backend, device
        ``auto|faiss|numpy|cupy|torch|cuml`` and ``auto|cpu|cuda``; see
        :func:`resolve_backend`.  ``backend_`` / ``device_`` record what ran.
    memory_budget
        Bytes (or ``"2GB"``).  A store whose features do not fit is streamed
        chunk by chunk on every iteration instead of being loaded.
    restart_sample
        Rows (int) or fraction (float in (0, 1]) on which the ``n_init`` restarts
        run; the best restart is then refined on all rows.  ``None`` (default) =
        automatic: on when ``n_init > 1`` and the data has at least three times
        ``max(64 * n_clusters, 20000)`` rows (then that many rows are sampled),
        off for smaller inputs.  ``0`` or ``1.0`` turns it off.
    features
        Which features of a store to cluster (``audio``, ``video``, ``audio+video``
        or an extra 2-D array name).
    init_sample
        Rows k-means++ seeding looks at (default ``max(32 * n_clusters, 10000)``).
    precision
        Distance products of the ``torch`` backend's batched restarts on CUDA:
        ``auto`` (= ``tf32``), ``tf32``, ``bf16`` or ``fp32``.  Labels and inertia
        always come from a final exact float32 pass; on the CPU it is ``fp32``.

    Ties: restarts whose inertias agree within ``RESTART_TIE_RTOL`` count as equal
    and the earliest wins; cluster ids are numbered in order of each cluster's
    first row, so the same data and seed give the same labels on any machine.

    Attributes
    ----------
    labels_ : int32, one per input row (for a store: per store row, -1 = excluded)
    cluster_centers_ : (K, D) float32;  inertia_, n_iter_ of the kept solution
    inertias_ : final inertia of every restart (on the restart sample when sampled)
    best_restart_, restart_sample_ (rows used, 0 = all), seeds_, backend_, device_,
    streamed_, n_reseeded_ (empty clusters re-seeded), rows_ (store rows clustered)
    choice_ : dict saying what ran and why (kernel, restart sample, seeding), for reports
    progress
        ``fit(progress=fn)`` calls ``fn`` with :class:`featstore.progress.ProgressUpdate`
        values for two tasks: ``restarts`` (done of ``n_init``; info: seeding, streaming,
        the last inertia) and ``iterations`` (of the current restart or the refinement on
        all rows; info: the current inertia).  ``cli.progress.rich_progress`` draws them.
    """

    _PARAMS = tuple(f.name for f in fields(KMeansParams))

    # fitted results (set by fit from a FittedState; declared for type checkers)
    labels_: np.ndarray
    cluster_centers_: np.ndarray
    inertia_: float
    backend_: str
    device_: str

    def __init__(
        self,
        n_clusters: int = 300,
        *,
        n_init: int = 20,
        max_iter: int = 100,
        tol: float = 1e-4,
        init: Any = "k-means++",
        random_state: Any = None,
        backend: str = "auto",
        device: str = "auto",
        memory_budget: Any = None,
        restart_sample: Any = None,
        features: str = "audio+video",
        verbose: bool = False,
        init_sample: int | None = None,
        precision: str = "auto",
    ):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.random_state = random_state
        self.backend = backend
        self.device = device
        self.memory_budget = memory_budget
        self.restart_sample = restart_sample
        self.features = features
        self.verbose = verbose
        self.init_sample = init_sample
        self.precision = precision

    # sklearn-style parameter access ------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self._PARAMS}

    def set_params(self, **params: Any) -> KMeans:
        for key, value in params.items():
            if key not in self._PARAMS:
                raise ValueError(f"invalid parameter {key!r} for KMeans")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        return (
            f"KMeans(n_clusters={self.n_clusters}, n_init={self.n_init}, backend={self.backend!r})"
        )

    # --------------------------------------------------------------------- fit
    def fit(self, source: Any, y: Any = None, *, progress: ProgressFn | None = None) -> KMeans:
        """Cluster ``source`` (a FeatureStore or an (N, D) NumPy/CuPy/torch array)."""
        from featstore.store.core import FeatureStore

        params = KMeansParams(**self.get_params())
        params.validate()
        backend, device = resolve_backend(params.backend, params.device)
        kernel = make_kernel(backend, device)
        budget = parse_bytes(params.memory_budget)
        k = int(params.n_clusters)
        if isinstance(source, FeatureStore):
            src: Any = store_source(
                source,
                params.features,
                kernel,
                backend=backend,
                k=k,
                budget=budget,
                # given starting centres need no seeding sample (the scan keeps none)
                init_sample=params.default_init_sample() if isinstance(params.init, str) else 0,
            )
            n_total: int | None = source.n_rows
            what = f"{source.path} ({params.features})"
        else:
            X = kernel.adopt(as_float32_2d(source))
            check_finite(X, what="input array")
            src, n_total, what = ArraySource(X, kernel), None, "input"
        # a memory budget caps the seeding temporaries at a tenth of it
        seed_bytes = (
            SEED_GROUP_BYTES if budget is None else max(1, min(SEED_GROUP_BYTES, budget // 10))
        )
        state = fit_restarts(
            src,
            params,
            backend=backend,
            device=str(device),
            kernel=kernel,
            n_total=n_total,
            what=what,
            seed_bytes=seed_bytes,
            progress=progress,
        )
        self._set_fitted(state)
        return self

    def _set_fitted(self, state: FittedState) -> None:
        for name, value in state.as_dict().items():
            setattr(self, name, value)

    def fit_predict(self, source: Any, y: Any = None) -> np.ndarray:
        return self.fit(source).labels_

    def predict(self, X: Any) -> np.ndarray:
        """Nearest learned centre for every row of an array, or of a store (-1 = excluded)."""
        from featstore.store.core import FeatureStore

        if not hasattr(self, "cluster_centers_"):
            raise InputError("this KMeans is not fitted yet; call fit() first")
        kernel = make_kernel(self.backend_, self.device_)
        prepared = kernel.prepare(self.cluster_centers_)
        if isinstance(X, FeatureStore):
            from featstore.store.features import FeatureView

            out = np.full(X.n_rows, -1, np.int32)
            for rows, xb in FeatureView(X, self.features).iter_blocks(MEMORY_BLOCK_ROWS):
                out[rows] = kernel.assign(prepared, kernel.put(xb))[0]
            return out
        Xa = kernel.adopt(as_float32_2d(X))
        if Xa.shape[1] != self.cluster_centers_.shape[1]:
            raise InputError(
                f"X has {Xa.shape[1]} features, the model was fitted on {self.cluster_centers_.shape[1]}"
            )
        check_finite(Xa, what="input array")
        out = np.empty(Xa.shape[0], np.int32)
        for s, xb in ArraySource(Xa).blocks():
            out[s : s + xb.shape[0]] = kernel.assign(prepared, xb)[0]
        return out
