"""Inter-class confusion degree (paper section 2.1.2, Eq. 2) and its scaling (Eq. 3).

The definition, with every choice the paper leaves open (docs/confusion-degree.md):

1. PCA fitted on all rows given (centred by their mean), projecting to ``n_components``
   (default 2, the paper's circles; any k; ``None`` = the full space, no projection).
2. Centroid c_i = mean of class i's projected members.
3. Radius r_i = the ``coverage`` quantile (default 0.95, NumPy's linear interpolation)
   of the distances of class i's members to c_i.
4. d_ij = ||c_i - c_j||,  M_ij = max(0, r_i + r_j - d_ij) / d_ij (i != j), M_ii = 0.
   * coincident centroids (d_ij <= 1e-9 x the size of the configuration) would give
     +inf; they get the largest finite off-diagonal value of M, and at least 1 (two
     equal circles each passing through the other's centre): "as confused as the most
     confused measurable pair", finite so that Eq. 3 still spreads the other pairs.
   * a class with one member has radius 0 (the quantile of a single distance 0);
   * a class with no member (only possible with ``num_classes``) has NaN in its row
     and column of M; it is left out of the statistics and gets the neutral weight 1
     in the scaled matrix (the weight every pair gets when nothing is known).
5. M_hat = 2 (M - min) / (max - min) over the finite off-diagonal entries; max == min
   gives 1 everywhere off the diagonal; the diagonal of M_hat is 0.
6. Statistics over the off-diagonal entries (each unordered pair once: M is symmetric).

The maths is written once against an array module ``xp`` (NumPy, or CuPy when the
input lives on the GPU).  It streams over row blocks in two passes, so the same code
serves an in-memory array and a store larger than memory:

* pass 1, per block while it is in cache: row count, column sums and the D x D moment
  (``syrk``; -> mean, covariance, PCA basis) and class counts;
* pass 2: each block projected to the basis (k floats per row kept); the centroids are
  the class means of the projections, then one distance per row and per-class
  quantiles after one sort by distance and one stable sort by class.  (For k above
  ``MAX_KEPT_COMPONENTS`` or no projection, pass 1 also sums each class's D-dim rows
  and pass 2 keeps only the distances.)

Blocks are shared by one worker thread per core, each with its own partial sums and
one BLAS/torch thread (:func:`_run_blocks`).  On CuPy one worker queues everything on
the GPU, and the per-class sums, the per-class quantiles and the pairwise overlap
matrix run as CUDA kernels (:func:`_cuda_kernels`); the NumPy path is the reference.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.backend import get_array_module, to_numpy
from featstore.common.fileio import atomic_write_path
from featstore.errors import InputError

#: quantiles reported in :meth:`ConfusionResult.stats`
STAT_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
#: centroids closer than this fraction of the configuration's size count as coincident.  Centroids
#: are means of float32 features, rounded at ~1e-7 of that size, so a smaller distance is rounding
#: noise and must not decide M (seen on an H200: 1e-9 let CPU and GPU differ by 3e7 on one pair)
COINCIDENT_RTOL = 1e-6
#: coincident pairs get at least this confusion degree (equal circles through each other's centre)
COINCIDENT_FLOOR = 1.0
#: weight of a pair whose confusion cannot be measured (a class absent from the data)
NEUTRAL_WEIGHT = 1.0
#: rows per block: 4096 x 512 float32 is 8 MiB, so two workers' blocks stay in a 32 MiB L3
#: cache (measured: 10-15 % less CPU than 16384-row blocks, N=200k, D=512, 2-core VM)
DEFAULT_BLOCK_ROWS = 4096


# --------------------------------------------------------------------------- result
@dataclass
class ConfusionResult:
    """Everything Eq. 2 is built from, as NumPy arrays indexed like ``classes``."""

    M: np.ndarray  # (C, C) float64, diagonal 0, NaN for absent classes
    radii: np.ndarray  # (C,)
    centroids: np.ndarray  # (C, k) in the PCA space (centred by the mean of all rows)
    distances: np.ndarray  # (C, C) d_ij
    counts: np.ndarray  # (C,) members per class
    classes: np.ndarray  # (C,) label values in row order
    n_rows: int = 0
    n_components: int | None = 2
    coverage: float = 0.95
    explained_variance_ratio: float | None = None  # share of the variance kept by the k components
    n_coincident: int = 0  # unordered pairs with coincident centroids
    coincident_tol: float = 0.0  # d_ij at or below this counted as coincident
    backend: str = "numpy"
    #: optional picture data: store rows used, their class index and first two PCs
    rows: np.ndarray | None = field(default=None, repr=False)
    row_class: np.ndarray | None = field(default=None, repr=False)
    plane: np.ndarray | None = field(default=None, repr=False)

    @property
    def present(self) -> np.ndarray:
        return self.counts > 0

    def scaled(self) -> np.ndarray:
        """Eq. 3: off-diagonal min-max scaling to [0, 2] (see :func:`scale_confusion`)."""
        return scale_confusion(self.M)

    def pair_values(self) -> np.ndarray:
        """M_ij for each unordered pair i < j of present classes (the distribution)."""
        return off_diagonal_values(self.M)

    def stats(self, *, bins: int = 50) -> dict[str, Any]:
        """Mean, variance, quantiles and histogram of the off-diagonal entries of M."""
        out = confusion_stats(self.M, bins=bins)
        out.update(
            n_classes=int(self.M.shape[0]),
            n_classes_present=int(self.present.sum()),
            n_singleton_classes=int((self.counts == 1).sum()),
            n_coincident=int(self.n_coincident),
            rows_used=int(self.n_rows),
            n_components=self.n_components,
            coverage=float(self.coverage),
            explained_variance_ratio=self.explained_variance_ratio,
        )
        return out

    def top_pairs(self, n: int = 20) -> list[tuple[int, int]]:
        """Index pairs (i < j) of the ``n`` most confused classes, largest M first."""
        C = self.M.shape[0]
        iu, ju = np.triu_indices(C, k=1)
        vals = self.M[iu, ju]
        ok = np.isfinite(vals)
        iu, ju, vals = iu[ok], ju[ok], vals[ok]
        order = np.lexsort((ju, iu, -vals))[:n]
        return [(int(iu[o]), int(ju[o])) for o in order]


# ----------------------------------------------------------------------- scaling/stats
def _offdiag_mask(xp, C: int):
    return ~xp.eye(C, dtype=bool)


def scale_confusion(M: Any) -> Any:
    """Eq. 3: ``2 (M - min) / (max - min)`` over the finite off-diagonal entries.

    Works on NumPy or CuPy arrays and returns the same kind.  When every measurable
    pair has the same value (max == min, including "no overlap anywhere") all
    off-diagonal weights are 1, i.e. the plain unweighted confusion loss; NaN pairs
    (absent classes) get the neutral weight 1; the diagonal is 0.
    """
    xp = get_array_module(M)
    M = xp.asarray(M, dtype=xp.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise InputError(f"confusion matrix must be square (C, C), got shape {tuple(M.shape)}")
    C = M.shape[0]
    off = _offdiag_mask(xp, C)
    finite = off & xp.isfinite(M)
    out = xp.full((C, C), NEUTRAL_WEIGHT, dtype=xp.float64)
    if bool(finite.any()):
        vals = M[finite]
        lo, hi = float(vals.min()), float(vals.max())
        if hi > lo:
            out = xp.where(finite, 2.0 * (M - lo) / (hi - lo), out)
    out[~off] = 0.0
    return out


def off_diagonal_values(M: Any) -> np.ndarray:
    """Finite M_ij for i < j as NumPy (each unordered pair once)."""
    M = to_numpy(M)
    iu, ju = np.triu_indices(M.shape[0], k=1)
    vals = np.asarray(M[iu, ju], dtype=np.float64)
    return vals[np.isfinite(vals)]


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def confusion_stats(
    M_or_values: Any, *, bins: int = 50, range_max: float | None = None
) -> dict[str, Any]:
    """Distribution statistics of the confusion degrees (paper section 2.1.2 step 4).

    Accepts a (C, C) matrix (off-diagonal pairs used, each once) or a 1-D array of
    pair values.  ``var`` is the population variance (ddof 0).  Empty -> None values.
    """
    arr = to_numpy(M_or_values)
    vals = (
        off_diagonal_values(arr) if arr.ndim == 2 else np.asarray(arr, np.float64)[np.isfinite(arr)]
    )
    n = int(vals.size)
    if n == 0:
        return {
            "n_pairs": 0,
            "mean": None,
            "var": None,
            "std": None,
            "min": None,
            "max": None,
            "median": None,
            "fraction_overlapping": None,
            "quantiles": {f"{q:g}": None for q in STAT_QUANTILES},
            "histogram": {"edges": [], "counts": []},
        }
    top = float(vals.max()) if range_max is None else float(range_max)
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    counts, edges = np.histogram(np.clip(vals, 0.0, edges[-1]), bins=edges)
    return {
        "n_pairs": n,
        "mean": _num(vals.mean()),
        "var": _num(vals.var()),
        "std": _num(vals.std()),
        "min": _num(vals.min()),
        "max": _num(vals.max()),
        "median": _num(np.median(vals)),
        "fraction_overlapping": float((vals > 0).mean()),
        "quantiles": {
            f"{q:g}": _num(v)
            for q, v in zip(STAT_QUANTILES, np.quantile(vals, STAT_QUANTILES), strict=True)
        },
        "histogram": {"edges": edges.tolist(), "counts": counts.astype(int).tolist()},
    }


# ------------------------------------------------------------------------- CUDA kernels
_CLASS_SUMS_SRC = r"""
extern "C" __global__
void class_sums_T(const T* __restrict__ x, const long long* __restrict__ cls,
                  const long long n, const int d, double* sums, double* counts) {
    // one thread per element of the (n, d) block; atomics into the (C, d) sums
    const long long total = n * (long long)d;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long row = idx / d;
        const int col = (int)(idx - row * d);
        const long long c = cls[row];
        if (c < 0) continue;
        atomicAdd(&sums[c * d + col], (double)x[idx]);
        if (col == 0) atomicAdd(&counts[c], 1.0);
    }
}
"""

_PAIRWISE_SRC = r"""
extern "C" __global__
void pairwise_overlap(const double* __restrict__ cent, const double* __restrict__ radii,
                      const bool* __restrict__ present, const int C, const int k,
                      const double tol, double* M, double* D) {
    // one thread per (i, j); M = Eq. 2, +inf marks coincident centroids, NaN absent classes
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= C || j >= C) return;
    const long long o = (long long)i * C + j;
    const double nan = __longlong_as_double(0x7ff8000000000000ULL);
    const double inf = __longlong_as_double(0x7ff0000000000000ULL);
    if (i == j) { M[o] = 0.0; D[o] = 0.0; return; }
    if (!present[i] || !present[j]) { M[o] = nan; D[o] = nan; return; }
    double s = 0.0;
    for (int t = 0; t < k; ++t) {
        const double diff = cent[(long long)i * k + t] - cent[(long long)j * k + t];
        s += diff * diff;
    }
    const double d = sqrt(s);
    D[o] = d;
    if (d <= tol) { M[o] = inf; return; }
    const double overlap = radii[i] + radii[j] - d;
    M[o] = overlap > 0.0 ? overlap / d : 0.0;
}
"""

# per class: linear-interpolated quantile of its sorted segment (NumPy's "linear" method,
# including NumPy's lerp that switches end point at t >= 0.5 for exactness)
_QUANTILE_OP = r"""
if (n <= 0) {
    r = __longlong_as_double(0x7ff8000000000000ULL);
} else {
    const double pos = q * (double)(n - 1);
    long long lo = (long long)floor(pos);
    if (lo > n - 1) lo = n - 1;
    const long long hi = lo + 1 < n ? lo + 1 : n - 1;
    const double t = pos - (double)lo;
    const double a = s[off + lo];
    const double b = s[off + hi];
    const double diff = b - a;
    r = t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}
"""


@functools.lru_cache(maxsize=1)
def _cuda_kernels() -> dict[str, Any]:
    """Compile the kernels once (CuPy imported lazily: absent on CPU-only machines)."""
    import cupy as cp

    return {
        "class_sums_float": cp.RawKernel(
            _CLASS_SUMS_SRC.replace("_T(", "_float(").replace("const T*", "const float*"),
            "class_sums_float",
        ),
        "class_sums_double": cp.RawKernel(
            _CLASS_SUMS_SRC.replace("_T(", "_double(").replace("const T*", "const double*"),
            "class_sums_double",
        ),
        "pairwise": cp.RawKernel(_PAIRWISE_SRC, "pairwise_overlap"),
        "quantile": cp.ElementwiseKernel(
            "int64 off, int64 n, raw float64 s, float64 q",
            "float64 r",
            _QUANTILE_OP,
            "class_quantile",
        ),
    }


def _is_cupy(xp) -> bool:
    return xp.__name__ == "cupy"


# ---------------------------------------------------------------- xp building blocks
def _class_sums(xp, x, cls, C: int):
    """Per-class sums (C, D) float64 and counts (C,) of a block; ``cls`` in 0..C-1."""
    n, d = x.shape
    if _is_cupy(xp):
        x = xp.ascontiguousarray(x)
        if x.dtype not in (xp.float32, xp.float64):
            x = x.astype(xp.float32)
        cls = xp.ascontiguousarray(cls, dtype=xp.int64)
        sums = xp.zeros((C, d), dtype=xp.float64)
        counts = xp.zeros(C, dtype=xp.float64)
        kern = _cuda_kernels()["class_sums_float" if x.dtype == xp.float32 else "class_sums_double"]
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


def _class_quantiles(xp, dist, cls, C: int, q: float):
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
    if _is_cupy(xp):
        return _cuda_kernels()["quantile"](offsets, counts, s, float(q))
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


def _pairwise_overlap(xp, cent, radii, present, tol: float):
    """(M, D): Eq. 2 with +inf where centroids coincide, NaN for absent classes."""
    C, k = cent.shape
    if _is_cupy(xp):
        cent = xp.ascontiguousarray(cent, dtype=xp.float64)
        radii = xp.ascontiguousarray(radii, dtype=xp.float64)
        present = xp.ascontiguousarray(present, dtype=xp.bool_)
        M = xp.empty((C, C), dtype=xp.float64)
        D = xp.empty((C, C), dtype=xp.float64)
        tb = 16
        grid = ((C + tb - 1) // tb, (C + tb - 1) // tb)
        _cuda_kernels()["pairwise"](
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


def _fill_coincident(xp, M):
    """Replace +inf (coincident centroids) by max(finite off-diagonal M, COINCIDENT_FLOOR)."""
    inf = xp.isinf(M)
    n = int(inf.sum()) // 2
    if n == 0:
        return M, 0
    finite = xp.isfinite(M)
    cap = float(M[finite].max()) if bool(finite.any()) else 0.0
    return xp.where(inf, max(cap, COINCIDENT_FLOOR), M), n


# ------------------------------------------------------------------- the two-pass engine
#: a block: (x, class index, store rows or None, owned); ``owned`` says the engine may
#: modify ``x`` in place (a fresh block, not a view of the caller's array)
Block = tuple[Any, Any, Any, bool]
#: a block source yields loaders: each loads (reads, casts) one block when called, in the
#: worker that runs it, and returns None when none of its rows take part
Loader = Callable[[], Any]
#: projections up to this many columns are kept per row (N x k floats) so the centroids
#: come from them; larger k (or no projection) needs class sums of the D-dim rows in pass 1
MAX_KEPT_COMPONENTS = 64
#: rows per float32 product in the D x D moment, summed in float64 (see :func:`_moments`)
GRAM_ROWS = 1024


def _blas_threads() -> int:
    """Threads the BLAS would use now (respects an enclosing ``threadpoolctl`` limit)."""
    try:
        from threadpoolctl import threadpool_info

        counts = [
            int(i.get("num_threads") or 1) for i in threadpool_info() if i.get("user_api") == "blas"
        ]
    except Exception:  # threadpoolctl missing or a library it cannot query
        counts = []
    return max(counts, default=1)


def _default_workers(xp) -> int:
    """Block workers: one per core the BLAS may use (1 on CuPy: one stream serialises anyway)."""
    if _is_cupy(xp):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, _blas_threads()))


@contextlib.contextmanager
def _one_thread_per_worker(workers: int) -> Iterator[None]:
    """With several block workers, each BLAS/torch call runs on one thread.

    Why: a multithreaded BLAS call synchronises its threads at every panel; with other
    workers (and other processes) competing for the cores, a descheduled thread stalls
    the others (measured: a 2-thread ``ssyrk`` took 30x longer on a busy 2-core VM).
    Whole blocks per core do not synchronise until the end of the pass.  torch matters
    because the store's float16 -> float32 cast runs through it (``featstore.store.features``).
    """
    if workers <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=1, user_api="blas"):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def _run_blocks(
    loaders: Iterable[Loader],
    work: Callable[[Any, dict], Any],
    workers: int,
    new_state: Callable[[], dict],
) -> tuple[list[Any], list[dict]]:
    """``work(load(), state)`` for every loader; results in the loaders' order.

    ``workers`` threads each take the next loader (under a lock: generators are not
    thread-safe), load its block (store read, cast, normalisation) and fold it into their
    own ``state`` (partial sums), so no thread waits for another until the end.  The store
    codecs, torch's cast and the BLAS release the GIL.  One worker runs inline (the CuPy
    path: kernels are queued on one stream).
    """
    it = enumerate(loaders)
    if workers <= 1:
        state = new_state()
        out = []
        for _seq, load in it:
            block = load()
            if block is not None:
                out.append(work(block, state))
        return out, [state]
    lock = threading.Lock()
    results: dict[int, Any] = {}
    states = [new_state() for _ in range(workers)]
    errors: list[BaseException] = []

    def loop(state: dict) -> None:
        try:
            while not errors:
                with lock:
                    seq, load = next(it, (None, None))
                if load is None:
                    return
                block = load()
                if block is not None:
                    results[seq] = work(block, state)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in states]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [results[i] for i in sorted(results)], states


def _drain(kept: list) -> Iterator[Loader]:
    """Loaders of the blocks kept from pass 1, letting go of each once it is taken."""
    for i in range(len(kept)):
        item, kept[i] = kept[i], None
        yield lambda item=item: item


def _moments(xp, x, want_gram: bool):
    """Column sums and ``x.T @ x`` (float64) of a C-contiguous block (NumPy: upper triangle).

    Products in the block's precision over ``GRAM_ROWS`` rows at a time, added in float64:
    a float32 sum over a whole block loses digits with the block's length (measured on the
    benchmark data with float32 column sums per block: the error in M grew to 1.2e-4 at
    65,536-row blocks; in 1024-row pieces it stays at rounding noise, 2e-6 to 3e-5, for
    ~10 % more time than 4096-row pieces).  NumPy: BLAS ``syrk`` (half the flops of a
    GEMM) on ``x.T``, the Fortran-ordered view of ``x``, so SciPy passes it without a copy.
    CuPy: cuBLAS GEMM (flops are cheap there).
    """
    d = x.shape[1]
    total = xp.zeros(d, dtype=xp.float64)
    gram = xp.zeros((d, d), dtype=xp.float64) if want_gram else None
    ones = xp.ones(GRAM_ROWS, dtype=x.dtype)
    syrk = None
    if want_gram and not _is_cupy(xp):
        from scipy.linalg.blas import get_blas_funcs

        syrk = get_blas_funcs("syrk", (x,))
    for s in range(0, x.shape[0], GRAM_ROWS):
        xs = x[s : s + GRAM_ROWS]
        total += ones[: xs.shape[0]] @ xs
        if gram is None:
            continue
        if syrk is None:  # CuPy
            gram += xs.T @ xs
        else:
            gram += syrk(1.0, xs.T, trans=0, lower=0)
    return total, gram


def _shift_for(xp, x0, work_dtype):
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


def _top_eigh(xp, cov, k: int):
    """The ``k`` largest eigenvalues (descending) of symmetric ``cov`` and their vectors.

    NumPy: LAPACK computes only those (SciPy's ``subset_by_index``; 4x less work than the
    full decomposition at D=512, k=2).  CuPy: the full ``eigh`` (no subset there).
    """
    d = cov.shape[0]
    if _is_cupy(xp):
        evals, evecs = xp.linalg.eigh(cov)
    else:
        from scipy.linalg import eigh

        evals, evecs = eigh(cov, subset_by_index=[d - k, d - 1])
    return evals[::-1][:k], evecs[:, ::-1][:, :k]


def _symmetric_from_upper(xp, s2):
    upper = xp.triu(s2)
    return upper + xp.triu(upper, 1).T


def _engine(
    xp, blocks: Callable[[int], Iterable[Block]], **kwargs: Any
) -> tuple[ConfusionResult, np.ndarray]:
    """:func:`_two_passes` with one BLAS/torch thread per block worker."""
    workers = kwargs.pop("workers", None)
    workers = _default_workers(xp) if workers is None else max(1, int(workers))
    with _one_thread_per_worker(workers):
        return _two_passes(xp, blocks, workers=workers, **kwargs)


def _two_passes(
    xp,
    blocks: Callable[[int], Iterable[Block]],
    *,
    dim: int,
    n_classes: int,
    n_components: int | None,
    coverage: float,
    compact: bool,
    keep_plane: bool = False,
    keep_rows: bool = False,
    cache: bool = False,
    workers: int = 1,
) -> tuple[ConfusionResult, np.ndarray]:
    """Two passes over ``blocks(pass_number)``; returns the result and the kept class indices.

    Pass 1, per block, in one go while the block is in cache: shift (only data far from
    the origin, :func:`_shift_for`), column sums and ``syrk`` into the D x D moment
    (:func:`_moments`), class counts (and the D-dim class sums only when the centroids
    cannot come from kept projections).  With ``cache`` the blocks are kept for pass 2,
    which then only projects them; otherwise pass 2 loads them again.  Pass 2 projects
    each block to the basis (N x k floats kept); centroids, distances and quantiles
    follow from those in memory.  Float32/float16 data is multiplied in float32 and
    summed in float64 every ``GRAM_ROWS`` rows; float64 data stays float64.
    """
    if n_components is not None and not 1 <= n_components <= dim:
        raise InputError(
            f"n_components must be between 1 and the feature dimension {dim}, or None; got {n_components}"
        )
    if not 0.0 <= coverage <= 1.0:
        raise InputError(f"coverage must be within [0, 1], got {coverage}")
    basis_k = (
        None
        if n_components is None and not keep_plane
        else max(n_components or 0, 2 if keep_plane else 1)
    )
    basis_k = None if basis_k is None else min(basis_k, dim)
    # centroids from the kept projections (cheap) or from D-dim class sums (pass 1)
    from_projections = n_components is not None and basis_k <= MAX_KEPT_COMPONENTS
    C = n_classes

    source = iter(blocks(1))
    first = None
    for load in source:  # the first block with rows sets the working precision and shift
        first = load()
        if first is not None:
            break
    if first is None:
        raise InputError(
            "no rows to analyse: every row is excluded (label -1, failed, missing modality or other split)"
        )
    x0 = first[0]
    work_dtype = xp.float64 if x0.dtype == xp.float64 else xp.float32
    shift = _shift_for(xp, x0, work_dtype)

    def shifted(block: Block):
        x, cls, rows, owned = block
        if x.dtype != work_dtype or not x.flags.c_contiguous:
            x, owned = x.astype(work_dtype, order="C"), True
        if shift is not None:
            if owned:
                x -= shift  # a block of our own: in place
            else:
                x = x - shift  # never write into the caller's array
        return x, cls, rows

    def new_state1() -> dict:
        return {
            "n": 0,
            "s1": xp.zeros(dim, dtype=xp.float64),
            "s2": xp.zeros((dim, dim), dtype=xp.float64) if basis_k is not None else None,
            "count": xp.zeros(C, dtype=xp.float64),
            "csum": None if from_projections else xp.zeros((C, dim), dtype=xp.float64),
        }

    def pass1(block: Block, st: dict):
        x, cls, rows = shifted(block)
        st["n"] += int(x.shape[0])
        total, gram = _moments(xp, x, st["s2"] is not None)
        st["s1"] += total
        if gram is not None:
            st["s2"] += gram
        st["count"] += xp.bincount(cls, minlength=C)
        if st["csum"] is not None:
            st["csum"] += _class_sums(xp, x, cls, C)[0]
        return (x, cls, rows) if cache else None

    cached, states = _run_blocks(
        itertools.chain([lambda: first], source), pass1, workers, new_state1
    )
    n = sum(st["n"] for st in states)
    s1 = sum(st["s1"] for st in states)
    ccount = sum(st["count"] for st in states)
    csum = None if from_projections else sum(st["csum"] for st in states)
    if n == 0:
        raise InputError(
            "no rows to analyse: every row is excluded (label -1, failed, missing modality or other split)"
        )

    keep = xp.arange(C)
    if compact:  # classes given by the data itself: drop the ones that turned out empty
        keep = xp.flatnonzero(ccount > 0)
        ccount = ccount[keep]
        csum = None if csum is None else csum[keep]
    remap = xp.full(C, -1, dtype=xp.int64)
    remap[keep] = xp.arange(keep.shape[0])
    Ck = int(keep.shape[0])
    present = ccount > 0
    mean_s = s1 / n  # mean of all rows, shifted coordinates

    basis = None
    evr = None
    if basis_k is not None:
        s2 = _symmetric_from_upper(xp, sum(st["s2"] for st in states))
        cov = s2 / n - xp.outer(mean_s, mean_s)
        evals, basis = _top_eigh(xp, cov, basis_k)  # descending eigenvalue order
        total = float(xp.trace(cov))  # the sum of all eigenvalues
        if n_components is not None and total > 0:
            evr = float(xp.clip(evals[:n_components], 0, None).sum()) / total
    del states
    proj = basis[:, :n_components] if (basis is not None and n_components is not None) else None
    basis_w = None if basis is None else xp.ascontiguousarray(basis.astype(work_dtype))
    cent_s = None  # centroids in shifted (and projected) coordinates
    if not from_projections:
        cmean_s = csum / xp.maximum(ccount, 1.0)[:, None]
        cent_s = (cmean_s @ proj if proj is not None else cmean_s).astype(work_dtype)

    # pass 2: project each block; the quantiles need one distance per row
    def pass2(block, _st: dict):
        x, cls, rows = block if cache else shifted(block)  # cached blocks are shifted already
        ci = remap[cls]
        z = x @ basis_w if basis_w is not None else None
        dist = None
        if not from_projections:
            own = (z[:, : proj.shape[1]] if proj is not None else x) - cent_s[ci]
            dist = xp.sqrt((own * own).sum(axis=1, dtype=xp.float64))
            z = None if not keep_plane else z[:, :2]
        return z, dist, ci, (to_numpy(rows) if keep_rows and rows is not None else None)

    second = _drain(cached) if cache else blocks(2)
    del cached
    out, _ = _run_blocks(second, pass2, workers, dict)
    row_cls = xp.concatenate([o[2] for o in out])
    z_all = xp.concatenate([o[0] for o in out]) if (from_projections or keep_plane) else None
    if from_projections:
        # centroid of the projected members (= projection of the class mean)
        zk = z_all[:, :n_components].astype(xp.float64)
        cnt = xp.maximum(ccount, 1.0)
        cent_s = (
            xp.stack(
                [xp.bincount(row_cls, weights=zk[:, j], minlength=Ck) for j in range(n_components)],
                axis=1,
            )
            / cnt[:, None]
        )
        own = zk - cent_s[row_cls]
        dist = xp.sqrt((own * own).sum(axis=1))
        del zk, own
    else:
        dist = xp.concatenate([o[1] for o in out])
        cent_s = cent_s.astype(xp.float64)
    radii = _class_quantiles(xp, dist, row_cls, Ck, coverage)

    # centred PCA coordinates
    cent = cent_s - (mean_s @ proj if proj is not None else mean_s)
    cent = xp.where(present[:, None], cent, xp.nan)
    scale = (
        float(xp.nanmax(xp.sqrt((cent * cent).sum(axis=1)) + xp.nan_to_num(radii)))
        if Ck and bool(present.any())
        else 0.0
    )
    tol = COINCIDENT_RTOL * scale
    M, D = _pairwise_overlap(xp, xp.nan_to_num(cent), xp.nan_to_num(radii), present, tol)
    M, n_coincident = _fill_coincident(xp, M)

    plane = None
    if keep_plane:
        plane = (z_all[:, :2] - (mean_s @ basis[:, :2]).astype(z_all.dtype)).astype(xp.float32)
    rows_kept = [o[3] for o in out if o[3] is not None]
    result = ConfusionResult(
        M=to_numpy(M),
        radii=to_numpy(radii),
        centroids=to_numpy(cent),
        distances=to_numpy(D),
        counts=to_numpy(ccount).astype(np.int64),
        classes=np.arange(C)[to_numpy(keep)],
        n_rows=n,
        n_components=n_components,
        coverage=float(coverage),
        explained_variance_ratio=evr,
        n_coincident=n_coincident,
        coincident_tol=tol,
        backend=xp.__name__,
        rows=np.concatenate(rows_kept) if rows_kept else None,
        row_class=to_numpy(row_cls) if keep_plane else None,
        plane=to_numpy(plane) if keep_plane else None,
    )
    return result, to_numpy(keep)


# ------------------------------------------------------------------------- in memory
def _as_array(a: Any):
    """NumPy/CuPy arrays as they are; torch tensors via DLPack (GPU) or NumPy (CPU)."""
    if type(a).__module__.startswith("torch"):
        if a.is_cuda:
            import cupy as cp

            return cp.from_dlpack(a.detach().contiguous())
        return a.detach().cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        return a
    return np.asarray(a)


def confusion_degree(
    X: Any,
    y: Any,
    *,
    n_components: int | None = 2,
    coverage: float = 0.95,
    num_classes: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    workers: int | None = None,
) -> ConfusionResult:
    """Confusion degree matrix (Eq. 2) of features ``X`` (N, D) under labels ``y`` (N,).

    NumPy or CuPy input (torch tensors are accepted too); rows with ``y < 0`` are
    excluded.  Without ``num_classes`` the classes are the distinct labels present
    (``result.classes`` says which); with it, M is indexed by label value 0..C-1 and
    absent classes get NaN rows (see the module docstring) — what the trainer wants.
    ``workers`` threads share the row blocks (default: as many as the BLAS may use).
    """
    X = _as_array(X)
    xp = get_array_module(X)
    y = xp.asarray(_as_array(y))
    if X.ndim != 2:
        raise InputError(f"features must be 2-D (N, D), got shape {tuple(X.shape)}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise InputError(
            f"labels must be 1-D with one entry per row ({X.shape[0]}), got shape {tuple(y.shape)}"
        )
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and bool(xp.all(y == xp.round(y))):
            y = y.astype(xp.int64)
        else:
            raise InputError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(xp.int64)
    if X.dtype.kind != "f":
        X = X.astype(xp.float32)
    bad = ~xp.isfinite(X).all(axis=1) & (y >= 0)
    if bool(bad.any()):
        rows = to_numpy(xp.flatnonzero(bad))[:5].tolist()
        raise InputError(f"non-finite feature values at rows {rows}")
    if num_classes is not None:
        if int(num_classes) < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        too_big = y >= num_classes
        if bool(too_big.any()):
            r = int(to_numpy(xp.flatnonzero(too_big))[0])
            raise InputError(
                f"label {int(y[r])} at row {r} is outside 0..{num_classes - 1} (num_classes={num_classes})"
            )
        values = xp.arange(int(num_classes))
        index = y
    else:
        values = xp.unique(y[y >= 0])
        index = xp.where(y >= 0, xp.searchsorted(values, xp.maximum(y, 0)), -1)
    C = int(values.shape[0])

    def load(s: int) -> Block | None:
        xb, cb = X[s : s + block_rows], index[s : s + block_rows]
        m = cb >= 0
        owned = False
        if not bool(m.all()):
            xb, cb, owned = xb[m], cb[m], True  # boolean indexing copies
        return (xb, cb, None, owned) if xb.shape[0] else None

    def blocks(_pass: int) -> Iterator[Loader]:
        for s in range(0, X.shape[0], block_rows):
            yield functools.partial(load, s)

    if C == 0:
        raise InputError("no rows to analyse: every label is negative (excluded)")
    result, keep = _engine(
        xp,
        blocks,
        dim=int(X.shape[1]),
        n_classes=C,
        n_components=n_components,
        coverage=coverage,
        compact=False,
        workers=workers,
    )
    result.classes = to_numpy(values).astype(np.int64)[keep]
    return result


# ---------------------------------------------------------------------------- stores
def _default_memory_budget() -> int:
    """Bytes of features to keep between the two passes: a quarter of RAM, at most 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(8 << 30, total // 4))


def confusion_from_store(
    store: Any,
    labels: np.ndarray,
    *,
    features: str = "audio+video",
    split: str | Sequence[str] | None = None,
    n_components: int | None = 2,
    coverage: float = 0.95,
    chunked: bool = True,
    num_classes: int | None = None,
    memory_budget: int | None = None,
    device: str = "cpu",
    keep_plane: bool = False,
    progress: bool = False,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    workers: int | None = None,
) -> ConfusionResult:
    """Confusion degree of a store's ``features`` under per-row ``labels``.

    ``labels`` has one entry per store row (-1 = excluded).  Rows that failed, lack a
    needed modality, have NaN extra features or are outside ``split`` are excluded
    too.  ``chunked`` streams the feature array block by block (two passes); the
    blocks read in pass 1 are kept for pass 2 when they fit ``memory_budget`` bytes
    (default a quarter of RAM, at most 8 GiB), otherwise pass 2 reads the store again.
    ``chunked=False`` loads every valid row and calls :func:`confusion_degree`.
    ``device="cuda"`` runs the maths with CuPy on the GPU.  ``block_rows`` rows (whole
    store chunks) are read at a time, by ``workers`` threads (default: as many as the
    BLAS may use; each then runs its BLAS/torch calls on one thread).
    """
    from featstore.common.backend import array_module_for, resolve_device
    from featstore.store.core import MODALITIES, FeatureStore
    from featstore.store.features import COMBINED, FeatureView, assemble_block, feature_view

    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    labels = np.asarray(labels)
    if labels.shape != (store.n_rows,):
        raise InputError(
            f"labels have shape {labels.shape} but {store.path} has {store.n_rows} rows"
        )
    if labels.dtype.kind not in "iu":
        raise InputError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    view = feature_view(store, features)
    use = labels >= 0
    if split is not None:
        wanted = [split] if isinstance(split, str) else list(split)
        splits = np.asarray([str(s) for s in store.splits.tolist()], dtype=object)
        known = sorted(set(splits.tolist()))
        unknown = [s for s in wanted if s not in known]
        if unknown:
            raise InputError(f"{store.path}: no rows in split {unknown}; splits present: {known}")
        use &= np.isin(splits, wanted)
    use &= view.valid_mask()
    xp = array_module_for(resolve_device(device))

    if not chunked:
        rows, X = view.load()
        keep_rows = use[rows]
        rows, X = rows[keep_rows], X[keep_rows]
        res = confusion_degree(
            xp.asarray(X),
            xp.asarray(labels[rows]),
            n_components=n_components,
            coverage=coverage,
            num_classes=num_classes,
        )
        res.rows = rows
        return res

    if num_classes is not None:
        if labels.max(initial=-1) >= num_classes:
            r = int(np.flatnonzero(labels >= num_classes)[0])
            raise InputError(f"label {labels[r]} at row {r} is outside 0..{num_classes - 1}")
        values = np.arange(num_classes)
    else:
        values = np.unique(labels[use])
    if values.size == 0:
        raise InputError(
            f"{store.path}: no rows to analyse (every row is unlabelled, failed, missing a modality or outside the split)"
        )
    index = np.full(store.n_rows, -1, np.int64)
    index[use] = np.searchsorted(values, labels[use])
    budget = _default_memory_budget() if memory_budget is None else int(memory_budget)
    if store.dtype == "float16":
        # the view casts float16 through torch: import it before the workers set its threads
        import torch  # noqa: F401

    parts = list(MODALITIES) if features == COMBINED else [features]
    view = FeatureView(store, features)  # store arrays with integrity checks, or a run's features
    take = index >= 0  # valid, labelled, in the split

    def load(s: int, e: int, keep: np.ndarray) -> Block | None:
        # assemble_block is the one definition of the view's numbers (cast, L2 per modality)
        rows, x = assemble_block(
            [view.read_part(p, s, e) for p in parts],
            keep,
            s,
            combined=features == COMBINED,
            extra=parts[0] not in MODALITIES,
            what=f"{features} of {store.path}",
        )
        if rows.size == 0:
            return None
        return xp.asarray(x), xp.asarray(index[rows]), rows, True  # a fresh block: owned

    def blocks(pass_no: int) -> Iterator[Loader]:
        """Whole chunks, grouped up to ``block_rows`` rows: each decompressed once a pass."""
        ranges = store.shard_ranges()
        step = max(1, block_rows // store.chunk_rows)
        groups = []
        for i in range(0, len(ranges), step):
            s, e = ranges[i][0], ranges[min(i + step, len(ranges)) - 1][1]
            keep = np.flatnonzero(take[s:e])
            if keep.size:
                groups.append((s, e, functools.partial(load, s, e, keep)))
        yield from _progress(groups, store, progress, pass_no)

    result, keep = _engine(
        xp,
        blocks,
        dim=view.dim,
        n_classes=int(values.size),
        n_components=n_components,
        coverage=coverage,
        compact=num_classes is None,
        keep_plane=keep_plane,
        keep_rows=True,
        cache=int(take.sum()) * view.dim * 4 <= budget,  # the blocks' float32 bytes
        workers=workers,
    )
    result.classes = values[keep]
    return result


def _progress(groups: list, store: Any, enabled: bool, pass_no: int) -> Iterator[Loader]:
    """The loaders of ``groups`` ((start, stop, loader)), counting rows as blocks finish."""
    if not enabled:
        for _s, _e, load in groups:
            yield load
        return
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"confusion pass {pass_no}/2 (rows)", total=store.n_rows, rate="")
        t0 = time.perf_counter()
        done = [0]
        lock = threading.Lock()

        def counted(s: int, e: int, load: Loader) -> Any:
            block = load()
            with lock:  # blocks finish in any order on several workers
                done[0] += e - s
                rate = done[0] / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, completed=done[0], rate=f"{rate:,.0f} rows/s")
            return block

        for s, e, load in groups:
            yield functools.partial(counted, s, e, load)


# ------------------------------------------------------------------------- analysis
def plot_confusion_histogram(stats_or_M_list: Any, labels: Any, path: Any, **kwargs: Any) -> Any:
    """Overlaid distributions of M (paper Figure 2); see :mod:`featstore.confusion.plots`."""
    from featstore.confusion.plots import plot_confusion_histogram as plot

    return plot(stats_or_M_list, labels, path, **kwargs)


def _class_names(values: np.ndarray, store_names: Sequence[str], ground_truth: bool) -> list[str]:
    if ground_truth:
        return [
            store_names[v] if 0 <= v < len(store_names) else f"class {v}" for v in values.tolist()
        ]
    return [f"cluster {v}" for v in values.tolist()]


def _load_compare(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The M (and stats) of an earlier ``diccae confusion`` output folder."""
    import json

    folder = Path(folder)
    f = folder / "confusion.npy"
    if not f.is_file():
        raise InputError(
            f"--compare {folder}: no confusion.npy there (is it a `diccae confusion` output folder?)"
        )
    try:
        M = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{f}: cannot read as a NumPy array: {exc}") from exc
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise InputError(f"{f}: expected a square (C, C) matrix, got shape {M.shape}")
    stats: dict[str, Any] = {}
    if (folder / "stats.json").is_file():
        try:
            stats = json.loads((folder / "stats.json").read_text())
        except ValueError as exc:
            raise InputError(f"{folder / 'stats.json'}: not valid JSON: {exc}") from exc
    return M, stats


def run_confusion_analysis(
    store: Any,
    *,
    labels_path: str | Path | None = None,
    ground_truth: bool = False,
    out_dir: str | Path,
    features: str = "audio+video",
    split: str | None = None,
    n_components: int | None = 2,
    coverage: float = 0.95,
    compare: str | Path | None = None,
    top: int = 20,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """What ``diccae confusion`` calls: compute M for a store and write the report.

    Labels come from a label file (``labels_path``, checked against the store's
    fingerprint) or from the store's ground-truth ``label`` array.  Writes into
    ``out_dir``: confusion.npy, confusion_scaled.npy, classes.json, stats.json,
    top_pairs.csv, histogram.png (overlaid with ``compare``'s M), heatmap.png and
    circles.png.  Returns ``{"stats", "top_pairs", "files", "result"}``.
    """
    import csv
    import json
    from datetime import datetime, timezone

    from featstore.confusion.plots import (
        plot_confusion_circles,
        plot_confusion_heatmap,
    )
    from featstore.confusion.plots import (
        plot_confusion_histogram as plot_hist,
    )
    from featstore.store.core import FeatureStore

    if (labels_path is None) == (not ground_truth):
        raise InputError("give exactly one label source: a label file (--labels) or --ground-truth")
    if top < 1:
        raise InputError(f"top must be >= 1, got {top}")
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    compare_M, compare_stats = _load_compare(Path(compare)) if compare is not None else (None, {})
    label_meta: dict[str, Any] | None = None
    if ground_truth:
        labels = store.labels
        if not (labels >= 0).any():
            raise InputError(
                f"{store.path} has no ground-truth labels (every row is -1); use --labels"
            )
        source = "ground-truth"
    else:
        from featstore.labels.files import read_label_file

        labels, meta = read_label_file(labels_path, store)
        source = str(labels_path)
        label_meta = meta.to_json() if hasattr(meta, "to_json") else None

    result = confusion_from_store(
        store,
        labels,
        features=features,
        split=split,
        n_components=n_components,
        coverage=coverage,
        device=device,
        keep_plane=True,
        progress=progress,
    )
    names = _class_names(result.classes, store.class_names, ground_truth)
    M, M_hat = result.M, result.scaled()

    # every file is written into a staging folder beside --out and moved in only when all
    # are whole: a full disk or a crash leaves no half-written report
    import shutil

    out = Path(out_dir)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        files = {
            name: stage / name
            for name in (
                "confusion.npy",
                "confusion_scaled.npy",
                "classes.json",
                "stats.json",
                "top_pairs.csv",
                "histogram.png",
                "heatmap.png",
                "circles.png",
            )
        }
        atomic_write_path(
            files["confusion.npy"], lambda p: np.save(p, M.astype(np.float64), allow_pickle=False)
        )
        atomic_write_path(
            files["confusion_scaled.npy"], lambda p: np.save(p, M_hat, allow_pickle=False)
        )

        classes_doc = [
            {
                "index": i,
                "label": int(v),
                "name": names[i],
                "count": int(result.counts[i]),
                "radius": _num(result.radii[i]),
                "centroid": [_num(c) for c in result.centroids[i]][:8],
            }
            for i, v in enumerate(result.classes.tolist())
        ]
        atomic_write_path(
            files["classes.json"], lambda p: p.write_text(json.dumps(classes_doc, indent=1))
        )

        pairs = []
        for rank, (i, j) in enumerate(result.top_pairs(top), start=1):
            pairs.append(
                {
                    "rank": rank,
                    "class_i": int(result.classes[i]),
                    "name_i": names[i],
                    "class_j": int(result.classes[j]),
                    "name_j": names[j],
                    "M_ij": float(M[i, j]),
                    "M_hat_ij": float(M_hat[i, j]),
                    "r_i": float(result.radii[i]),
                    "r_j": float(result.radii[j]),
                    "d_ij": float(result.distances[i, j]),
                    "n_i": int(result.counts[i]),
                    "n_j": int(result.counts[j]),
                    "coincident": bool(result.distances[i, j] <= result.coincident_tol),
                }
            )

        def write_csv(p: Path) -> None:
            with open(p, "w", newline="") as f:
                cols = [
                    "rank",
                    "class_i",
                    "name_i",
                    "class_j",
                    "name_j",
                    "M_ij",
                    "M_hat_ij",
                    "r_i",
                    "r_j",
                    "d_ij",
                    "n_i",
                    "n_j",
                    "coincident",
                ]
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(pairs)

        atomic_write_path(files["top_pairs.csv"], write_csv)

        stats = result.stats()
        stats["parameters"] = {
            "store": str(store.path),
            "store_fingerprint": store.fingerprint,
            "features": features,
            "split": split,
            "labels": source,
            "label_file": label_meta,
            "n_components": n_components,
            "coverage": coverage,
            "device": device,
            "backend": result.backend,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if compare_M is not None:
            other = confusion_stats(compare_M)
            stats["compare"] = {
                "dir": str(compare),
                "mean": other["mean"],
                "var": other["var"],
                "delta_mean": None
                if None in (stats["mean"], other["mean"])
                else stats["mean"] - other["mean"],
                "delta_var": None
                if None in (stats["var"], other["var"])
                else stats["var"] - other["var"],
                "parameters": compare_stats.get("parameters"),
            }
        atomic_write_path(
            files["stats.json"],
            lambda p: p.write_text(json.dumps(stats, indent=1, allow_nan=False)),
        )

        this_name = out.name or "this run"
        if compare_M is not None:
            other_name = Path(compare).name or "compare"
            if other_name == this_name:
                other_name = f"{other_name} (compare)"
            plot_hist([compare_M, M], [other_name, this_name], files["histogram.png"])
        else:
            plot_hist([M], [this_name], files["histogram.png"])
        plot_confusion_heatmap(M, names, files["heatmap.png"], top=top)
        plot_confusion_circles(result, names, files["circles.png"])
        out.mkdir(parents=True, exist_ok=True)
        for name, path in list(files.items()):
            os.replace(path, out / name)
            files[name] = out / name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {
        "stats": stats,
        "top_pairs": pairs,
        "files": {k: str(v) for k, v in files.items()},
        "result": result,
    }
