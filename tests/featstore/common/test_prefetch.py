"""The shared read-ahead thread: order, errors and early stop."""

from __future__ import annotations

import threading

import pytest

from featstore.common.prefetch import read_ahead


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_yields_every_item_in_order(depth):
    assert list(read_ahead(iter(range(50)), depth=depth)) == list(range(50))


def test_producer_errors_reach_the_consumer_after_the_good_items():
    def items():
        yield 1
        yield 2
        raise OSError("chunk 3 unreadable")

    seen = []
    with pytest.raises(OSError, match="chunk 3"):
        for x in read_ahead(items(), depth=2):
            seen.append(x)
    assert seen == [1, 2]


def test_stopping_early_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    it = read_ahead(items(), depth=2)
    assert next(it) == 0
    it.close()
    assert not any(t.name == "diccae-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10
