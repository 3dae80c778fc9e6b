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

from featstore.common.backend import to_numpy
from featstore.confusion.blocks import (
    Block,
    Loader,
    default_workers,
    drain,
    one_thread_per_worker,
    run_blocks,
)
from featstore.confusion.kernels import (
    class_quantiles,
    class_sums,
    fill_coincident,
    moments,
    pairwise_overlap,
    shift_for,
    symmetric_from_upper,
    top_eigh,
)
from featstore.confusion.result import COINCIDENT_RTOL, ConfusionResult
from featstore.errors import InputError

#: projections up to this many columns are kept per row (N x k floats) so the centroids
#: come from them; larger k (or no projection) needs class sums of the D-dim rows in pass 1
MAX_KEPT_COMPONENTS = 64


def run_engine(
    xp, blocks: Callable[[int], Iterable[Loader]], **kwargs: Any
) -> tuple[ConfusionResult, np.ndarray]:
    """:func:`two_passes` with one BLAS/torch thread per block worker."""
    workers = kwargs.pop("workers", None)
    workers = default_workers(xp) if workers is None else max(1, int(workers))
    with one_thread_per_worker(workers):
        return two_passes(xp, blocks, workers=workers, **kwargs)


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

    Pass 1, per block, in one go while the block is in cache: shift (only data far from
    the origin, :func:`shift_for`), column sums and ``syrk`` into the D x D moment
    (:func:`moments`), class counts (and the D-dim class sums only when the centroids
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
    from_projections = (
        basis_k is not None and n_components is not None and basis_k <= MAX_KEPT_COMPONENTS
    )
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
    shift = shift_for(xp, x0, work_dtype)

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
        total, gram = moments(xp, x, st["s2"] is not None)
        st["s1"] += total
        if gram is not None:
            st["s2"] += gram
        st["count"] += xp.bincount(cls, minlength=C)
        if st["csum"] is not None:
            st["csum"] += class_sums(xp, x, cls, C)[0]
        return (x, cls, rows) if cache else None

    cached, states = run_blocks(
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

    basis: Any = None
    evr = None
    if basis_k is not None:
        s2 = symmetric_from_upper(xp, sum(st["s2"] for st in states))
        cov = s2 / n - xp.outer(mean_s, mean_s)
        evals, basis = top_eigh(xp, cov, basis_k)  # descending eigenvalue order
        total = float(xp.trace(cov))  # the sum of all eigenvalues
        if n_components is not None and total > 0:
            evr = float(xp.clip(evals[:n_components], 0, None).sum()) / total
    del states
    proj: Any = (
        basis[:, :n_components] if (basis is not None and n_components is not None) else None
    )
    basis_w = None if basis is None else xp.ascontiguousarray(basis.astype(work_dtype))
    cent_s: Any = None  # centroids in shifted (and projected) coordinates
    if not from_projections:
        cmean_s = csum / xp.maximum(ccount, 1.0)[:, None]
        cent_s = (cmean_s @ proj if proj is not None else cmean_s).astype(work_dtype)

    # pass 2: project each block; the quantiles need one distance per row
    def pass2(block, _st: dict):
        x, cls, rows = block if cache else shifted(block)  # cached blocks are shifted already
        ci = remap[cls]
        z: Any = x @ basis_w if basis_w is not None else None
        dist = None
        if not from_projections:
            own = (z[:, : proj.shape[1]] if proj is not None else x) - cent_s[ci]
            dist = xp.sqrt((own * own).sum(axis=1, dtype=xp.float64))
            z = None if not keep_plane else z[:, :2]
        return z, dist, ci, (to_numpy(rows) if keep_rows and rows is not None else None)

    second = drain(cached) if cache else blocks(2)
    del cached
    out, _ = run_blocks(second, pass2, workers, dict)
    row_cls = xp.concatenate([o[2] for o in out])
    z_all: Any = xp.concatenate([o[0] for o in out]) if (from_projections or keep_plane) else None
    if from_projections:
        # centroid of the projected members (= projection of the class mean)
        zk = z_all[:, :n_components].astype(xp.float64)
        cnt = xp.maximum(ccount, 1.0)
        cent_s = (
            xp.stack(
                [
                    xp.bincount(row_cls, weights=zk[:, j], minlength=Ck)
                    for j in range(int(n_components or 0))
                ],
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
    radii = class_quantiles(xp, dist, row_cls, Ck, coverage)

    # centred PCA coordinates
    cent = cent_s - (mean_s @ proj if proj is not None else mean_s)
    cent = xp.where(present[:, None], cent, xp.nan)
    scale = (
        float(xp.nanmax(xp.sqrt((cent * cent).sum(axis=1)) + xp.nan_to_num(radii)))
        if Ck and bool(present.any())
        else 0.0
    )
    tol = COINCIDENT_RTOL * scale
    M, D = pairwise_overlap(xp, xp.nan_to_num(cent), xp.nan_to_num(radii), present, tol)
    M, n_coincident = fill_coincident(xp, M)

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
