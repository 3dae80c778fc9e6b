"""Shard streaming, the shuffle buffer and the samplers (row selection: test_rows.py)."""

from __future__ import annotations

import numpy as np
import pytest
from trainer_synth import synthetic_features

from featstore.store.core import FeatureStore
from trainer.data import (
    ArraySource,
    BatchPicker,
    StoreSource,
    iter_batches,
    iter_rows,
    prefetch_rows,
    shard_order,
)


def _array_source(n_per_class=50, shard_rows=16):
    a, v, y = synthetic_features(n_per_class)
    return ArraySource(a, v, shard_rows=shard_rows), y.astype(np.int64)


def _epoch(source, y, kind, *, seed=0, epoch=0, batch=16, k=4, pair_weights=None, buffer_rows=64):
    picker = BatchPicker(
        kind, batch_size=batch, clips_per_class=k, num_classes=4, pair_weights=pair_weights
    )
    mask = np.ones(source.n_rows, bool)
    return list(
        iter_batches(
            source, mask, y, picker, seed=seed, epoch=epoch, buffer_rows=buffer_rows, prefetch=2
        )
    )


@pytest.mark.parametrize("kind", ["balanced", "confusion", "shuffle"])
def test_every_row_once_per_epoch_with_matching_data(kind):
    source, y = _array_source()
    batches = _epoch(source, y, kind, pair_weights=np.ones((4, 4)))
    rows = np.concatenate([b[0] for b in batches])
    assert sorted(rows.tolist()) == list(range(source.n_rows))
    for r, yy, a, v in batches:
        np.testing.assert_array_equal(yy, y[r])
        np.testing.assert_array_equal(a, source.audio[r])
        np.testing.assert_array_equal(v, source.video[r])
    assert all(len(b[0]) == 16 for b in batches[:-3])


def test_balanced_batches_are_p_classes_by_k_clips():
    source, y = _array_source()
    batches = _epoch(source, y, "balanced")
    full = [b for b in batches[: len(batches) // 2]]  # before the buffer drains
    for _, yy, _, _ in full:
        counts = np.bincount(yy, minlength=4)
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4, 4]


def test_confusion_sampler_puts_hard_pairs_together():
    source, y = _array_source(n_per_class=80)
    m = np.full((4, 4), 0.01)
    m[0, 1] = m[1, 0] = 2.0  # classes 0 and 1 are the confusable pair

    def together(kind):
        batches = _epoch(source, y, kind, batch=8, k=4, pair_weights=m, buffer_rows=128)[:20]
        return np.mean([{0, 1} <= set(b[1].tolist()) for b in batches])

    assert together("confusion") > together("balanced") + 0.2
    assert together("confusion") > 0.6


def test_order_is_seeded_and_changes_per_epoch():
    source, y = _array_source()
    first = np.concatenate([b[0] for b in _epoch(source, y, "shuffle", seed=3, epoch=0)])
    again = np.concatenate([b[0] for b in _epoch(source, y, "shuffle", seed=3, epoch=0)])
    other = np.concatenate([b[0] for b in _epoch(source, y, "shuffle", seed=3, epoch=1)])
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_shard_order_splits_by_rank_without_overlap():
    parts = [shard_order(23, seed=1, epoch=2, rank=r, world_size=3) for r in range(3)]
    allv = np.concatenate(parts)
    assert sorted(allv.tolist()) == list(range(23))


def test_store_source_streams_same_rows_as_memory(small_store):
    src = StoreSource(small_store)
    mask = small_store.valid_rows()
    rows, a = [], []
    for r, aa, _ in iter_rows(src, mask, batch=7):
        rows.append(r)
        a.append(aa)
    rows = np.concatenate(rows)
    np.testing.assert_array_equal(rows, np.flatnonzero(mask))
    np.testing.assert_array_equal(np.concatenate(a), small_store.read("audio", rows))


def test_prefetch_surfaces_reader_errors():
    class Broken(ArraySource):
        def iter_shards(self, order):
            yield from super().iter_shards(order[:1])
            raise OSError("disk gone")

    src = Broken(np.zeros((40, 2), np.float32), np.zeros((40, 2), np.float32), shard_rows=10)
    with pytest.raises(OSError, match="disk gone"):
        list(prefetch_rows(src, range(4), np.ones(40, bool), depth=2))


def test_store_reopened_read_only_is_enough_for_streaming(small_store):
    ro = FeatureStore.open(small_store.path)
    src = StoreSource(ro)
    picker = BatchPicker("balanced", batch_size=8, clips_per_class=2, num_classes=4)
    y = ro.labels.astype(np.int64)
    n = sum(
        len(b[0])
        for b in iter_batches(src, ro.valid_rows(), y, picker, seed=0, epoch=0, buffer_rows=64)
    )
    assert n == ro.valid_rows().sum()
