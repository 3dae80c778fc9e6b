"""All k-means restarts at once: one distance GEMM over every restart's centres (torch).

DICCAE keeps the best of 20 restarts, and the restarts are independent.  Running
them one after another leaves a GPU mostly idle: one (rows x K) distance product
per iteration is small for an H200.  Stacking the R restarts' centres into one
(R*K, D) matrix turns R small products into one large one, so the GPU (or the
CPU's BLAS) works at full rate and the data is read once per iteration for all
restarts instead of R times.

Precision: the distance product may run in ``tf32`` or ``bf16`` with float32
accumulation (``fp32`` turns both off).  Low precision only steers the Lloyd
iterations; every restart's labels and inertia are then computed again in one
exact float32 pass, so the inertia that picks the best restart and the labels a
user gets are float32 results.  Per-cluster sums are always float32 atomics on
the original rows.

Stopping rules match :func:`featstore.kmeans.lloyd.lloyd` per restart: a restart stops
when its labels stop changing (and no cluster was empty) or when its squared
centre shift is at most ``tol_abs``; finished restarts drop out of the product.
Empty clusters take the rows farthest from their centre, removed from the cluster
they came from, as in scikit-learn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from featstore.kmeans.lloyd import RunResult

PRECISIONS = ("auto", "fp32", "tf32", "bf16")
#: bytes one (rows x R*K) float32 distance block may take on a GPU / on the CPU
_GPU_BLOCK_BYTES = 2 << 30
_CPU_BLOCK_BYTES = 64 << 20


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``tf32`` on CUDA, ``fp32`` elsewhere (the CPU has no faster mode)."""
    if precision not in PRECISIONS:
        from featstore.errors import InputError

        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not str(device).startswith("cuda"):
        return "fp32"
    return "tf32" if precision == "auto" else precision


@contextlib.contextmanager
def _matmul_mode(torch: Any, allow_tf32: bool) -> Iterator[None]:
    """TF32 on or off for float32 products inside the block, restored afterwards."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def _block_rows(n_cols: int, device: str) -> int:
    budget = _GPU_BLOCK_BYTES if str(device).startswith("cuda") else _CPU_BLOCK_BYTES
    return max(256, budget // (4 * max(1, n_cols)))


def _cross(torch: Any, xb: Any, C: Any, precision: str) -> Any:
    """x . c for every row of the block and every stacked centre, float32 out."""
    if precision == "bf16":
        a, b = xb.to(torch.bfloat16), C.to(torch.bfloat16).T
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # builds without the fp32-output bf16 kernel
            return torch.mm(a, b).float()
    return xb @ C.T


class _Pass:
    """One sweep over the rows for a set of restarts: labels, distances, sums, counts."""

    def __init__(self, torch: Any, X: Any, x_sq: Any, C: Any, precision: str, with_sums: bool):
        A, K, D = C.shape
        self.labels = torch.empty((X.shape[0], A), dtype=torch.int64, device=X.device)
        self.d2 = torch.empty((X.shape[0], A), dtype=torch.float32, device=X.device)
        self.sums: Any = (
            torch.zeros((A, K, D), dtype=torch.float32, device=X.device) if with_sums else None
        )
        self.counts = torch.zeros((A, K), dtype=torch.int64, device=X.device)
        flat = C.reshape(A * K, D)
        c_sq = (flat * flat).sum(dim=1)
        step = _block_rows(A * K, str(X.device))
        cuda = X.device.type == "cuda"
        mode = _matmul_mode(torch, precision == "tf32") if cuda else contextlib.nullcontext()
        with mode:
            for s in range(0, X.shape[0], step):
                xb = X[s : s + step]
                S = _cross(torch, xb, flat, precision)
                S.mul_(-2.0).add_(c_sq[None, :])
                val, lab = S.view(xb.shape[0], A, K).min(dim=2)
                del S
                self.labels[s : s + xb.shape[0]] = lab
                self.d2[s : s + xb.shape[0]] = (val + x_sq[s : s + xb.shape[0], None]).clamp_min_(0)
                for a in range(A):
                    self.counts[a] += torch.bincount(lab[:, a], minlength=K)
                    if self.sums is not None:
                        self.sums[a].index_add_(0, lab[:, a], xb)


def _relocate_empty(torch: Any, X: Any, sums: Any, counts: Any, d2: Any, labels: Any) -> int:
    """Give each empty cluster the farthest row of the restart (taken out of its cluster)."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return 0
    order = torch.argsort(d2, descending=True, stable=True)[: 4 * len(empty) + 16].tolist()
    used = 0
    for j in empty:
        while used < len(order):
            r = order[used]
            used += 1
            src = int(labels[r])
            if int(counts[src]) > 1 and float(d2[r]) > 0:
                sums[src] -= X[r]
                counts[src] -= 1
                sums[j] = X[r]
                counts[j] = 1
                break
    return len(empty)


def batched_lloyd(
    X: Any,
    init_centers: np.ndarray,
    *,
    max_iter: int,
    tol_abs: float,
    precision: str = "auto",
    on_iter: Callable[[int, int, float, int], None] | None = None,
) -> list[RunResult]:
    """Lloyd iterations for R restarts in lockstep on one float32 torch tensor ``X`` (N, D).

    ``init_centers`` is (R, K, D).  Returns one :class:`RunResult` per restart, in
    order; ``on_iter(restart, iteration, inertia, n_reseeded)`` reports progress.
    """
    import torch

    device = str(X.device)
    prec = resolve_precision(precision, device)
    R, K, D = init_centers.shape
    C = torch.as_tensor(np.ascontiguousarray(init_centers, np.float32), device=X.device).clone()
    x_sq = (X * X).sum(dim=1)
    active = list(range(R))
    n_iter = [0] * R
    reseeded = [0] * R
    prev_labels: Any = None  # (N, len(active)) labels of the previous iteration
    for it in range(max_iter):
        idx = torch.as_tensor(active, device=X.device)
        p = _Pass(torch, X, x_sq, C[idx], prec, with_sums=True)
        still: list[int] = []
        keep_cols: list[int] = []
        for col, r in enumerate(active):
            sums, counts = p.sums[col], p.counts[col]
            n_empty = _relocate_empty(torch, X, sums, counts, p.d2[:, col], p.labels[:, col])
            reseeded[r] += n_empty
            filled = counts > 0
            new_c = C[r].clone()
            new_c[filled] = sums[filled] / counts[filled, None].to(torch.float32)
            shift = float(((new_c.double() - C[r].double()) ** 2).sum())
            unchanged = prev_labels is not None and bool(
                torch.equal(prev_labels[:, col], p.labels[:, col])
            )
            C[r] = new_c
            n_iter[r] = it + 1
            if on_iter:
                on_iter(r, it + 1, float(p.d2[:, col].double().sum()), n_empty)
            if (unchanged and n_empty == 0) or shift <= tol_abs:
                continue
            still.append(r)
            keep_cols.append(col)
        if not still:
            break
        prev_labels = p.labels[:, keep_cols] if len(keep_cols) < len(active) else p.labels
        active = still
    # one exact float32 pass for every restart: the labels and inertias that count
    final = _Pass(torch, X, x_sq, C, "fp32", with_sums=False)
    inertias = final.d2.double().sum(dim=0).tolist()
    labels = final.labels.to(torch.int32).cpu().numpy()
    centers = C.cpu().numpy()
    return [
        RunResult(
            centers[r],
            float(inertias[r]),
            n_iter[r],
            np.ascontiguousarray(labels[:, r]),
            reseeded[r],
        )
        for r in range(R)
    ]
