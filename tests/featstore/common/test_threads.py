"""featstore.common.threads: ordered results from worker threads, the same bits as one worker."""

from __future__ import annotations

import threading
import time

import pytest

from featstore.common import ordered_map, run_all


def _tracked(active: list[int], seen: list[int], lock: threading.Lock, seconds: float) -> None:
    with lock:
        active[0] += 1
        seen[0] = max(seen[0], active[0])
    time.sleep(seconds)
    with lock:
        active[0] -= 1


def test_ordered_map_yields_in_order_and_runs_items_at_once():
    active, seen, lock = [0], [0], threading.Lock()

    def work(i):
        _tracked(active, seen, lock, 0.02 if i % 2 == 0 else 0.001)  # later items finish first
        return i * 10

    assert list(ordered_map(range(8), work, 2)) == [i * 10 for i in range(8)]
    assert seen[0] == 2
    assert list(ordered_map(range(8), work, 1)) == [i * 10 for i in range(8)]
    with pytest.raises(ZeroDivisionError):
        list(ordered_map(range(4), lambda i: 1 / (i - 2), 2))


def test_ordered_map_keeps_at_most_ahead_items_in_flight():
    started = []

    def work(i):
        started.append(i)
        return i

    gen = ordered_map(range(100), work, 2, ahead=3)
    assert next(gen) == 0
    time.sleep(0.05)
    assert len(started) <= 4  # three submitted ahead of the one consumed, plus that one
    gen.close()


def test_run_all_runs_every_task_and_raises_their_errors():
    done = []
    lock = threading.Lock()

    def task(i):
        def go():
            with lock:
                done.append(i)

        return go

    run_all([task(i) for i in range(20)], 2)
    assert sorted(done) == list(range(20))

    def bad():
        raise ValueError("task failed")

    with pytest.raises(ValueError, match="task failed"):
        run_all([task(99), bad], 2)
