"""bfloat16 scoring products whose decisions are checked against float32.

The audit's score pass is one ``rows x D x 2C`` product per view; on a CPU with
bfloat16 dot-product instructions (``avx512_bf16``, ``amx_bf16``) torch multiplies
bfloat16 operands, with float32 accumulation, about 3.5x faster than a float32 GEMM
(measured: 4096 x 513 x 602, one thread, 6 ms against 20 ms).  Rounding the operands to
8 significant bits moves every entry by at most a known amount, so the product is used
only to *decide* (which centroids are nearest, in which order; which probe class wins),
and only where the decision cannot differ from the float32 product's:

* every entry of row ``r`` of the estimate lies within ``E_r`` of the float32 product
  (:func:`row_bounds`): ``|x~.o~ - x.o| <= (2u + u^2) sum|x_j||o_j|`` for the operand
  rounding (``u = 2^-8``), plus the bfloat16 rounding of the result, plus float32
  accumulation in both products, and ``sum|x_j||o_j| <= ||x|| max_c ||o_c||``;
* a row is *settled* when each gap between its consecutive sorted candidates (the 4
  nearest centroids, the 3 best probe classes) exceeds ``2 E_r``: then the float32
  product orders them the same way (:func:`settled`);
* unsettled rows are recomputed with the float32 product; settled rows get their
  values (distances, margins) from exact float32 dot products with the few columns
  decided on (:func:`column_dots`), so the numbers written are float32 numbers too.

Predictions and flags are therefore those of the float32 product; the values differ from
a float32 GEMM's only in the order of float32 additions (relative differences of a few
1e-7, the same as between 1 and 2 BLAS threads; docs/analysis.md gives the measurement).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

U_BF16 = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
U_F32 = 2.0**-24
DOT_ROWS = 256  # rows per gathered block in column_dots: (256, k, D) stays in L2


@functools.cache
def bf16_available() -> bool:
    """Whether this CPU multiplies bfloat16 natively (and torch is importable).

    Without the instructions torch emulates bfloat16 and is slower than float32, so the
    audit then stays in float32.  Read from /proc/cpuinfo (Linux); elsewhere False.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - torch is installed with diccae
        return False
    return True


def bf16_operand(op: np.ndarray) -> Any:
    """A float32 ``(D, k)`` operand as a contiguous bfloat16 torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(op, dtype=np.float32)).to(torch.bfloat16)


def bf16_product(x: np.ndarray, op_bf16: Any) -> np.ndarray:
    """``x @ op`` with both rounded to bfloat16, float32 accumulation, as float32."""
    import torch

    xb = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return (xb @ op_bf16).float().numpy()


def bound_factor(d: int) -> float:
    """``c`` with ``|estimate - float32 product| <= c sum_j |x_j||o_j|`` for a D-term
    dot product: operand rounding, result rounding to bfloat16, float32 accumulation of
    the estimate and of the float32 product (``gamma_n = n u / (1 - n u)``); 1 % slack."""
    g = (d + 2) * U_F32 / (1 - (d + 2) * U_F32)
    c = (2 * U_BF16 + U_BF16**2) + (1 + U_BF16) ** 2 * (U_BF16 + g) + g
    return 1.01 * c


def row_bounds(x: np.ndarray, col_norm_max: float, extra: np.ndarray | float = 0.0) -> np.ndarray:
    """Per row, the largest possible difference between an estimated entry and the
    float32 one: ``c ||x|| max_c ||o_c||`` plus ``extra`` (the float32 rounding of the
    operations applied to the entries afterwards, bounded by the caller)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return bound_factor(x.shape[1]) * norms * col_norm_max + extra


def smallest(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of each row's ``k`` smallest entries, in order; ties go to the
    lower index, as repeated ``argmin`` gives.  ``values`` is overwritten."""
    n = values.shape[0]
    rows = np.arange(n)
    idx = np.empty((n, k), np.int64)
    val = np.empty((n, k), values.dtype)
    for j in range(k):
        idx[:, j] = values.argmin(axis=1)
        val[:, j] = values[rows, idx[:, j]]
        values[rows, idx[:, j]] = np.inf
    return idx, val


def settled(sorted_values: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Rows whose consecutive sorted values are more than ``2 * bound`` apart.

    Each true value is within ``bound`` of its estimate, so such rows keep their order
    (and the same leading set) in the float32 product.  Non-finite gaps (empty classes,
    single-member classes) are never settled: those rows go to float32."""
    gaps = np.diff(sorted_values.astype(np.float64), axis=1)
    with np.errstate(invalid="ignore"):
        ok = gaps > 2 * bound[:, None]
    return ok.all(axis=1) & np.isfinite(bound)


def column_dots(x: np.ndarray, op_t: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``out[i, j] = x[i] . op_t[cols[i, j]]`` in float32 (exact entries of ``x @ op``
    for the few columns each row needs), gathered in cache-sized blocks."""
    n, k = cols.shape
    out = np.empty((n, k), np.float32)
    for s in range(0, n, DOT_ROWS):
        e = min(n, s + DOT_ROWS)
        out[s:e] = (op_t[cols[s:e]] @ x[s:e, :, None])[:, :, 0]
    return out
