"""scikit-learn's private Cython Lloyd loops behind our kernel contract, in one module.

scikit-learn computes an iteration per 256-row chunk: a single-threaded sgemm into a
buffer that stays in cache, the argmin, and the chunk's rows added to their cluster's
sum while they are still in cache.  That fused loop is the fastest CPU kernel we have
measured on 2 cores, but it is private API (``sklearn.cluster._k_means_lloyd``,
``_k_means_common``, ``_kmeans``).  Every use of it is here, so a scikit-learn that
moves or changes it breaks one module: :func:`private_loops` then returns None and the
``sklearn`` backend falls back to the NumPy block kernel (and the in-memory loop to
the public ``KMeans``), never silently to wrong numbers.
tests/featstore/kmeans/test_sklearn_kernel.py pins the behaviour we rely on.

:class:`SklearnKernel` serves the ``sklearn`` backend's streamed passes and
prediction.  Per block, ``step`` runs the fused loop's E-step (``update_centers=False``:
per 256-row chunk the distance sgemm and the argmin) and sums the rows per cluster
with torch's ``index_add_`` in the same thread:

* not the loop's own centre update: for a cluster left empty *inside the block* it
  relocates a far row there, which had to be undone, and its relocation makes two
  block-sized temporaries (``X - centers[labels]``), memory the streamed plan gives
  to its cache instead.  E-step + ``index_add_`` took 20.0 ms per 6,250 x 512 block
  (K = 300, one thread) against 19.5 ms for the fused update (19.8 vs 19.4 with two
  threads at once);
* the inertia is ``_inertia_dense`` (one more sweep of the block), only when the
  Lloyd loop asks for it;
* the farthest rows are not found per block: they matter only when a cluster is
  empty after a whole pass, so :func:`featstore.kmeans.lloyd.lloyd` then asks
  :meth:`SklearnKernel.far_rows` in one extra pass (scikit-learn does the same).

The loops run in the calling thread (``n_threads=1``); :attr:`SklearnKernel.workers`
tells the Lloyd loop to give blocks to that many threads at once (dynamic, so a core
busy with the store reader does not stall a static OpenMP team).  BLAS must be held
to one thread around a pass (:meth:`SklearnKernel.session`), as scikit-learn does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from featstore.common.torch_threads import optional_torch, torch_serial
from featstore.kmeans.kernels import BlockKernel, BlockStats, XpKernel, register_kernel


@functools.cache
def private_loops() -> dict[str, Any] | None:
    """scikit-learn's private loop functions by role, or None where this scikit-learn lacks them."""
    try:
        from sklearn.cluster._k_means_common import _inertia_dense
        from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
        from sklearn.cluster._kmeans import _kmeans_single_lloyd
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    except ImportError:  # pragma: no cover - a future scikit-learn may move them
        return None
    return {
        "iteration": lloyd_iter_chunked_dense,
        "inertia": _inertia_dense,
        "single_lloyd": _kmeans_single_lloyd,
        "n_threads": _openmp_effective_n_threads,
    }


@functools.cache
def _threadpools() -> Any:
    """One threadpoolctl controller for the process.

    ``threadpool_limits`` inspects every loaded library on each call: 3.4 ms with torch
    loaded, and ~0.5 MB of transient allocations that a small memory budget noticed.
    The libraries that matter (scikit-learn's BLAS) are loaded by then: the loops are.
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _ones(n: int, cache: dict[int, np.ndarray]) -> np.ndarray:
    """Unit sample weights (read-only, shared between threads)."""
    w = cache.get(n)
    if w is None:
        w = np.ones(n, np.float32)
        w.flags.writeable = False
        cache[n] = w
    return w


class SklearnKernel(XpKernel):
    """The ``sklearn`` backend's block kernel: scikit-learn's fused chunked Lloyd step."""

    def __init__(self, loops: dict[str, Any]) -> None:
        super().__init__("sklearn", "cpu")
        self._loops = loops
        self.workers = max(1, int(loops["n_threads"]()))
        self._ones: dict[int, np.ndarray] = {}

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """BLAS on one thread while passes run (scikit-learn's loops parallelise themselves)."""
        with _threadpools().limit(limits=1, user_api="blas"):
            yield

    def prepare(self, centers: np.ndarray) -> Any:
        return np.ascontiguousarray(centers, dtype=np.float32)

    def _labels(self, C: np.ndarray, x: np.ndarray, n_threads: int) -> np.ndarray:
        """Nearest centre of every row (scikit-learn's E-step alone)."""
        n = x.shape[0]
        labels = np.empty(n, np.int32)
        k = C.shape[0]
        unused = np.zeros(k, np.float32)  # centre outputs, untouched without update_centers
        self._loops["iteration"](
            x, _ones(n, self._ones), C, C, unused, labels, unused, n_threads, update_centers=False
        )
        return labels

    def _d2(self, C: np.ndarray, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each row's squared distance to its own centre, computed directly."""
        d2 = np.empty(x.shape[0], np.float32)
        for s in range(0, x.shape[0], 4096):
            diff = x[s : s + 4096] - C[labels[s : s + 4096]]
            d2[s : s + 4096] = np.einsum("ij,ij->i", diff, diff)
        return d2

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.session():
            labels = self._labels(prepared, x, self.workers)
        return labels, self._d2(prepared, x, labels)

    def assign(self, prepared: Any, x: Any) -> tuple[np.ndarray, float]:
        """Labels (on all cores) and inertia of a block, as :meth:`step` computes them.

        The inertia runs on one thread: its float32 partial sums per thread would make
        the last bits depend on the core count (0.7 ms per 6,250 x 512 rows).
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        with self.session():
            labels = self._labels(prepared, x, self.workers)
        ones = _ones(x.shape[0], self._ones)
        return labels, float(self._loops["inertia"](x, ones, prepared, labels, 1))

    #: the inertia is a second sweep of the block here, so the Lloyd loop may skip it
    inertia_optional = True

    def step(
        self, prepared: Any, x: Any, k: int, n_far: int, *, inertia: bool = True
    ) -> tuple[np.ndarray, BlockStats]:
        """Labels, sums, counts and inertia of a block (no far rows), on this thread.

        Call it inside :meth:`session`.  ``inertia=False`` skips the inertia's sweep
        (NaN instead).
        """
        C = prepared
        x = np.ascontiguousarray(x, dtype=np.float32)
        labels = self._labels(C, x, 1)
        counts = np.bincount(labels, minlength=k).astype(np.int64)
        sums = cluster_sums(x, labels, k)
        loops = self._loops
        ones = _ones(x.shape[0], self._ones)
        d2_sum = float(loops["inertia"](x, ones, C, labels, 1)) if inertia else float("nan")
        return labels, BlockStats(sums=sums, counts=counts, inertia=d2_sum)

    def far_rows(
        self, prepared: Any, x: Any, labels: np.ndarray, n_far: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The block's ``n_far`` rows farthest from their centre: ``(d2, rows, labels)``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        labels = np.asarray(labels, np.int64)
        return self._far(x, labels, self._d2(prepared, x, labels), n_far)


def cluster_sums(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster sums of the rows of ``x`` (float32, added in row order), as float64.

    torch's ``index_add_`` on this thread only: 0.3 ms per 6,250 x 512 block, the
    same bits as ``np.add.at`` (20 ms) whatever torch's thread count.
    """
    torch = optional_torch()
    if torch is None:  # pragma: no cover - torch is installed with diccae
        sums32 = np.zeros((k, x.shape[1]), np.float32)
        np.add.at(sums32, labels, x)
        return sums32.astype(np.float64)
    out = torch.zeros((k, x.shape[1]), dtype=torch.float32)
    with torch_serial(torch):
        out.index_add_(0, torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(x))
    return out.numpy().astype(np.float64)


def sklearn_single_lloyd() -> tuple[Any, Any] | None:
    """scikit-learn's whole single-run Lloyd loop and its thread count, or None."""
    loops = private_loops()
    return None if loops is None else (loops["single_lloyd"], loops["n_threads"])


@register_kernel("sklearn")
def _sklearn_kernel(device: str) -> BlockKernel:
    loops = private_loops()
    return SklearnKernel(loops) if loops is not None else XpKernel("numpy", "cpu")
