"""Decoded parts kept between passes: what is kept, and that a view read through the
cache gives the same blocks while reading only what was not kept."""

from __future__ import annotations

import numpy as np
from halfstore import make_halves_store

from featstore.store.features import FeatureView
from featstore.store.partcache import PartCache


def make_store(path, n=1000, d=12):
    x = np.random.default_rng(3).normal(size=(n, d)).astype(np.float32)
    return make_halves_store(path, x)


def test_keeps_the_first_blocks_that_fit_then_stops_filling():
    cache = PartCache(250)
    a, b, c = np.zeros(100, np.uint8), np.zeros(100, np.uint8), np.zeros(10, np.uint8)
    cache.offer(0, 10, [a])
    cache.offer(10, 20, [b])
    cache.offer(20, 30, [np.zeros(100, np.uint8)])  # 300 > 250: closes the cache
    cache.offer(30, 31, [c])  # would fit, but a later block must not be kept: every
    assert len(cache) == 2  # pass has to find the same blocks there
    assert cache.get(0, 10)[0] is a and cache.get(10, 20)[0] is b
    assert cache.get(20, 30) is None and cache.get(30, 31) is None
    assert (cache.nbytes, cache.rows) == (200, 20)
    assert len(PartCache(0)) == 0 and PartCache(-5).quota_bytes == 0


def test_a_view_read_through_the_cache_gives_the_same_blocks_and_reads_only_the_rest(tmp_path):
    s = make_store(tmp_path / "s")
    view = FeatureView(s, "audio+video")
    plain = list(view.iter_blocks(200))
    reads: list[tuple[str, int]] = []
    real = s.read

    def counting_read(name, rows):
        reads.append((name, rows.start))
        return real(name, rows)

    s.read = counting_read  # type: ignore[method-assign]
    cache = PartCache(3 * 200 * view.stored_row_bytes)  # three of the five blocks
    for _ in range(3):
        got = list(view.iter_blocks(200, cache=cache))
        assert len(got) == len(plain)
        for (r0, x0), (r1, x1) in zip(plain, got, strict=True):
            np.testing.assert_array_equal(r0, r1)
            np.testing.assert_array_equal(x0, x1)  # the same float32 numbers, bit for bit
    assert cache.rows == 600 and view.stored_row_bytes == 12 * 2
    starts = [start for _name, start in reads]
    # the first pass reads all five blocks (both parts); later ones only the last two
    assert starts == [0, 0, 200, 200, 400, 400, 600, 600, 800, 800] + [600, 600, 800, 800] * 2
