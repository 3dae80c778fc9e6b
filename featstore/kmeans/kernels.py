"""Block kernels: the only backend-specific part of a Lloyd iteration, registered by name.

A kernel assigns a block of rows to the nearest centre and returns the block's
per-cluster sums, counts, inertia and farthest rows (:class:`BlockStats`).  The
centre update, empty-cluster re-seeding and convergence test are written once
(:mod:`featstore.kmeans.lloyd`), in float64 NumPy on the host: they touch K x D
numbers, not N x D.  Kernels register themselves by name (``@register_kernel``,
as lhotse registers its samplers), so a new backend is one class, and
:func:`featstore.kmeans.backends.make_kernel` is the one place that builds them.

* ``numpy`` / ``cupy``: blocked sgemm written once against ``xp``;
* ``faiss``: faiss's BLAS nearest-centroid search;
* ``sklearn``: scikit-learn's fused Cython Lloyd step per block (streamed passes and
  prediction of the ``sklearn`` backend; its in-memory runs call scikit-learn's whole
  Lloyd loop), in :mod:`featstore.kmeans.sklearn_kernel` with every private import;
* ``torch``: the same block kernel in torch on CPU or CUDA (:mod:`featstore.kmeans.torch_kernel`);
* ``cuml``: cuML fits in-memory restarts itself; its streamed passes use ``cupy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from featstore.common.backend import to_numpy
from featstore.errors import BackendUnavailable

#: rows per distance sub-block inside the numpy/cupy/torch kernels (bounds the N x K temp)
SUB_BLOCK_BYTES = 32 << 20
#: the same on the CPU, sized for the cache: the (rows x K) distances are written by the
#: sgemm and read back by the argmin while still in L2, as in scikit-learn's Lloyd loop
_HOST_SUB_BLOCK_BYTES = 1 << 20


@dataclass
class BlockStats:
    """What one block contributes to a Lloyd update (all host NumPy)."""

    sums: np.ndarray  # (K, D) float32/64 per-cluster sums of the block's rows
    counts: np.ndarray  # (K,) int64
    inertia: float
    # the block's farthest rows: squared distances (m,), the rows (m, D), their clusters (m,);
    # None when the kernel finds them only on demand (``far_rows``, after a pass that
    # left a cluster empty: see featstore.kmeans.lloyd)
    far_d2: np.ndarray | None = None
    far_x: np.ndarray | None = None
    far_label: np.ndarray | None = None


class LloydKernel(Protocol):
    """What the Lloyd loop needs: per pass ``prepare`` the centres, then per block
    ``step`` (labels + statistics for the update) or ``assign`` (labels + inertia)."""

    name: str

    def prepare(self, centers: np.ndarray) -> Any: ...

    def step(self, prepared: Any, x: Any, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]: ...

    def assign(self, prepared: Any, x: Any) -> tuple[np.ndarray, float]: ...


class BlockKernel(LloydKernel, Protocol):
    """A Lloyd kernel that also owns its arrays: host blocks in, device blocks out."""

    device: str

    def put(self, x: np.ndarray) -> Any:
        """A host block as this kernel's native array (on its device)."""
        ...

    def adopt(self, X: Any) -> Any:
        """A user array (NumPy/CuPy/torch, any device) as this kernel's native array."""
        ...

    def moments(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature sum and sum of squares of a block, float64, reduced on its device."""
        ...

    def take(self, x: Any, positions: np.ndarray) -> np.ndarray:
        """Rows ``positions`` of a block as host float32 (only those rows cross to the host)."""
        ...


_REGISTRY: dict[str, Callable[[str], BlockKernel]] = {}


def register_kernel(name: str) -> Callable[[Callable[[str], Any]], Callable[[str], Any]]:
    """Register ``factory(device) -> BlockKernel`` under a backend name."""

    def add(factory: Callable[[str], Any]) -> Callable[[str], Any]:
        _REGISTRY[name] = factory
        return factory

    return add


def kernel_factory(name: str) -> Callable[[str], BlockKernel] | None:
    """The registered ``factory(device)`` of a backend name, or None."""
    return _REGISTRY.get(name)


def kernel_names() -> tuple[str, ...]:
    """Registered backend names, in registration order."""
    return tuple(_REGISTRY)


class XpKernel:
    """Blocked sgemm assignment written once for NumPy and CuPy (``xp``)."""

    #: host temporaries a step makes, in float32 blocks (a streamed plan counts them):
    #: none here, the distances go through bounded sub-blocks
    host_block_temporaries = 0

    def __init__(self, name: str, device: str):
        self.name = name
        self.device = device
        self.xp: Any = __import__("cupy") if device.startswith("cuda") else np

    # data movement ------------------------------------------------------------
    def put(self, x: np.ndarray) -> Any:
        return self.xp.asarray(x) if self.xp is not np else x

    def adopt(self, X: Any) -> Any:
        if type(X).__module__.startswith("torch"):
            if self.xp is np:
                return X.detach().cpu().numpy()
            return self.xp.from_dlpack(X)
        if self.xp is np:
            return to_numpy(X)
        return self.xp.asarray(X)

    def host(self, x: Any) -> np.ndarray:
        return to_numpy(x)

    def moments(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        x64 = x.astype(self.xp.float64)
        return self.host(x64.sum(axis=0)), self.host((x64 * x64).sum(axis=0))

    def take(self, x: Any, positions: np.ndarray) -> np.ndarray:
        return self.host(x[self.xp.asarray(positions)]) if self.xp is not np else x[positions]

    # maths --------------------------------------------------------------------
    def prepare(self, centers: np.ndarray) -> Any:
        C = self.xp.asarray(centers, dtype=self.xp.float32)
        # -2 C^T once per iteration (scaling by -2 is exact), so each sub-block is sgemm + add + argmin
        return self.xp.ascontiguousarray(-2.0 * C.T), (C * C).sum(axis=1)

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        """Nearest centre and squared distance, via ||x||^2 - 2 x.c + ||c||^2 in sub-blocks."""
        xp = self.xp
        C2t, c_sq = prepared
        n = x.shape[0]
        labels = xp.empty(n, dtype=xp.int64)
        d2 = xp.empty(n, dtype=xp.float32)
        budget = _HOST_SUB_BLOCK_BYTES if xp is np else SUB_BLOCK_BYTES
        step = max(256, budget // (4 * max(1, C2t.shape[1])))
        S = xp.empty((min(step, n), C2t.shape[1]), dtype=xp.float32)
        for s in range(0, n, step):
            xb = x[s : s + step]
            Sb = S[: xb.shape[0]]
            xp.matmul(xb, C2t, out=Sb)
            Sb += c_sq[None, :]
            lab = Sb.argmin(axis=1)
            labels[s : s + step] = lab
            if xp is np:
                d2[s : s + step] = Sb[np.arange(lab.shape[0]), lab] + np.einsum("ij,ij->i", xb, xb)
            else:
                d2[s : s + step] = Sb[xp.arange(lab.shape[0]), lab] + (xb * xb).sum(axis=1)
        return labels, xp.maximum(d2, 0)

    def assign(self, prepared: Any, x: Any) -> tuple[np.ndarray, float]:
        labels, d2 = self._assign(prepared, x)
        return self.host(labels).astype(np.int32), float(d2.sum(dtype=self.xp.float64))

    def step(self, prepared: Any, x: Any, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]:
        labels, d2 = self._assign(prepared, x)
        return self.host(labels).astype(np.int32), self._stats(x, labels, d2, k, n_far)

    def _segment_sum(self, x: Any, labels: Any, k: int) -> Any:
        xp = self.xp
        if xp is np:
            import scipy.sparse as sp

            n = x.shape[0]
            onehot = sp.csr_matrix((np.ones(n, np.float32), (labels, np.arange(n))), shape=(k, n))
            return onehot @ x
        import cupyx

        sums = xp.zeros((k, x.shape[1]), dtype=xp.float32)
        cupyx.scatter_add(sums, labels, x)
        return sums

    def _far(
        self, x: Any, labels: Any, d2: Any, n_far: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n_far`` rows with the largest ``d2``: ``(d2 float64, rows, labels int64)`` on the host."""
        xp = self.xp
        m = min(n_far, x.shape[0])
        far = xp.argpartition(d2, x.shape[0] - m)[x.shape[0] - m :] if m else xp.empty(0, xp.int64)
        return (
            self.host(d2[far]).astype(np.float64),
            self.host(x[far]),
            self.host(labels[far]).astype(np.int64),
        )

    def _stats(self, x: Any, labels: Any, d2: Any, k: int, n_far: int) -> BlockStats:
        xp = self.xp
        far_d2, far_x, far_label = self._far(x, labels, d2, n_far)
        return BlockStats(
            sums=self.host(self._segment_sum(x, labels, k)),
            counts=self.host(xp.bincount(labels, minlength=k)).astype(np.int64),
            inertia=float(d2.sum(dtype=xp.float64)),
            far_d2=far_d2,
            far_x=far_x,
            far_label=far_label,
        )


class FaissKernel(XpKernel):
    """faiss's exhaustive L2 search (BLAS + fused top-1) as the CPU assignment kernel."""

    def __init__(self) -> None:
        super().__init__("faiss", "cpu")
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
            raise BackendUnavailable(
                "backend 'faiss' needs faiss-cpu (pip install faiss-cpu)"
            ) from exc
        self._faiss = faiss

    def prepare(self, centers: np.ndarray) -> Any:
        index = self._faiss.IndexFlatL2(centers.shape[1])
        index.add(np.ascontiguousarray(centers, dtype=np.float32))
        return index

    def _assign(self, prepared: Any, x: Any) -> tuple[Any, Any]:
        d2, labels = prepared.search(np.ascontiguousarray(x), 1)
        return labels[:, 0], np.maximum(d2[:, 0], 0)


@register_kernel("faiss")
def _faiss_kernel(device: str) -> BlockKernel:
    return FaissKernel()


@register_kernel("numpy")
def _numpy_kernel(device: str) -> BlockKernel:
    return XpKernel("numpy", "cpu")


@register_kernel("cupy")
@register_kernel("cuml")  # cuML fits in-memory runs itself; streamed passes use CuPy
def _cupy_kernel(device: str) -> BlockKernel:
    return XpKernel("cupy", device)
