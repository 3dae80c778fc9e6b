"""CUDA sources of the confusion degree's GPU kernels, compiled once on first use.

The CuPy path of :mod:`featstore.confusion.kernels` calls these where a vectorised
NumPy formulation would be slow on the GPU (scatter-adds, per-class quantiles) or
allocate (C, C, k) temporaries.  Nothing here runs or imports CuPy on a CPU machine.
"""

from __future__ import annotations

import functools
from typing import Any

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
def cuda_kernels() -> dict[str, Any]:
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


def is_cupy(xp) -> bool:
    """Whether the array module ``xp`` is CuPy (then the raw CUDA kernels apply)."""
    return xp.__name__ == "cupy"
