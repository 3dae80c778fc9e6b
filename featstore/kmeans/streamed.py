"""A store's features clustered out of core: the memory plan and the streamed source.

When a store's features do not fit ``memory_budget``, every Lloyd pass reads them
again, block by block (the next block read and decompressed in a thread while this
one is assigned).  :func:`stream_plan` divides the budget: the per-row bookkeeping,
the seeding sample, the blocks in flight, and what is left for a
:class:`~featstore.store.partcache.PartCache`, which keeps the decoded rows of the
first blocks so later passes do not decompress them again.  From a zstd store that
decoding is most of a pass's reading cost (0.245 CPU-s per pass over 200,000 x 512
float16 rows on the 2-core machine, 0.047 with the rows kept), so the budget a user
gives buys speed in proportion, and the numbers are the same bits as without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from featstore.common.prefetch import read_ahead
from featstore.errors import InputError
from featstore.kmeans.kernels import BlockKernel
from featstore.kmeans.lloyd import PassResult, assignment_pass, block_workers, kernel_session
from featstore.kmeans.sources import (
    MEMORY_BLOCK_ROWS,
    MOMENT_ROWS,
    ArraySource,
    DataScan,
    host_moments,
    moments_scan,
    scan_blocks,
)
from featstore.store.partcache import PartCache

#: most blocks assigned at once in a streamed pass (see :func:`stream_plan`)
MAX_PARALLEL_BLOCKS = 5
_READER_RESERVE = 384 << 10
#: per worker: a kernel's distance sub-block on the host (featstore.kmeans.kernels
#: bounds it at 1 MB), or the first pass's float64 moments pieces if larger
_SUB_BLOCK_RESERVE = 1 << 20


@dataclass(frozen=True)
class StreamPlan:
    """How a streamed run spends its memory budget (see :func:`stream_plan`)."""

    rows_per_block: int
    sample_cap: int  # largest in-memory sample (seeding, restarts)
    parallel: int  # blocks the plan lets be assigned at once
    cache_bytes: int  # decoded rows kept between passes


class StoreSource:
    """Rows streamed from a FeatureView on every pass, one read-ahead block in a thread."""

    streamed = True

    def __init__(self, view: Any, kernel: BlockKernel, plan: StreamPlan, *, n_hint: int):
        self.view = view
        self.kernel = kernel
        self.plan = plan
        self.parallel = plan.parallel
        self.rows_per_block = plan.rows_per_block
        self.sample_cap: int | None = plan.sample_cap
        self.n = -1  # known after scan()
        self.n_hint = n_hint
        self.dim = view.dim
        self.rows: np.ndarray | None = None
        #: filled by the first pass that holds no sample (a scan keeps its sample in
        #: the memory the cache gets once seeding is over)
        self.cache = PartCache(plan.cache_bytes)

    def blocks(self) -> Iterator[tuple[int, Any]]:
        """Store blocks in order, the next one read (and decompressed) while this one computes."""
        pos = 0
        blocks = self.view.iter_blocks(self.rows_per_block, cache=self.cache)
        for x in read_ahead((x for _rows, x in blocks), depth=1):
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
            read = self.view.iter_blocks(self.rows_per_block, cache=self.cache)
            for rows, x in read_ahead(read, depth=1):
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
                inertia=False,  # a first pass is never the last
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
            kernel = (
                "scikit-learn's chunked E-step per block (sgemm + argmin per 256 rows) and "
                "its per-cluster sums, blocks in parallel"
            )
        else:
            kernel = f"{backend} block kernel"
        out = f"{kernel}, blocks read from the store every pass"
        if self.cache.rows:
            out += (
                f"; the first {self.cache.rows} store rows kept decoded between passes "
                f"({self.cache.nbytes / 1e6:.0f} MB of the budget), so only the rest is decompressed again"
            )
        return out


def fixed_bytes(k: int, dim: int, sample_rows: int) -> int:
    """Memory a run needs besides the data blocks: centres, sums, far rows, seeding sample."""
    return int(k * dim * (4 * 4 + 8 * 2) + sample_rows * dim * 4 * 3 + 8 * sample_rows * 8)


def block_rows_wanted(k: int) -> int:
    """Rows a streamed block needs; more only takes memory the cache could use.

    At least 24 rows per cluster: with scikit-learn's own centre update, which
    relocated clusters left empty inside a block, half the bench's 3,125-row blocks
    (K = 300) had one and the run took 8 % longer than with 6,250-row blocks.  The
    kernel no longer relocates (featstore/kmeans/sklearn_kernel.py), and 3,125-row
    blocks with the larger cache they leave then ran the same (3.13-3.26 against
    3.18-3.34 s, four runs each).  At least 4,096 rows: one reader pass cost the same
    with 3,125, 6,250 or 25,000-row blocks (0.25 s over 200,000 x 512 rows).
    """
    return max(24 * int(k), 4096)


def stream_plan(
    budget: int,
    view: Any,
    k: int,
    init_sample: int,
    chunk_rows: int,
    *,
    workers: int = MAX_PARALLEL_BLOCKS,
    kernel_temp_blocks: int = 1,
) -> StreamPlan:
    """Rows per streamed block, the largest in-memory sample, how many blocks may be
    assigned at once, and the decoded rows kept between passes, within ``budget``.

    Per row, every run keeps its label, the row index and the view's masks (24 B).
    A block costs at most 8x its float32 size while in flight (the queued block, the
    one being read: stored dtype + float32 copies + normalised parts + concatenation,
    the one being assigned) plus its distances to the K centres; a tenth of the budget
    plus ``_READER_RESERVE`` is left for the store reader's own buffers (zarr's
    asyncio machinery and masks, measured at ~0.3 MB with tracemalloc).  The sample used for
    seeding (and for the restarts) gets at most 30 % of what is left.  Blocks are as
    large as fits, up to :func:`block_rows_wanted`.  None of this depends on the
    number of cores, so neither do the blocks nor the results.

    Blocks assigned at once (``parallel``, at most ``MAX_PARALLEL_BLOCKS``): each extra
    one holds one more float32 block, which the 8x allowance covers up to 5 (the fused
    kernel keeps no per-row temporaries), plus a (K, D) float32 + float64 + float32 set
    of sums, taken from what the blocks leave of the budget.

    The cache (``cache_bytes``) gets what the passes leave: they run after seeding,
    whose sample is gone by then, with the blocks this run really has in flight for
    ``workers`` threads (at most ``parallel``): that many float32 blocks being
    assigned, one queued, one being assembled with its stored parts and its cast
    scratch, plus each worker's sums, its distance sub-block or moments pieces and
    the block-sized temporaries its kernel declares (``kernel_temp_blocks``; none for
    the CPU kernels, whose distances go through bounded sub-blocks).  Measured with
    tracemalloc on the 2-core machine, 200,000 x 512 float16 rows: budgets of 102,
    205 and 307 MB kept 19, 50 and 97 % of the rows, at a peak of 0.83, 0.87 and
    0.87 of the budget.  The cache changes how much is read, never the numbers, so
    it may depend on the cores.
    """
    dim = view.dim
    n_upper = int(view.valid_mask().sum())

    def blocks_and_sample(budget: int) -> tuple[int, int, int, int]:
        """(block rows, sample cap, memory left after both, memory of the passes)."""
        avail = int(budget * 0.9) - _READER_RESERVE - n_upper * 24 - k * dim * 48
        sample_cap = max(0, int(avail * 0.3)) // (dim * 4 * 3 + 64)
        passes_avail = avail  # during the passes the sample is gone
        avail -= min(init_sample, sample_cap) * (dim * 4 * 3 + 64)
        rows = (max(avail, 0) // per_row) // chunk_rows * chunk_rows
        rows = min(rows, max(chunk_rows, block_rows_wanted(k) // chunk_rows * chunk_rows))
        return rows, sample_cap, avail - rows * per_row, passes_avail

    per_row = dim * 4 * 8 + k * 4 * 2
    rows, sample_cap, left, passes_avail = blocks_and_sample(budget)
    if rows < chunk_rows or sample_cap < k:
        need = smallest_budget(lambda b: _fits(blocks_and_sample(b), chunk_rows, k), budget)
        raise InputError(
            f"memory budget {budget} bytes is too small to stream {view.store.path}: one chunk "
            f"({chunk_rows} rows x {dim} features), a sample of at least {k} rows and the "
            f"run's bookkeeping need a budget of at least {need} bytes"
        )
    parallel = min(MAX_PARALLEL_BLOCKS, 1 + left // (k * dim * 16))
    w = max(1, min(int(workers), int(parallel)))
    in_flight_row = dim * 4 * (w + 2) + view.stored_row_bytes + 16  # + a label and a distance
    worker_reserve = max(_SUB_BLOCK_RESERVE, 2 * MOMENT_ROWS * dim * 8)
    in_flight = (
        rows * in_flight_row
        + view.assembly_scratch_bytes(rows)
        + w * (k * dim * 16 + worker_reserve + kernel_temp_blocks * rows * dim * 4)
    )
    # half the budget's reserved tenth too: the reader's own buffers measured ~0.3 MB
    cache_avail = passes_avail + int(budget * 0.05)
    cache = min(max(0, cache_avail - in_flight), n_upper * view.stored_row_bytes)
    return StreamPlan(int(rows), int(sample_cap), int(parallel), int(cache))


def _fits(plan: tuple[int, int, int, int], chunk_rows: int, k: int) -> bool:
    rows, sample_cap, _left, _passes = plan
    return rows >= chunk_rows and sample_cap >= k


def smallest_budget(fits: Callable[[int], bool], above: int) -> int:
    """The smallest budget ``fits`` accepts, searched above ``above`` (which it refuses).

    ``fits`` must be monotone in the budget; the search doubles, then bisects.
    """
    lo, hi = max(0, int(above)), max(1, int(above)) * 2
    while not fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


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
    # in memory: the float32 rows, their ids, fixed buffers, the 65,536-row block being
    # loaded (float32, its stored parts and cast scratch: at most 4x that float32
    # block, which 2 x rows x dim x 8 covers), and scikit-learn's centred copy of X
    resident = n_upper * (view.dim * 4 + 16) * (2 if backend == "sklearn" else 1)
    need = resident + fixed_bytes(k, view.dim, init_sample) + 2 * MEMORY_BLOCK_ROWS * view.dim * 8
    if budget is None or need <= budget:
        rows, X = load_view(view, n_upper)
        return ArraySource(kernel.put(X), kernel, rows=rows)
    plan = stream_plan(
        budget,
        view,
        k,
        init_sample,
        store.chunk_rows,
        workers=int(getattr(kernel, "workers", 1)),
        kernel_temp_blocks=int(getattr(kernel, "host_block_temporaries", 1)),
    )
    return StoreSource(view, kernel, plan, n_hint=n_upper)
