"""Threads for CPU block work: one worker per core, one BLAS/torch thread per worker.

Shared by the stages that fold row blocks into partial sums on worker threads
(the confusion engine, the audit).  NumPy's matmul and linear algebra release the GIL
(SciPy's BLAS wrappers do not), so such workers scale with the cores.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


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
