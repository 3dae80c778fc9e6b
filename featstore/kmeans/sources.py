"""Where the rows come from: an array in memory, or a store streamed block by block.

The Lloyd loop only sees ``blocks()``; in memory the blocks are slices of one array,
and when a store's features exceed ``memory_budget`` they are read from the store on
every pass (:mod:`featstore.kmeans.streamed`), so streaming gives the same centres
as in memory up to float rounding.
Every source can also ``scan`` itself once: row count, per-feature spread (for
``tol``) and a uniform random sample (for seeding and restarts), drawn so that the
same seed picks the same sample whatever the block sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from featstore.kmeans.kernels import BlockKernel

#: rows per in-memory block: big enough for sgemm efficiency, small enough for caches
MEMORY_BLOCK_ROWS = 65536


@dataclass
class DataScan:
    """One pass over the data: count, spread (for tol) and a uniform sample."""

    n: int
    mean_var: float
    mean: np.ndarray  # (D,) float64 per-feature mean
    sample: np.ndarray  # (s, D) float32 host, rows in data order
    sample_pos: np.ndarray  # (s,) positions of the sample rows


class RowSource(Protocol):
    """What the restarts driver clusters (in memory, streamed, or on Dask workers)."""

    n: int  # rows; -1 until a streamed source has been scanned
    dim: int
    rows: np.ndarray | None  # store row of every position (None: an array, rows = positions)
    streamed: bool  # rows are re-read on every pass
    sample_cap: int | None  # largest in-memory sample that fits (None: no limit)
    n_hint: int  # rows expected before the scan (upper bound)

    def blocks(self) -> Iterator[tuple[int, Any]]: ...

    def scan(self, sample_size: int, rs: np.random.RandomState) -> DataScan: ...

    def describe(self, backend: str, device: str) -> str:
        """The kernel that runs over this source, in words (for ``KMeans.choice_``)."""
        ...


class ArraySource:
    """Rows already in (host or device) memory, handed out as slices."""

    streamed = False
    sample_cap: int | None = None

    def __init__(
        self,
        X: Any,
        kernel: BlockKernel | None = None,
        *,
        rows: np.ndarray | None = None,
        block_rows: int = MEMORY_BLOCK_ROWS,
    ):
        self.X = X
        self.kernel = kernel
        self.n = self.n_hint = int(X.shape[0])
        self.dim = int(X.shape[1])
        self.rows = rows
        self.block_rows = block_rows

    def blocks(self) -> Iterator[tuple[int, Any]]:
        for s in range(0, self.n, self.block_rows):
            yield s, self.X[s : s + self.block_rows]

    def scan(self, sample_size: int, rs: np.random.RandomState) -> DataScan:
        return scan_blocks(self.blocks(), self.kernel, self.dim, sample_size, rs)

    def describe(self, backend: str, device: str) -> str:
        if backend == "sklearn":
            return (
                "scikit-learn's fused Lloyd loop (per 256-row chunk: sgemm, argmin and centre sums "
                "while the chunk is in cache)"
            )
        if backend == "torch":
            return f"torch on {device}, all restarts batched (one distance product per iteration for every restart)"
        return f"{backend} block kernel (blocked distance product + argmin)"


#: rows per float64 piece in :func:`host_moments`
MOMENT_ROWS = 512


def host_moments(x: np.ndarray, piece: int = MOMENT_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sum and sum of squares in float64, a few cache-sized rows at a time.

    Converting a whole 65,536-row block to float64 made two temporaries 4x its size
    (0.5 GB per block at D=512), which cost more than a Lloyd iteration's arithmetic.
    512 rows (2 MB at D=512) ran 10 % faster than 2,048 and keep a streamed first
    pass, which takes the moments in every worker, inside its memory plan.
    """
    s1 = np.zeros(x.shape[1], np.float64)
    s2 = np.zeros(x.shape[1], np.float64)
    for a in range(0, x.shape[0], piece):
        p = x[a : a + piece].astype(np.float64)
        s1 += p.sum(axis=0)
        s2 += np.einsum("ij,ij->j", p, p)
    return s1, s2


def moments_scan(
    n: int, s1: np.ndarray, s2: np.ndarray, sample: np.ndarray, pos: np.ndarray
) -> DataScan:
    """A :class:`DataScan` from the per-feature sums and the sample rows (in data order)."""
    var = s2 / max(n, 1) - (s1 / max(n, 1)) ** 2
    return DataScan(
        n=n,
        mean_var=float(np.maximum(var, 0).mean()) if n else 0.0,
        mean=s1 / max(n, 1),
        sample=sample,
        sample_pos=pos,
    )


def scan_blocks(
    blocks: Iterable[tuple[int, Any]],
    kernel: Any,
    dim: int,
    sample_size: int,
    rs: np.random.RandomState,
) -> DataScan:
    """Uniform sample without knowing n: keep the rows with the smallest random keys.

    Keys are drawn block by block from one RandomState, which yields the same numbers
    whatever the block sizes (and as one ``rs.random_sample(n)`` would), so in-memory,
    streamed and Dask runs pick the same sample.
    """
    n = 0
    s1 = np.zeros(dim, np.float64)
    s2 = np.zeros(dim, np.float64)
    keep_key = np.empty(0, np.float64)
    keep_pos = np.empty(0, np.int64)
    keep_x = np.empty((0, dim), np.float32)
    for _start, xb in blocks:
        b = int(xb.shape[0])
        if isinstance(xb, np.ndarray):
            m1, m2 = host_moments(xb)
        else:  # device block: reduce there, bring back only the sampled rows
            m1, m2 = kernel.moments(xb)
        s1 += m1
        s2 += m2
        keys = rs.random_sample(b)
        if keep_key.size >= sample_size:
            cut = keep_key.max()
            cand = np.flatnonzero(keys < cut)
        else:
            cand = np.arange(b)
        if cand.size:
            # choose the kept keys first, then copy only the block rows that made it
            all_key = np.concatenate([keep_key, keys[cand]])
            if all_key.size > sample_size:
                sel = np.argpartition(all_key, sample_size - 1)[:sample_size]
                sel.sort()
            else:
                sel = np.arange(all_key.size)
            old = sel[sel < keep_key.size]
            new = cand[sel[sel >= keep_key.size] - keep_key.size]
            picked = xb[new] if isinstance(xb, np.ndarray) else kernel.take(xb, new)
            keep_x = np.concatenate([keep_x[old], picked])
            keep_pos = np.concatenate([keep_pos[old], new + n])
            keep_key = all_key[sel]
        n += b
    order = np.argsort(keep_pos)
    return moments_scan(n, s1, s2, keep_x[order], keep_pos[order])


def sample_positions(n: int, sample_size: int, rs: np.random.RandomState) -> np.ndarray:
    """The positions :func:`scan_blocks` keeps, for sources that can fetch rows by position
    (the same keys, drawn at once: the smallest ``sample_size`` win), sorted."""
    keys = rs.random_sample(n)
    if n <= sample_size:
        return np.arange(n)
    return np.sort(np.argpartition(keys, sample_size - 1)[:sample_size])
