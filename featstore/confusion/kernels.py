"""The confusion degree's array kernels, written once against an array module ``xp``.

``xp`` is NumPy or CuPy; each function takes it first and returns arrays of that kind.
NumPy is the reference; on CuPy the scatter-adds, per-class quantiles and the pairwise
matrix run as raw CUDA kernels (:mod:`featstore.confusion.cuda`), everything else is the
same expression.  The engine (:mod:`featstore.confusion.engine`) strings them together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.confusion.cuda import cuda_kernels, is_cupy
from featstore.confusion.result import COINCIDENT_FLOOR


def class_sums(xp, x, cls, C: int):
    """Per-class sums (C, D) float64 and counts (C,) of a block; ``cls`` in 0..C-1."""
    n, d = x.shape
    if is_cupy(xp):
        x = xp.ascontiguousarray(x)
        if x.dtype not in (xp.float32, xp.float64):
            x = x.astype(xp.float32)
        cls = xp.ascontiguousarray(cls, dtype=xp.int64)
        sums = xp.zeros((C, d), dtype=xp.float64)
        counts = xp.zeros(C, dtype=xp.float64)
        kern = cuda_kernels()["class_sums_float" if x.dtype == xp.float32 else "class_sums_double"]
        threads = 256
        blocks = int(min(65535, max(1, (n * d + threads - 1) // threads)))
        kern((blocks,), (threads,), (x, cls, np.int64(n), np.int32(d), sums, counts))
        return sums, counts
    import scipy.sparse as sp

    # sums within one block in the data's precision (a block holds few rows per class,
    # so float32 adds ~1e-7 relative), carried across blocks in float64: the centroids
    # feed a difference (r_i + r_j - d_ij) that cancels.  Avoids a float64 copy of x.
    onehot = sp.csr_matrix((np.ones(n, dtype=x.dtype), (cls, np.arange(n))), shape=(C, n))
    sums = np.asarray(onehot @ x).astype(np.float64)
    counts = np.bincount(cls, minlength=C).astype(np.float64)
    return sums, counts


def _stable_argsort(xp, a):
    return xp.argsort(a, kind="stable")


def class_quantiles(xp, dist, cls, C: int, q: float):
    """``q`` quantile of ``dist`` within each class (NaN for empty classes), vectorised.

    A sort by distance then a stable sort by class leaves each class's distances
    contiguous and ascending; the quantile is then an interpolation between two gathered
    elements per class (NumPy's default "linear" method).  Ties in distance are equal
    values, so the first sort need not be stable; the class key is int16 when it fits
    (NumPy's stable sort is then a radix sort).
    """
    order = xp.argsort(dist)
    key = cls.astype(xp.int16 if C <= np.iinfo(np.int16).max else xp.int64)
    order = order[_stable_argsort(xp, key[order])]
    s = xp.ascontiguousarray(dist[order])
    counts = xp.bincount(cls, minlength=C).astype(xp.int64)
    offsets = xp.cumsum(counts) - counts
    if is_cupy(xp):
        return cuda_kernels()["quantile"](offsets, counts, s, float(q))
    n = counts
    pos = q * (n - 1).astype(xp.float64)
    lo = xp.minimum(xp.floor(pos).astype(xp.int64), xp.maximum(n - 1, 0))
    hi = xp.minimum(lo + 1, xp.maximum(n - 1, 0))
    t = pos - lo
    safe = n > 0
    last = max(int(s.shape[0]) - 1, 0)
    a = s[xp.clip(offsets + lo, 0, last)] if s.shape[0] else xp.zeros(C)
    b = s[xp.clip(offsets + hi, 0, last)] if s.shape[0] else xp.zeros(C)
    diff = b - a
    r = xp.where(t >= 0.5, b - diff * (1.0 - t), a + diff * t)
    return xp.where(safe, r, xp.nan)


def pairwise_overlap(xp, cent, radii, present, tol: float):
    """(M, D): Eq. 2 with +inf where centroids coincide, NaN for absent classes."""
    C, k = cent.shape
    if is_cupy(xp):
        cent = xp.ascontiguousarray(cent, dtype=xp.float64)
        radii = xp.ascontiguousarray(radii, dtype=xp.float64)
        present = xp.ascontiguousarray(present, dtype=xp.bool_)
        M = xp.empty((C, C), dtype=xp.float64)
        D = xp.empty((C, C), dtype=xp.float64)
        tb = 16
        grid = ((C + tb - 1) // tb, (C + tb - 1) // tb)
        cuda_kernels()["pairwise"](
            grid, (tb, tb), (cent, radii, present, np.int32(C), np.int32(k), float(tol), M, D)
        )
        return M, D
    D = xp.empty((C, C), dtype=xp.float64)
    step = max(1, (1 << 22) // max(1, C * k))  # bound the (step, C, k) temporary
    for s in range(0, C, step):
        diff = cent[s : s + step, None, :] - cent[None, :, :]
        D[s : s + step] = xp.sqrt((diff * diff).sum(axis=2))
    idx = xp.arange(C)
    D[idx, idx] = 0.0
    both = present[:, None] & present[None, :]
    D = xp.where(both, D, xp.nan)
    D[idx, idx] = 0.0
    overlap = xp.maximum(radii[:, None] + radii[None, :] - D, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        M = xp.where(D <= tol, xp.inf, overlap / xp.where(D > 0, D, 1.0))
    M = xp.where(both, M, xp.nan)
    M[idx, idx] = 0.0
    return M, D


def fill_coincident(xp, M):
    """Replace +inf (coincident centroids) by max(finite off-diagonal M, COINCIDENT_FLOOR)."""
    inf = xp.isinf(M)
    n = int(inf.sum()) // 2
    if n == 0:
        return M, 0
    finite = xp.isfinite(M)
    cap = float(M[finite].max()) if bool(finite.any()) else 0.0
    return xp.where(inf, max(cap, COINCIDENT_FLOOR), M), n


def add_moments(xp, x, gram: Any, st: dict) -> Any:
    """Column sums of block ``x`` (float64), and its ``x.T @ x`` added into ``gram`` (or None).

    NumPy: ``np.matmul(x.T, x)`` into the worker's reusable product ``st["gram_out"]``.
    NumPy recognises the transposed pair and calls BLAS ``syrk`` (half the flops of a
    GEMM) *with the GIL released*, so the block workers multiply in parallel.  SciPy's
    ``blas.ssyrk`` wrapper, used before, holds the GIL: measured on 2 cores, N=200k,
    D=512 split over two threads, 0.495 s wall for 0.50 CPU-s with SciPy against 0.227 s
    wall for 0.45 CPU-s with NumPy.  The products are in the block's precision: the float32
    error (~1e-9 of the covariance) no longer reaches M, because pass 2 refines the basis
    (:mod:`featstore.confusion.refine`).  CuPy: cuBLAS GEMM.
    """
    total = (xp.ones(x.shape[0], dtype=x.dtype) @ x).astype(xp.float64)
    if gram is None:
        return total
    if is_cupy(xp):
        gram += x.T @ x
        return total
    out = st.get("gram_out")
    if out is None or out.dtype != x.dtype:
        out = st["gram_out"] = np.empty((x.shape[1],) * 2, dtype=x.dtype)
    np.matmul(x.T, x, out=out)
    gram += out
    return total


def shift_for(xp, x0, work_dtype):
    """The first block's mean when the data sit far from the origin, else None.

    Float32 moments of data whose mean outweighs its spread cancel (cov = E[xx'] - mm'),
    so such data are shifted first.  Shifting rounds every element once, which costs
    accuracy of its own (measured on the benchmark's zero-mean data, 1024-row blocks:
    2.5e-5 with the shift, 2.3e-6 without), so data centred near the origin (e.g. the
    store's L2-normalised audio+video) are left as they are.
    """
    m = x0.astype(xp.float64).mean(axis=0)
    spread = float(((x0 - m.astype(x0.dtype)) ** 2).sum(axis=1, dtype=xp.float64).mean())
    if float(m @ m) <= spread:
        return None
    return m.astype(work_dtype)


def top_eigh(xp, cov, k: int):
    """The ``k`` largest eigenvalues (descending) of symmetric ``cov`` and their vectors.

    NumPy: LAPACK computes only those (SciPy's ``subset_by_index``; 4x less work than the
    full decomposition at D=512, k=2).  CuPy: the full ``eigh`` (no subset there).
    """
    d = cov.shape[0]
    if is_cupy(xp):
        evals, evecs = xp.linalg.eigh(cov)
    else:
        from scipy.linalg import eigh

        evals, evecs = eigh(cov, subset_by_index=[d - k, d - 1])
    return evals[::-1][:k], evecs[:, ::-1][:, :k]


def symmetric_from_upper(xp, s2):
    """The exactly symmetric matrix from the upper triangle of ``s2`` (sums of ``x.T @ x``)."""
    upper = xp.triu(s2)
    return upper + xp.triu(upper, 1).T
