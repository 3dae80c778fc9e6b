"""Threads for CPU block work: one worker per core, one BLAS/torch thread per worker.

Shared by the stages that fold row blocks into partial sums on worker threads
(the confusion engine, the audit).  NumPy's matmul and linear algebra release the GIL
(SciPy's BLAS wrappers do not), so such workers scale with the cores.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def blas_threads() -> int:
    """Threads the BLAS would use now (respects an enclosing ``threadpoolctl`` limit)."""
    try:
        from threadpoolctl import threadpool_info

        counts = [
            int(i.get("num_threads") or 1) for i in threadpool_info() if i.get("user_api") == "blas"
        ]
    except Exception:  # threadpoolctl missing or a library it cannot query
        counts = []
    return max(counts, default=1)


def default_workers(xp) -> int:
    """Block workers: one per core the BLAS may use (1 on CuPy: one stream serialises anyway)."""
    if getattr(xp, "__name__", "") == "cupy":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, blas_threads()))


@contextlib.contextmanager
def one_thread_per_worker(workers: int) -> Iterator[None]:
    """With several block workers, each BLAS/torch call runs on one thread.

    Why: a multithreaded BLAS call synchronises its threads at every panel; with other
    workers (and other processes) competing for the cores, a descheduled thread stalls
    the others (measured: a 2-thread ``ssyrk`` took 30x longer on a busy 2-core VM).
    Whole blocks per core do not synchronise until the end of the pass.  torch matters
    because the store's float16 -> float32 cast runs through it (``featstore.store.features``).
    """
    if workers <= 1:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=1, user_api="blas"):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def ordered_map(
    items: Iterable[T],
    fn: Callable[[T], R],
    workers: int,
    *,
    ahead: int | None = None,
    name: str = "diccae-worker",
) -> Iterator[R]:
    """``fn(item)`` for every item on ``workers`` threads, yielded in the items' order.

    Items are submitted as they arrive, at most ``ahead`` (default ``workers``) beyond the
    one being consumed, which bounds the memory of large blocks in flight; a core that
    another thread holds for a moment slows one item, not a whole static team.  Results
    come back in order, so sums folded from them are added in the same order whatever
    the timing: the same bits as one worker.  ``fn`` must release the GIL to gain
    (NumPy's BLAS does, scikit-learn's Cython loops with ``n_threads=1`` do).
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    limit = max(workers, ahead or workers)
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # a consumer that stops early (or a task that raised) cancels the rest
            for fut in pending:
                fut.cancel()


def run_all(
    tasks: Iterable[Callable[[], Any]], workers: int, *, name: str = "diccae-worker"
) -> None:
    """Call every task on ``workers`` threads and wait for all; a task's exception is raised here."""
    for _ in ordered_map(tasks, _call, workers, ahead=1 << 30, name=name):
        pass


def _call(task: Callable[[], Any]) -> Any:
    return task()
