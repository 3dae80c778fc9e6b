"""The two-pass engine: the confusion degree of any stream of row blocks.

The same code serves an in-memory array and a store larger than memory
(:mod:`featstore.confusion.api` builds the block sources):

* pass 1, per block while it is in cache: row count, column sums and the D x D moment
  (``syrk``; -> mean, covariance, PCA basis) and class counts;
* pass 2: each block projected to the basis (k floats per row kept); the centroids are
  the class means of the projections, then one distance per row and per-class
  quantiles after one sort by distance and one stable sort by class.  (For k above
  ``MAX_KEPT_COMPONENTS`` or no projection, pass 1 also sums each class's D-dim rows
  and pass 2 keeps only the distances.)

Blocks are shared by one worker thread per core, each with its own partial sums and
one BLAS/torch thread (:mod:`featstore.confusion.blocks`).  On CuPy one worker queues
everything on the GPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from featstore.common import default_workers, one_thread_per_worker, to_numpy
from featstore.confusion.blocks import Block, Loader, drain, run_blocks
from featstore.confusion.cuda import is_cupy
from featstore.confusion.kernels import (
    add_moments,
    class_quantiles,
    class_sums,
    fill_coincident,
    pairwise_overlap,
    shift_for,
    symmetric_from_upper,
    top_eigh,
)
from featstore.confusion.refine import refine_basis
from featstore.confusion.result import COINCIDENT_RTOL, ConfusionResult
from featstore.errors import InputError

#: projections up to this many columns are kept per row (N x k floats) and the basis is
#: refined; larger k (or no projection): centroids from the D-dim class sums, no refinement
MAX_KEPT_COMPONENTS = 64
#: rows per float64 piece in pass 2: 256 x 512 x 8 B = 1 MiB stays in L2 (measured: 0.11
#: CPU-s for N=200k, D=512 against 0.16 s on whole 4096-row blocks)
PIECE_ROWS = 256


def run_engine(
    xp, blocks: Callable[[int], Iterable[Loader]], **kwargs: Any
) -> tuple[ConfusionResult, np.ndarray]:
    """:func:`two_passes` with one BLAS/torch thread per block worker."""
    workers = kwargs.pop("workers", None)
    workers = default_workers(xp) if workers is None else max(1, int(workers))
    with one_thread_per_worker(workers):
        return two_passes(xp, blocks, workers=workers, **kwargs)


def _scratch(xp, st: dict, key: str, shape: tuple[int, int], dtype) -> Any:
    """A worker's reusable buffer of ``shape`` (fresh pages fault on every block: ~1 ms/MB)."""
    buf = st.get(key)
    if buf is None or buf.shape[0] < shape[0] or buf.shape[1] != shape[1]:
        buf = st[key] = xp.empty(shape, dtype=dtype)
    return buf[: shape[0]]


def _no_rows() -> InputError:
    return InputError(
        "no rows to analyse: every row is excluded (label -1, failed, missing modality or other split)"
    )


def two_passes(
    xp,
    blocks: Callable[[int], Iterable[Loader]],
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

    Pass 1, per block while it is in cache: column sums and ``syrk`` into the D x D moment
    (:func:`add_moments`: products in the block's precision, summed in float64; data far
    from the origin multiplied as a shifted copy, :func:`shift_for`), class counts and
    class sums.
    With ``cache`` the blocks are kept, unchanged, for pass 2; otherwise pass 2 loads them
    again.  Pass 2 (k <= ``MAX_KEPT_COMPONENTS``): each block in float64, its projections
    on the approximate basis V (kept: N x k) and the exact ``X' [X V | 1]``; the basis is
    then refined to float64 accuracy (:mod:`featstore.confusion.refine`) and the centroids
    are the class means projected on it (exactly along V, the class sums carry only the
    ~5e-8 correction).  Larger k or no projection: centroids from the class sums and the
    distances per block in pass 2.
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
    refined = basis_k is not None and n_components is not None and basis_k <= MAX_KEPT_COMPONENTS
    C = n_classes

    source = iter(blocks(1))
    first = None
    for load in source:  # the first block with rows sets the working precision and shift
        first = load()
        if first is not None:
            break
    if first is None:
        raise _no_rows()
    x0 = first[0]
    work_dtype = xp.float64 if x0.dtype == xp.float64 else xp.float32
    shift = shift_for(xp, x0, work_dtype)

    def prepared(block: Block, st: dict, shifted: bool) -> tuple[Any, Any, Any, Any]:
        """(x in the working precision, x shifted or x itself, class index, rows)."""
        x, cls, rows = block
        if x.dtype != work_dtype or not x.flags.c_contiguous:
            x = x.astype(work_dtype, order="C")
        if shift is None or not shifted:
            return x, x, cls, rows
        xs = xp.subtract(x, shift, out=_scratch(xp, st, "shifted", x.shape, work_dtype))
        return x, xs, cls, rows  # never write into x: the caller's array, or kept for pass 2

    def new_state1() -> dict:
        return {
            "n": 0,
            "s1": xp.zeros(dim, dtype=xp.float64),
            # C order, like the products added into it (a Fortran-ordered sum cost 0.1 CPU-s)
            "s2": xp.zeros((dim, dim), dtype=xp.float64) if basis_k else None,
            "count": xp.zeros(C, dtype=xp.float64),
            "csum": xp.zeros((C, dim), dtype=xp.float64),
        }

    def pass1(block: Block, st: dict):
        x, xs, cls, rows = prepared(block, st, True)
        st["n"] += int(x.shape[0])
        st["s1"] += add_moments(xp, xs, st["s2"], st)
        st["count"] += xp.bincount(cls, minlength=C)
        # class sums while the block is in cache (refined path: they only carry the basis'
        # correction, so the block's precision is plenty)
        st["csum"] += class_sums(xp, xs, cls, C)[0]
        return (x, cls, rows) if cache else None

    cached, states = run_blocks(
        itertools.chain([lambda: first], source), pass1, workers, new_state1
    )
    n = sum(st["n"] for st in states)
    if n == 0:
        raise _no_rows()
    s1 = sum(st["s1"] for st in states)
    ccount = sum(st["count"] for st in states)
    csum = sum(st["csum"] for st in states)

    keep = xp.arange(C)
    if compact:  # classes given by the data itself: drop the ones that turned out empty
        keep = xp.flatnonzero(ccount > 0)
        ccount = ccount[keep]
        csum = csum[keep]
    remap = xp.full(C, -1, dtype=xp.int64)
    remap[keep] = xp.arange(keep.shape[0])
    Ck = int(keep.shape[0])
    present = ccount > 0
    mean_s = s1 / n  # mean of all rows, shifted coordinates (pass 1: approximate)

    basis: Any = None
    evals: Any = None
    cov: Any = None
    total_var = 0.0
    if basis_k is not None:
        s2 = symmetric_from_upper(xp, sum(st["s2"] for st in states))
        cov = s2 / n - xp.outer(mean_s, mean_s)
        evals, basis = top_eigh(xp, cov, basis_k)  # descending eigenvalue order
        total_var = float(xp.trace(cov))  # the sum of all eigenvalues
    del states
    second = drain(cached) if cache else blocks(2)
    del cached
    k = int(n_components or 0)

    if refined:
        V = xp.ascontiguousarray(basis, dtype=xp.float64)
        kb = int(V.shape[1])
        shift64 = None if shift is None else shift.astype(xp.float64)
        piece = PIECE_ROWS if not is_cupy(xp) else 1 << 20  # GPU: whole blocks (launches)

        def pass2(block: Block, st: dict):
            x, _, cls, rows = prepared(block, st, False)
            ci = remap[cls]
            if "xz1" not in st:
                st["xz1"] = xp.zeros((dim, kb + 1), dtype=xp.float64)
            # exact X'[XV | 1] in float64, in row pieces that stay in the L2 cache
            z = xp.empty((x.shape[0], kb), dtype=xp.float64)
            z1 = _scratch(xp, st, "z1", (min(piece, x.shape[0]), kb + 1), xp.float64)
            z1[:, kb] = 1.0
            for s in range(0, x.shape[0], piece):
                xs = x[s : s + piece]
                x64 = _scratch(xp, st, "x64", xs.shape, xp.float64)
                x64[...] = xs
                if shift64 is not None:
                    x64 -= shift64  # exact: float32 - float32 in float64
                zs = z1[: xs.shape[0]]
                zs[:, :kb] = x64 @ V
                z[s : s + xs.shape[0]] = zs[:, :kb]
                st["xz1"] += x64.T @ zs
            return z, ci, (to_numpy(rows) if keep_rows and rows is not None else None)

        out, states2 = run_blocks(second, pass2, workers, dict)
        xz1 = sum(st["xz1"] for st in states2 if "xz1" in st)
        del states2
        mean_s = xz1[:, kb] / n  # exact: float64 sums of every (shifted) row
        av = xz1[:, :kb] / n - xp.outer(mean_s, mean_s @ V)
        theta, Y, B = refine_basis(xp, cov, V, av)
        if total_var > 0:
            evr: float | None = float(xp.clip(theta[:k], 0, None).sum()) / total_var
        else:
            evr = None
        row_cls = xp.concatenate([o[1] for o in out])
        z_v = xp.concatenate([o[0] for o in out])  # rows on V, shifted coordinates
        cnt = xp.maximum(ccount, 1.0)
        zbar = xp.stack(
            [xp.bincount(row_cls, weights=z_v[:, j], minlength=Ck) for j in range(kb)], axis=1
        )
        # centroid on B = exact class mean on U (= V Y) + approximate class mean on (B - U),
        # which is ~5e-8 long: class sums good to 1e-6 leave ~1e-13
        mu = csum / cnt[:, None]  # shifted coordinates, like z_v
        cent_s = ((zbar / cnt[:, None]) @ Y + mu @ (B - V @ Y))[:, :k]
        z_all = z_v @ Y  # rows on the Ritz vectors V @ Y
        del z_v
        own = z_all[:, :k] - cent_s[row_cls]
        dist = xp.sqrt((own * own).sum(axis=1))
        del own
        origin = mean_s @ B[:, :k]
        plane_origin = mean_s @ (V @ Y)[:, :2] if keep_plane else None
    else:
        proj: Any = basis[:, :n_components] if n_components is not None else None
        basis_w = None if basis is None else xp.ascontiguousarray(basis.astype(work_dtype))
        cent_w = csum / xp.maximum(ccount, 1.0)[:, None]
        cent_w = (cent_w @ proj if proj is not None else cent_w).astype(work_dtype)

        def pass2(block: Block, st: dict):
            _, xs, cls, rows = prepared(block, st, True)
            ci = remap[cls]
            z: Any = xs @ basis_w if basis_w is not None else None
            own = (z[:, :k] if proj is not None else xs) - cent_w[ci]
            dist = xp.sqrt((own * own).sum(axis=1, dtype=xp.float64))
            z = z[:, :2] if keep_plane else None
            return z, ci, (to_numpy(rows) if keep_rows and rows is not None else None), dist

        out, _ = run_blocks(second, pass2, workers, dict)
        row_cls = xp.concatenate([o[1] for o in out])
        dist = xp.concatenate([o[3] for o in out])
        z_all = xp.concatenate([o[0] for o in out]) if keep_plane else None
        cent_s = cent_w.astype(xp.float64)
        evr = None
        if n_components is not None and total_var > 0:
            evr = float(xp.clip(evals[:n_components], 0, None).sum()) / total_var
        origin = mean_s @ proj if proj is not None else mean_s
        plane_origin = (mean_s @ basis[:, :2]).astype(work_dtype) if keep_plane else None
    radii = class_quantiles(xp, dist, row_cls, Ck, coverage)

    # centred PCA coordinates
    cent = xp.where(present[:, None], cent_s - origin, xp.nan)
    scale = (
        float(xp.nanmax(xp.sqrt((cent * cent).sum(axis=1)) + xp.nan_to_num(radii)))
        if Ck and bool(present.any())
        else 0.0
    )
    tol = COINCIDENT_RTOL * scale
    M, D = pairwise_overlap(xp, xp.nan_to_num(cent), xp.nan_to_num(radii), present, tol)
    M, n_coincident = fill_coincident(xp, M)

    plane = (z_all[:, :2] - plane_origin).astype(xp.float32) if keep_plane else None
    rows_kept = [o[2] for o in out if o[2] is not None]
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
