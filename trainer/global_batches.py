"""The batches of a distributed epoch: the single-process batches, read by N ranks.

Every rank replays the single-process shuffle buffer and sampler on row indices
and labels only, so all ranks know each global batch; each shard is read by one
rank (:func:`trainer.data.shard_order`), which computes that batch's rows from it.
A single process uses the same :class:`GlobalBatch` (:meth:`GlobalBatch.whole`),
so the training loop has one shape of batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from trainer.data import BatchPicker, ShuffleBuffer, prefetch_rows, shard_order


def shard_index_of_rows(source, rows: np.ndarray) -> np.ndarray:
    """Index into ``source.ranges`` of the shard holding each row."""
    starts = np.fromiter((s for s, _ in source.ranges), np.int64, len(source.ranges))
    return np.searchsorted(starts, rows, side="right") - 1


class RowCache:
    """Features of this rank's rows that the global schedule has not consumed yet.

    Slots are recycled; ``slot_of_row`` (one int32 per store row) finds a row's slot
    without Python dictionaries, so adding a shard or taking a batch is vectorised.
    """

    def __init__(self, capacity: int, n_rows: int, audio_dim: int, video_dim: int):
        self.audio = np.empty((capacity, audio_dim), np.float32)
        self.video = np.empty((capacity, video_dim), np.float32)
        self.slot_of_row = np.full(n_rows, -1, np.int32)
        self.free = np.arange(capacity - 1, -1, -1, dtype=np.int32)  # a stack of free slots
        self.n_free = capacity

    def add(self, rows: np.ndarray, audio: np.ndarray, video: np.ndarray) -> None:
        k = len(rows)
        if k > self.n_free:
            raise RuntimeError("row cache overflow")
        slots = self.free[self.n_free - k : self.n_free]
        self.n_free -= k
        self.audio[slots], self.video[slots] = audio, video
        self.slot_of_row[rows] = slots

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slots = self.slot_of_row[rows]
        if (slots < 0).any():
            raise RuntimeError(
                f"row {int(rows[np.argmin(slots)])} requested before its shard was read"
            )
        out = self.audio[slots].copy(), self.video[slots].copy()
        self.slot_of_row[rows] = -1
        self.free[self.n_free : self.n_free + len(slots)] = slots
        self.n_free += len(slots)
        return out


@dataclass
class GlobalBatch:
    """One step of a distributed epoch: the global batch and this rank's part of it.

    ``rows``/``labels`` are the whole batch, in the order a single-process run
    would see it; ``owner[i]`` is the rank that holds row i's features;
    ``local`` are the positions (ascending) whose features this rank holds in
    ``audio``/``video``.
    """

    rows: np.ndarray
    labels: np.ndarray
    owner: np.ndarray
    local: np.ndarray
    audio: np.ndarray
    video: np.ndarray

    @classmethod
    def whole(
        cls, rows: np.ndarray, labels: np.ndarray, audio: np.ndarray, video: np.ndarray
    ) -> GlobalBatch:
        """A batch that one process holds entirely (the single-process run)."""
        n = len(rows)
        return cls(rows, labels, np.zeros(n, np.int64), np.arange(n), audio, video)


def iter_global_batches(
    source,
    mask: np.ndarray,
    labels: np.ndarray | None,
    picker: BatchPicker,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int,
    epoch: int,
    buffer_rows: int,
    prefetch: int = 4,
) -> Iterator[GlobalBatch]:
    """The single-process epoch of :func:`iter_batches`, with the reading split by rank.

    Every rank replays the shuffle buffer and the sampler on row indices and
    labels only (no features: cheap), so all ranks agree on each global batch
    and it is exactly the batch one process would draw with the same seed.  Rank
    ``r`` reads only its shards (:func:`shard_order` with ``rank=r``) and keeps
    their rows in a :class:`RowCache` until the schedule consumes them, so each
    shard is read by one rank once per epoch.
    """
    rng = np.random.default_rng([seed, epoch, 0, 15485863])  # the single-process stream
    n_shards = len(source.ranges)
    order = shard_order(n_shards, seed=seed, epoch=epoch)
    shard_owner = np.empty(n_shards, np.int64)
    for r in range(world_size):
        shard_owner[
            shard_order(n_shards, seed=seed, epoch=epoch, rank=r, world_size=world_size)
        ] = r
    mine = [int(i) for i in order if shard_owner[i] == rank]
    capacity = max(buffer_rows, picker.batch_size) + source.shard_rows
    threshold = max(buffer_rows, picker.batch_size)
    buf = ShuffleBuffer(capacity, 0, 0)  # rows and labels only
    cache = RowCache(capacity, source.n_rows, source.audio_dim, source.video_dim)
    reader = prefetch_rows(source, mine, mask, depth=prefetch)

    def batch(idx: np.ndarray) -> GlobalBatch:
        rows, y, _, _ = buf.take(idx)
        owner = shard_owner[shard_index_of_rows(source, rows)]
        local = np.flatnonzero(owner == rank)
        a, v = cache.take(rows[local])
        return GlobalBatch(rows, y, owner, local, a, v)

    try:
        for i in order:
            s, e = source.ranges[i]
            rows = np.flatnonzero(mask[s:e]) + s
            if not len(rows):
                continue  # prefetch_rows skips such shards as well
            if shard_owner[i] == rank:
                got, a, v = next(reader)
                if not np.array_equal(got, rows):
                    raise RuntimeError(f"rank {rank}: shard {i} read out of schedule")
                cache.add(got, a, v)
            y = labels[rows] if labels is not None else np.full(len(rows), -1, np.int64)
            none = np.empty((len(rows), 0), np.float32)
            buf.add(rows, y, none, none)
            while buf.n >= threshold:
                yield batch(picker.pick(buf, rng, draining=False))
        while buf.n >= 2:
            yield batch(picker.pick(buf, rng, draining=True))
    finally:
        close = getattr(reader, "close", None)  # a generator: stop its reading thread
        if close is not None:
            close()
