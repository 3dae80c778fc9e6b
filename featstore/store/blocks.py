"""The block kernel: raw store rows -> the float32 numbers every stage sees.

:func:`assemble_block` is the single definition of a feature view's values (used by
:class:`featstore.store.features.FeatureView`, Dask workers, the confusion analysis
and the analysis package), so it is also the reader's hot loop.  Measured on the
2-core machine (200,000 x 512 float16 rows, 6,250-row blocks, one pass): the old
whole-block NumPy code spent ~40 ms in ``einsum`` over strided column halves,
~110 ms in a strided broadcast divide and ~30 ms in a float64 row-sum finite check,
against ~45 ms for the plain read of an uncompressed store.  This version

* casts each part into a contiguous scratch buffer (torch's vectorised float16 cast;
  NumPy's is scalar code), takes the row sums of squares there (contiguous
  ``einsum``, ~5x faster than on the strided half of the output) and divides into
  the output with torch (IEEE division, the same bits as NumPy's, ~14x faster on a
  strided destination);
* screens finiteness from numbers it computes anyway: NaN/Inf propagate into a row's
  sum of squares (normalised views) or row sum (raw views); only flagged rows, which
  may be huge-but-finite overflows, are checked exactly, on the output as before;
* runs torch's kernels in the calling thread only
  (:func:`featstore.common.torch_threads.torch_serial`): from a read-ahead thread,
  torch's OpenMP team made each cast ~60x slower.

The values are bit-for-bit those of the previous implementation (sqrt of the row
``einsum``, clamped at ``eps``, then divided), which tests/featstore/store/test_feature_blocks.py
checks against that formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.common.backend import get_array_module
from featstore.common.torch_threads import optional_torch, torch_serial
from featstore.errors import InputError

EPS = 1e-12
#: the contiguous float32 buffer a normalised part is cast into, summed and divided from,
#: a few thousand rows at a time: large enough for few calls per block (many small calls
#: per pass slowed a streamed k-means run 2x, measured), and below glibc's largest mmap
#: threshold (32 MB), so it comes back from the heap instead of fresh pages per call.
SCRATCH_BYTES = 8 << 20


def l2_normalize(x: Any, eps: float = EPS) -> Any:
    """Row-wise L2 normalisation for NumPy or CuPy arrays (zero rows stay zero)."""
    xp = get_array_module(x)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are reported by callers
        norms = xp.sqrt((x * x).sum(axis=1, keepdims=True))
        return x / xp.maximum(norms, eps)


def _cast(dst: np.ndarray, src: np.ndarray, torch: Any) -> None:
    """``dst[...] = src`` as float32; torch's float16 cast is vectorised, NumPy's is not."""
    if torch is not None and src.dtype == np.float16:
        torch.from_numpy(dst).copy_(torch.from_numpy(np.ascontiguousarray(src)))
    else:
        dst[...] = src


def _divide(dst: np.ndarray, src: np.ndarray, norms: np.ndarray, torch: Any) -> None:
    """``dst[...] = src / norms[:, None]``: IEEE division, the same bits from torch and NumPy.

    torch's is ~10x faster when ``dst`` is the strided half of a block."""
    if torch is None:
        np.divide(src, norms[:, None], out=dst)
    else:
        torch.div(
            torch.from_numpy(src), torch.from_numpy(norms)[:, None], out=torch.from_numpy(dst)
        )


def _fill_part(
    dst: np.ndarray,
    src: np.ndarray,
    *,
    normalize: bool,
    scratch: np.ndarray,
    suspect: np.ndarray,
    torch: Any,
    eps: float = EPS,
) -> None:
    """Write ``src`` (m, d) into the float32 view ``dst``; flag rows to check.

    ``suspect[i]`` becomes True where row i's sum of squares (normalised) or row sum
    (raw) is not finite: every row holding NaN/Inf is flagged, plus overflows.  A few
    calls per block: with thousands of small calls per pass (1 MB tiles, or torch calls
    kept under its parallel grain) a lone reader pass got faster but a streamed k-means
    run, which reads beside its compute, took 2x as long (measured; the cause, GIL
    hand-offs or scheduling, was not isolated).
    """
    m, d = src.shape
    if not normalize:
        _cast(dst, src, torch)
        suspect |= ~np.isfinite(np.add.reduce(dst, axis=1))
        return
    step = max(1, scratch.size // max(d, 1))
    for a in range(0, m, step):  # one step for a streamed block; a few for 65,536 rows
        b = min(m, a + step)
        tmp = scratch[: (b - a) * d].reshape(b - a, d)
        _cast(tmp, src[a:b], torch)
        ss = np.einsum("ij,ij->i", tmp, tmp)
        _divide(dst[a:b], tmp, np.maximum(np.sqrt(ss), eps), torch)
        suspect[a:b] |= ~np.isfinite(ss)


def scratch_floats(rows: int, part_dims: list[int], *, combined: bool) -> int:
    """Float32 scratch :func:`assemble_block` takes for ``rows`` rows (normalised views only)."""
    return min(rows * max(part_dims, default=1), SCRATCH_BYTES // 4) if combined else 0


def assemble_block(
    raw_parts: list[np.ndarray],
    keep: np.ndarray,
    start: int,
    *,
    combined: bool,
    extra: bool,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn one block of raw store rows into ``(store_rows, X float32)`` of its valid rows.

    The single place that defines the numbers a stage sees (also used by Dask workers,
    so distributed and single-machine runs cluster exactly the same values): each part
    cast to float32 and, for ``combined``, L2-normalised per row, side by side in one
    freshly allocated block (the caller owns it).  ``extra`` arrays mark rows that
    were not computed as all-NaN; those are dropped.  Raises :class:`InputError`
    naming the store rows that hold NaN/Inf.
    """
    rows = keep.astype(np.int64) + start
    whole = keep.size == raw_parts[0].shape[0]
    dims = [int(p.shape[1]) for p in raw_parts]
    x = np.empty((keep.size, sum(dims)), dtype=np.float32)
    suspect = np.zeros(keep.size, bool)
    torch = optional_torch() if combined or any(p.dtype == np.float16 for p in raw_parts) else None
    # each normalised part is cast into this contiguous buffer first: the row sums of
    # squares are ~5x faster there than on the strided half of ``x``
    scratch = np.empty(scratch_floats(keep.size, dims, combined=combined), np.float32)
    lo = 0
    with np.errstate(over="ignore", invalid="ignore"), torch_serial(torch):
        for raw, d in zip(raw_parts, dims, strict=True):
            _fill_part(
                x[:, lo : lo + d],
                raw if whole else raw[keep],
                normalize=combined,
                scratch=scratch,
                suspect=suspect,
                torch=torch,
            )
            lo += d
    if not suspect.any():
        return rows, x
    flagged = np.flatnonzero(suspect)
    if extra:  # extra arrays mark "not computed" rows as all-NaN
        gone = flagged[np.isnan(x[flagged]).all(axis=1)]
        if gone.size:
            computed = np.ones(keep.size, bool)
            computed[gone] = False
            rows, x = rows[computed], x[computed]
            flagged = np.flatnonzero(suspect[computed])
    _raise_non_finite(rows, x, flagged, what)
    return rows, x


def _raise_non_finite(rows: np.ndarray, x: np.ndarray, suspect: np.ndarray, what: str) -> None:
    """Raise InputError for the rows among ``suspect`` (indices into x) that hold NaN/Inf."""
    if suspect.size == 0:
        return
    bad = suspect[~np.isfinite(x[suspect]).all(axis=1)]
    if bad.size:
        more = f" (and {bad.size - 5} more in this block)" if bad.size > 5 else ""
        raise InputError(
            f"non-finite values in {what} at rows {rows[bad][:5].tolist()}{more} (NaN/Inf); "
            "re-extract those rows or mark them failed"
        )


def check_finite(rows: np.ndarray, x: np.ndarray, what: str) -> None:
    """Raise InputError naming the store rows (``rows[i]`` for ``x[i]``) that hold NaN/Inf.

    A row sum is a cheap screen (NaN/Inf propagate); only rows it flags, which may be
    huge-but-finite overflows, are checked exactly.  Shared by clustering and training,
    so both name the same rows."""
    with np.errstate(over="ignore", invalid="ignore"):
        suspect = np.flatnonzero(~np.isfinite(x.sum(axis=1, dtype=np.float64)))
    _raise_non_finite(rows, x, suspect, what)
