"""A store's features as blocks on Dask workers, and the Lloyd kernel that runs there.

Each block (whole store chunks) is turned into the chosen features on its worker
(``audio+video``: each modality L2-normalised, then concatenated; invalid rows
dropped, exactly as :class:`featstore.store.features.FeatureView`), kept in the
workers' memory (``persist=True``; ``False`` re-reads the store every pass, for
data larger than the cluster's memory).  :class:`DaskSource` and :class:`DaskKernel`
plug these blocks into the one restarts driver (:func:`featstore.kmeans.restarts.fit_restarts`):
every pass broadcasts the centres, maps the block kernel (the same faiss/NumPy/torch
kernels as on one machine) over the blocks, and the client adds the partial results.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featstore.kmeans.backends import make_kernel
from featstore.kmeans.kernels import BlockStats
from featstore.kmeans.sources import MEMORY_BLOCK_ROWS, DataScan, moments_scan, sample_positions
from featstore.store.core import MODALITIES, FeatureStore
from featstore.store.features import COMBINED, FeatureView, assemble_block


# ============================================================== worker side
def _block_features(
    parts: list[np.ndarray], keep: np.ndarray, start: int, combined: bool, extra: bool, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Worker side: the same block assembly as FeatureView.iter_blocks (one definition)."""
    return assemble_block(parts, keep, start, combined=combined, extra=extra, what=what)


def _block_rows(block: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return block[0]


def _block_moments(block: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x64 = block[1].astype(np.float64)
    return x64.sum(axis=0), (x64 * x64).sum(axis=0)


def _block_take(block: tuple[np.ndarray, np.ndarray], positions: np.ndarray) -> np.ndarray:
    return block[1][positions]


_KERNELS: dict[str, Any] = {}


def _kernel(name: str) -> Any:
    if name not in _KERNELS:  # one per worker process (faiss/torch setup is not free)
        _KERNELS[name] = make_kernel(name, "cpu")
    return _KERNELS[name]


def _block_step(
    block: tuple[np.ndarray, np.ndarray], centers: np.ndarray, kernel: str, k: int, n_far: int
) -> tuple[np.ndarray, BlockStats]:
    """Map step of one Lloyd iteration: labels and the block's partial sums/counts/inertia."""
    kern = _kernel(kernel)
    return kern.step(kern.prepare(centers), kern.put(block[1]), k, n_far)


def _block_assign(
    block: tuple[np.ndarray, np.ndarray], centers: np.ndarray, kernel: str
) -> tuple[np.ndarray, float]:
    kern = _kernel(kernel)
    return kern.assign(kern.prepare(centers), kern.put(block[1]))


# ============================================================== client side
class DaskBlocks:
    """A store's feature choice as blocks on the workers (whole chunks, valid rows only)."""

    def __init__(
        self,
        client: Any,
        store: FeatureStore,
        features: str,
        *,
        rows_per_block: int | None = None,
        persist: bool = True,
    ):
        import dask.array as da
        from dask import delayed

        self.client = client
        self.persist = persist
        view = FeatureView(store, features)  # validates the choice with the usual message
        parts = list(MODALITIES) if features == COMBINED else [features]
        self.dim = view.dim
        mask = view.valid_mask()
        c = store.chunk_rows
        rpb = max(c, (rows_per_block or MEMORY_BLOCK_ROWS) // c * c)
        url = str(Path(store.path).resolve())
        arrays = [da.from_zarr(url, component=p).rechunk({0: rpb}) for p in parts]
        blocks_of = [a.to_delayed().ravel() for a in arrays]
        extra = parts[0] not in MODALITIES
        pieces = []
        for i, start in enumerate(range(0, store.n_rows, rpb)):
            keep = np.flatnonzero(mask[start : start + rpb])
            if keep.size == 0:
                continue
            pieces.append(
                delayed(_block_features, pure=True)(
                    [b[i] for b in blocks_of],
                    keep,
                    start,
                    features == COMBINED,
                    extra,
                    f"{store.path} ({features})",
                )
            )
        self.blocks = client.compute(pieces) if persist else pieces
        rows = client.gather(self.map_blocks(_block_rows)) if self.blocks else []
        self.rows = np.concatenate(rows) if rows else np.empty(0, np.int64)
        sizes = [r.shape[0] for r in rows]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n = int(self.starts[-1])

    def map_blocks(self, fn: Any, *args: Any) -> list:
        """``fn(block, *args)`` for every block, as futures (args may be futures)."""
        if self.persist:
            return self.client.map(
                fn, self.blocks, *[[a] * len(self.blocks) for a in args], pure=False
            )
        from dask import delayed

        return self.client.compute([delayed(fn, pure=False)(b, *args) for b in self.blocks])

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        s1 = np.zeros(self.dim, np.float64)
        s2 = np.zeros(self.dim, np.float64)
        for a, b in self.client.gather(self.map_blocks(_block_moments)):
            s1 += a
            s2 += b
        return s1, s2

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted feature positions (0..n-1), gathered to the client in order."""
        out = np.empty((positions.size, self.dim), np.float32)
        which = np.searchsorted(self.starts, positions, side="right") - 1
        futs, where = [], []
        for b in np.unique(which):
            sel = np.flatnonzero(which == b)
            futs.append(self._map_one(int(b), _block_take, positions[sel] - self.starts[b]))
            where.append(sel)
        for sel, rows in zip(where, self.client.gather(futs), strict=True):
            out[sel] = rows
        return out

    def _map_one(self, i: int, fn: Any, *args: Any) -> Any:
        if self.persist:
            return self.client.submit(fn, self.blocks[i], *args, pure=False)
        from dask import delayed

        return self.client.compute(delayed(fn, pure=False)(self.blocks[i], *args))

    def release(self) -> None:
        if self.persist:
            self.client.cancel(self.blocks)
        self.blocks = []


class DaskSource:
    """The driver's row source: block i starts at feature position ``starts[i]``."""

    sample_cap: int | None = None

    def __init__(self, blocks: DaskBlocks, n_workers: int):
        self.b = blocks
        self.n = self.n_hint = blocks.n
        self.dim = blocks.dim
        self.rows: np.ndarray | None = blocks.rows
        self.streamed = not blocks.persist
        self.n_workers = n_workers

    def blocks(self) -> Iterator[tuple[int, Any]]:
        for i, s in enumerate(self.b.starts[:-1]):
            yield int(s), i

    def scan(self, sample_size: int, rs: np.random.RandomState) -> DataScan:
        """The same sample as a scan block by block (same keys), fetched by position."""
        positions = sample_positions(self.n, sample_size, rs)
        sample = self.b.take(positions)
        s1, s2 = self.b.moments()
        return moments_scan(self.n, s1, s2, sample, positions)

    def describe(self, backend: str, device: str) -> str:
        where = (
            "re-read from the store every pass" if self.streamed else "kept in the workers' memory"
        )
        return (
            f"{backend} block kernel on {self.n_workers} Dask worker(s), map-reduce Lloyd "
            f"(workers assign their blocks, the client adds partial sums), blocks {where}"
        )


class _Pass:
    """One pass over the blocks with fixed centres; submitted on first use."""

    def __init__(self, centers: np.ndarray):
        self.centers = centers
        self.futures: list | None = None


class DaskKernel:
    """The driver's Lloyd kernel for :class:`DaskSource`: block work runs on the workers.

    ``prepare`` only records the centres; the first ``step``/``assign`` of a pass
    broadcasts them and submits the map over all blocks at once, so the blocks are
    processed in parallel while the Lloyd loop consumes their results in order.
    """

    name = "dask"

    def __init__(self, blocks: DaskBlocks, block_kernel: str):
        self.b = blocks
        self.block_kernel = block_kernel

    def prepare(self, centers: np.ndarray) -> _Pass:
        return _Pass(np.ascontiguousarray(centers, np.float32))

    def _futures(self, p: _Pass, fn: Any, *args: Any) -> list:
        if p.futures is None:
            c = self.b.client.scatter(p.centers, broadcast=True, hash=False)
            p.futures = self.b.map_blocks(fn, c, self.block_kernel, *args)
        return p.futures

    def step(self, p: _Pass, i: int, k: int, n_far: int) -> tuple[np.ndarray, BlockStats]:
        return self._futures(p, _block_step, k, n_far)[i].result()

    def assign(self, p: _Pass, i: int) -> tuple[np.ndarray, float]:
        return self._futures(p, _block_assign)[i].result()
