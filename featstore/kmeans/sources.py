"""Where the rows come from: an array in memory, or a store streamed block by block.

The Lloyd loop only sees ``blocks()``; in memory the blocks are slices of one array,
and when a store's features exceed ``memory_budget`` they are read from the store on
every pass (the next block read and decompressed in a thread while this one
computes), so streaming gives the same centres as in memory up to float rounding.
Every source can also ``scan`` itself once: row count, per-feature spread (for
``tol``) and a uniform random sample (for seeding and restarts), drawn so that the
same seed picks the same sample whatever the block sizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from featstore.common.prefetch import read_ahead
from featstore.errors import InputError
from featstore.kmeans.kernels import BlockKernel
from featstore.kmeans.lloyd import PassResult, assignment_pass, block_workers, kernel_session

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


class StoreSource:
    """Rows streamed from a FeatureView on every pass, one read-ahead block in a thread."""

    streamed = True

    def __init__(
        self,
        view: Any,
        kernel: BlockKernel,
        rows_per_block: int,
        *,
        sample_cap: int,
        n_hint: int,
        parallel: int = 1,
    ):
        self.view = view
        self.parallel = parallel  # blocks the memory plan lets be assigned at once
        self.kernel = kernel
        self.rows_per_block = rows_per_block
        self.n = -1  # known after scan()
        self.n_hint = n_hint
        self.dim = view.dim
        self.rows: np.ndarray | None = None
        self.sample_cap: int | None = sample_cap

    def blocks(self) -> Iterator[tuple[int, Any]]:
        """Store blocks in order, the next one read (and decompressed) while this one computes."""
        pos = 0
        for x in read_ahead(
            (x for _rows, x in self.view.iter_blocks(self.rows_per_block)), depth=1
        ):
            yield pos, self.kernel.put(x)
            pos += x.shape[0]

    def scan(self, sample_size: int, rs: np.random.RandomState) -> DataScan:
        rows_all: list[np.ndarray] = []

        def blocks() -> Iterator[tuple[int, Any]]:  # the store rows are kept on the way
            for rows, x in self.view.iter_blocks(self.rows_per_block):
                rows_all.append(rows)
                yield 0, x

        scan = scan_blocks(blocks(), self.kernel, self.dim, sample_size, rs)
        self.n = scan.n
        self.rows = np.concatenate(rows_all) if rows_all else np.empty(0, np.int64)
        return scan

    def scan_assign(
        self, rs: np.random.RandomState, centers: np.ndarray, kernel: Any
    ) -> tuple[DataScan, PassResult]:
        """The scan and the first assignment pass to ``centers`` in one read of the store.

        For starting centres known before the scan (an array ``init``), which need no
        sample: the scan then only counts rows, sums the moments and draws its keys
        (the same draws as :meth:`scan`, so the seeds that follow are the same).  The
        moments are taken beside the kernel, in its worker threads.
        """
        k = int(centers.shape[0])
        labels = np.full(self.n_hint, -1, np.int32)
        rows_all: list[np.ndarray] = []

        def blocks() -> Iterator[tuple[int, Any]]:  # as blocks(), keeping the store rows
            pos = 0
            for rows, x in read_ahead(self.view.iter_blocks(self.rows_per_block), depth=1):
                rows_all.append(rows)
                yield pos, kernel.put(x)
                pos += x.shape[0]

        def moments(_start: int, x: Any) -> tuple[int, np.ndarray, np.ndarray]:
            m1, m2 = host_moments(x) if isinstance(x, np.ndarray) else kernel.moments(x)
            return int(x.shape[0]), m1, m2

        with kernel_session(kernel):
            acc, _changed, per_block = assignment_pass(
                blocks(),
                self.dim,
                kernel.prepare(centers),
                kernel,
                k,
                labels,
                workers=block_workers(kernel, self),
                on_block=moments,
            )
        self.rows = np.concatenate(rows_all) if rows_all else np.empty(0, np.int64)
        n = self.n = int(self.rows.shape[0])
        s1 = np.zeros(self.dim, np.float64)
        s2 = np.zeros(self.dim, np.float64)
        for b, m1, m2 in per_block:  # in block order, so the sums do not depend on timing
            s1 += m1
            s2 += m2
            rs.random_sample(b)  # the scan's keys (nothing is sampled)
        empty = np.empty(0, np.int64)
        scan = moments_scan(n, s1, s2, np.empty((0, self.dim), np.float32), empty)
        return scan, PassResult(labels[:n], acc)

    def describe(self, backend: str, device: str) -> str:
        if backend == "sklearn":
            kernel = "scikit-learn's fused chunked Lloyd step per block, blocks in parallel"
        else:
            kernel = f"{backend} block kernel"
        return f"{kernel}, blocks read from the store every pass"


def host_moments(x: np.ndarray, piece: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature sum and sum of squares in float64, a few cache-sized rows at a time.

    Converting a whole 65,536-row block to float64 made two temporaries 4x its size
    (0.5 GB per block at D=512), which cost more than a Lloyd iteration's arithmetic.
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


# --------------------------------------------------------------------------- stores
def fixed_bytes(k: int, dim: int, sample_rows: int) -> int:
    """Memory a run needs besides the data blocks: centres, sums, far rows, seeding sample."""
    return int(k * dim * (4 * 4 + 8 * 2) + sample_rows * dim * 4 * 3 + 8 * sample_rows * 8)


_READER_RESERVE = 384 << 10
#: most blocks assigned at once in a streamed pass (see :func:`stream_plan`)
MAX_PARALLEL_BLOCKS = 5


def stream_plan(
    budget: int, view: Any, k: int, init_sample: int, chunk_rows: int
) -> tuple[int, int, int]:
    """Rows per streamed block, the largest in-memory sample, and how many blocks may be
    assigned at once, within ``budget``.

    Per row, every run keeps its label, the row index and the view's masks (24 B).
    A block costs at most 8x its float32 size while in flight (the queued block, the
    one being read: stored dtype + float32 copies + normalised parts + concatenation,
    the one being assigned) plus its distances to the K centres; a tenth of the budget
    plus ``_READER_RESERVE`` is left for the store reader's own buffers (zarr's
    asyncio machinery and masks, measured at ~0.3 MB with tracemalloc).  The sample used for
    seeding (and for the restarts) gets at most 30 % of what is left.  None of this
    depends on the number of cores, so neither do the blocks nor the results.

    Blocks assigned at once (``parallel``, at most ``MAX_PARALLEL_BLOCKS``): each extra
    one holds one more float32 block, which the 8x allowance covers up to 5 (the fused
    kernel keeps no per-row temporaries), plus a (K, D) float32 + float64 + float32 set
    of sums, taken from what the blocks leave of the budget.
    """
    dim = view.dim
    n_upper = int(view.valid_mask().sum())
    avail = int(budget * 0.9) - _READER_RESERVE - n_upper * 24 - k * dim * 48
    sample_cap = max(0, int(avail * 0.3)) // (dim * 4 * 3 + 64)
    sample_rows = min(init_sample, sample_cap)
    avail -= sample_rows * (dim * 4 * 3 + 64)
    per_row = dim * 4 * 8 + k * 4 * 2
    rows = (max(avail, 0) // per_row) // chunk_rows * chunk_rows
    if rows < chunk_rows or sample_cap < k:
        need = budget - avail + chunk_rows * per_row + max(0, k - sample_rows) * (dim * 12 + 64)
        raise InputError(
            f"memory budget {budget} bytes is too small to stream {view.store.path}: one chunk "
            f"({chunk_rows} rows x {dim} features) plus the run's bookkeeping needs about {need} bytes"
        )
    left = avail - rows * per_row
    parallel = min(MAX_PARALLEL_BLOCKS, 1 + left // (k * dim * 16))
    return int(rows), int(sample_cap), int(parallel)


def load_view(view: Any, n_upper: int) -> tuple[np.ndarray, np.ndarray]:
    """All valid rows into one preallocated float32 array (peak = data + one block)."""
    X = np.empty((n_upper, view.dim), np.float32)
    rows = np.empty(n_upper, np.int64)
    pos = 0
    for r, x in view.iter_blocks(MEMORY_BLOCK_ROWS):
        X[pos : pos + x.shape[0]] = x
        rows[pos : pos + x.shape[0]] = r
        pos += x.shape[0]
    return rows[:pos], X[:pos]


def store_source(
    store: Any,
    features: str,
    kernel: BlockKernel,
    *,
    backend: str,
    k: int,
    budget: int | None,
    init_sample: int,
) -> ArraySource | StoreSource:
    """A store's features in memory when they fit ``budget`` (or no budget), else streamed."""
    from featstore.store.features import FeatureView

    view = FeatureView(store, features)
    n_upper = int(view.valid_mask().sum())
    # in memory: the float32 rows, their ids, fixed buffers, the scan's two float64
    # block temporaries, and scikit-learn's own centred copy of X (copy_x)
    resident = n_upper * (view.dim * 4 + 16) * (2 if backend == "sklearn" else 1)
    need = resident + fixed_bytes(k, view.dim, init_sample) + 2 * MEMORY_BLOCK_ROWS * view.dim * 8
    if budget is None or need <= budget:
        rows, X = load_view(view, n_upper)
        return ArraySource(kernel.put(X), kernel, rows=rows)
    rpb, sample_cap, parallel = stream_plan(budget, view, k, init_sample, store.chunk_rows)
    return StoreSource(view, kernel, rpb, sample_cap=sample_cap, n_hint=n_upper, parallel=parallel)
