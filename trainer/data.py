"""Feeding the trainer from store shards: prefetch, shuffle buffer, samplers.

The store is never loaded whole.  An epoch visits the shards (chunk-aligned row
ranges) in a seeded random order; a background thread reads ahead
``prefetch_shards`` shards so decompression overlaps the optimiser step; rows go
into a fixed-size shuffle buffer and batches are drawn from it.  Each usable row
is used exactly once per epoch, so a store larger than memory trains at the
speed of one sequential read.

Samplers draw from the buffer:

* ``balanced``: P classes x K clips, classes drawn in proportion to their rows in
  the buffer (the buffer drains evenly), so every batch has same-class pairs;
* ``confusion``: the same, but classes come in pairs drawn in proportion to
  M-hat (hard pairs land in the same batch, where the confusion loss can push
  them apart);
* ``shuffle``: plain shuffled rows (the InfoNCE-only pretraining needs no labels).

Everything random derives from ``(seed, epoch, rank)`` so a resumed run replays
the same batches; :func:`shard_order` is the one place that splits work by rank.
Which rows a phase trains on is :mod:`trainer.rows`; the batches of a
distributed run are :mod:`trainer.global_batches`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from featstore.common.prefetch import read_ahead
from featstore.store.core import FeatureStore
from featstore.store.features import check_finite


# ------------------------------------------------------------------ sources
class StoreSource:
    """Reads audio/video shards of a store (the only I/O the trainer does)."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self.ranges = store.shard_ranges()
        self.audio_dim = int(store.array("audio").shape[1])
        self.video_dim = int(store.array("video").shape[1])
        self.n_rows = store.n_rows
        self.shard_rows = store.chunk_rows

    def iter_shards(
        self, order: Sequence[int]
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        for shard in self.store.iter_shards(("audio", "video"), order=list(order)):
            yield shard.start, shard.stop, shard.data["audio"], shard.data["video"]


class ArraySource:
    """The same interface over in-memory arrays (benchmarks, tests)."""

    def __init__(self, audio: np.ndarray, video: np.ndarray, shard_rows: int = 1024):
        self.audio, self.video = audio, video
        self.n_rows = audio.shape[0]
        self.shard_rows = shard_rows
        self.ranges = [
            (s, min(s + shard_rows, self.n_rows)) for s in range(0, self.n_rows, shard_rows)
        ]
        self.audio_dim, self.video_dim = audio.shape[1], video.shape[1]

    def iter_shards(
        self, order: Sequence[int]
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        for i in order:
            s, e = self.ranges[i]
            yield s, e, self.audio[s:e], self.video[s:e]


#: stores whose audio + video fit in this many bytes (as float32) are read once per phase, not once per pass
IN_MEMORY_BYTES = 256 << 20


def cached_source(source: StoreSource, limit: int = IN_MEMORY_BYTES):
    """An :class:`ArraySource` copy of a small store (same shard ranges, so the same batches), else ``source``.

    A small data set is passed over many times (the step budget); re-reading and
    decompressing its shards on every pass would cost more than the steps.
    """
    if source.n_rows * (source.audio_dim + source.video_dim) * 4 > limit:
        return source
    audio = np.zeros((source.n_rows, source.audio_dim), np.float32)
    video = np.zeros((source.n_rows, source.video_dim), np.float32)
    for s, e, a, v in source.iter_shards(range(len(source.ranges))):
        audio[s:e], video[s:e] = a, v
    cached = ArraySource(audio, video, shard_rows=source.shard_rows)
    cached.ranges = list(source.ranges)
    return cached


def shard_order(
    n_shards: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """This rank's shards for one epoch: a seeded permutation split by rank."""
    order = np.random.default_rng([seed, epoch, 104729]).permutation(n_shards)
    return order[rank::world_size]


def prefetch_rows(
    source, order: Sequence[int] | np.ndarray, mask: np.ndarray, *, depth: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(rows, audio, video)`` of the masked rows of each shard, read ahead in a thread.

    Shards without a masked row are skipped without being read.  The float16 ->
    float32 cast happens in the reading thread, off the training thread (NumPy
    releases the GIL while casting, so it overlaps the model step).
    """
    order = [i for i in order if mask[source.ranges[i][0] : source.ranges[i][1]].any()]

    what = f"the store {getattr(getattr(source, 'store', None), 'path', '')}".rstrip()

    def shards():
        for s, e, a, v in source.iter_shards(order):
            keep = np.flatnonzero(mask[s:e])
            rows, a32, v32 = keep + s, a[keep].astype(np.float32), v[keep].astype(np.float32)
            check_finite(
                rows, a32, f"audio of {what}"
            )  # name the rows, not "loss became non-finite"
            check_finite(rows, v32, f"video of {what}")
            yield rows, a32, v32

    return read_ahead(shards(), depth=depth)


# ------------------------------------------------------------- shuffle buffer
class ShuffleBuffer:
    """Fixed-capacity pool of rows; removal swaps the tail into the holes (O(batch))."""

    def __init__(self, capacity: int, audio_dim: int, video_dim: int, dtype=np.float32):
        self.capacity = capacity
        self.rows = np.empty(capacity, np.int64)
        self.y = np.empty(capacity, np.int64)
        self.audio = np.empty((capacity, audio_dim), dtype)
        self.video = np.empty((capacity, video_dim), dtype)
        self.n = 0

    def add(self, rows: np.ndarray, y: np.ndarray, audio: np.ndarray, video: np.ndarray) -> None:
        k = len(rows)
        if self.n + k > self.capacity:
            raise RuntimeError("shuffle buffer overflow")
        sl = slice(self.n, self.n + k)
        self.rows[sl], self.y[sl], self.audio[sl], self.video[sl] = rows, y, audio, video
        self.n += k

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = (
            self.rows[idx].copy(),
            self.y[idx].copy(),
            self.audio[idx].copy(),
            self.video[idx].copy(),
        )
        k = len(idx)
        new_n = self.n - k
        taken = np.zeros(self.n, bool)
        taken[idx] = True
        holes = np.flatnonzero(taken[:new_n])
        fillers = new_n + np.flatnonzero(~taken[new_n:])
        if len(holes):
            for arr in (self.rows, self.y, self.audio, self.video):
                arr[holes] = arr[fillers]
        self.n = new_n
        return out


# ------------------------------------------------------------------- samplers
def auto_clips_per_class(batch_size: int, num_classes: int) -> int:
    """K of a P x K batch that fills ``batch_size`` rows from ``num_classes`` classes (at least 4)."""
    return int(min(batch_size, max(4, -(-batch_size // max(1, num_classes)))))


class BatchPicker:
    """Chooses which buffer positions form the next batch (``clips_per_class`` 0 = auto)."""

    def __init__(
        self,
        kind: str,
        *,
        batch_size: int,
        clips_per_class: int,
        num_classes: int,
        pair_weights: np.ndarray | None = None,
    ):
        self.kind = kind
        self.batch_size = batch_size
        if clips_per_class < 1:
            clips_per_class = auto_clips_per_class(batch_size, num_classes)
        self.k = clips_per_class
        self.p = max(1, batch_size // clips_per_class)
        self.num_classes = max(1, num_classes)
        self.pair_weights = pair_weights

    def pick(self, buf: ShuffleBuffer, rng: np.random.Generator, *, draining: bool) -> np.ndarray:
        n = buf.n
        if self.kind == "shuffle" or self.num_classes <= 1:
            return rng.choice(n, size=min(self.batch_size, n), replace=False)
        y = buf.y[:n]
        counts = np.bincount(y, minlength=self.num_classes).astype(np.float64)
        need = 1 if draining else self.k
        eligible = counts >= need
        if not eligible.any():
            eligible = counts > 0
        classes = self._classes(counts * eligible, rng)
        picked = []
        room = self.batch_size
        for c in classes:
            members = np.flatnonzero(y == c)
            take = min(self.k, len(members), room)
            picked.append(rng.choice(members, size=take, replace=False))
            room -= take
            if room <= 0:
                break
        return np.concatenate(picked)

    def _classes(self, weights: np.ndarray, rng: np.random.Generator) -> list[int]:
        available = int((weights > 0).sum())
        p = min(self.p, available)
        if self.kind == "confusion" and self.pair_weights is not None and p >= 2:
            return self._confusion_classes(weights, p, rng)
        return rng.choice(len(weights), size=p, replace=False, p=weights / weights.sum()).tolist()

    def _confusion_classes(
        self, weights: np.ndarray, p: int, rng: np.random.Generator
    ) -> list[int]:
        """Pairs (i, j) drawn with probability ~ M-hat[i, j] among present classes."""
        present = weights > 0
        chosen: list[int] = []
        m = np.asarray(self.pair_weights, np.float64)
        while len(chosen) + 1 < p:
            avail = present.copy()
            avail[chosen] = False
            if avail.sum() < 2:
                break
            w = (m + 1e-3) * np.outer(avail, avail)
            np.fill_diagonal(w, 0.0)
            flat = w.ravel() / w.sum()
            i, j = divmod(int(rng.choice(flat.size, p=flat)), m.shape[0])
            chosen += [i, j]
        while len(chosen) < p:
            avail = weights.copy()
            avail[chosen] = 0
            if avail.sum() <= 0:
                break
            chosen.append(int(rng.choice(len(avail), p=avail / avail.sum())))
        return chosen


def iter_batches(
    source,
    mask: np.ndarray,
    labels: np.ndarray | None,
    picker: BatchPicker,
    *,
    seed: int,
    epoch: int,
    buffer_rows: int,
    prefetch: int = 4,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """One epoch of ``(rows, labels, audio, video)`` batches (float32 NumPy)."""
    rng = np.random.default_rng([seed, epoch, rank, 15485863])
    order = shard_order(
        len(source.ranges), seed=seed, epoch=epoch, rank=rank, world_size=world_size
    )
    capacity = max(buffer_rows, picker.batch_size) + source.shard_rows
    buf = ShuffleBuffer(capacity, source.audio_dim, source.video_dim)
    threshold = max(buffer_rows, picker.batch_size)
    for rows, a, v in prefetch_rows(source, order, mask, depth=prefetch):
        y = labels[rows] if labels is not None else np.full(len(rows), -1, np.int64)
        buf.add(rows, y, a, v)
        while buf.n >= threshold:
            yield buf.take(picker.pick(buf, rng, draining=False))
    while buf.n >= 2:
        yield buf.take(picker.pick(buf, rng, draining=True))


def iter_rows(
    source, mask: np.ndarray, *, batch: int, prefetch: int = 4
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Masked rows in store order, in blocks of at most ``batch`` (for inference)."""
    for rows, a, v in prefetch_rows(source, range(len(source.ranges)), mask, depth=prefetch):
        for s in range(0, len(rows), batch):
            yield rows[s : s + batch], a[s : s + batch], v[s : s + batch]
