"""K-means on stored features, one idea per module, read top to bottom:

``inputs`` (checking arrays and sizes) -> ``backends`` (which backend and device run)
-> ``kernels`` / ``sklearn_kernel`` / ``torch_kernel`` (block kernels behind a
``Protocol``, registered by name; every private scikit-learn loop is in ``sklearn_kernel``) -> ``sources`` (rows in memory or streamed from a store, and the sampling scan)
-> ``seeding`` (k-means++ for many restarts at once) -> ``lloyd`` / ``batched`` (the
Lloyd loop; all restarts in one product) -> ``selection`` (best restart, canonical
ids) -> ``params`` (parameters, the restart-sample rule, the ``choice_`` explanation)
-> ``restarts`` (the one driver: scan, seed, restarts, refine) -> ``estimator``
(scikit-learn-style ``KMeans``) and ``dask`` / ``dask_blocks`` (the same driver on a
Dask cluster).

Public API (what other packages import): :class:`KMeans`, :func:`kmeans_dask`,
:class:`DaskKMeansResult`, :func:`split_backend`, ``BACKENDS``, ``DASK_BACKENDS``,
:func:`resolve_backend`, :func:`parse_bytes`, :func:`kmeans_plusplus`,
:func:`pick_best_restart`, :func:`canonical_relabel`.  Importing this package loads
no Dask, torch, faiss or scikit-learn; they load when a fit uses them.
"""

from __future__ import annotations

from featstore.kmeans.backends import BACKENDS, resolve_backend
from featstore.kmeans.dask import DASK_BACKENDS, DaskKMeansResult, kmeans_dask, split_backend
from featstore.kmeans.estimator import KMeans
from featstore.kmeans.inputs import parse_bytes
from featstore.kmeans.seeding import kmeans_plusplus
from featstore.kmeans.selection import canonical_relabel, pick_best_restart

__all__ = [
    "BACKENDS",
    "DASK_BACKENDS",
    "DaskKMeansResult",
    "KMeans",
    "canonical_relabel",
    "kmeans_dask",
    "kmeans_plusplus",
    "parse_bytes",
    "pick_best_restart",
    "resolve_backend",
    "split_backend",
]
