"""torch's CPU kernels on the calling thread only, for code that runs in worker threads.

The store reader (read-ahead threads) and k-means' block workers call small torch
kernels (casts, ``index_add_``).  An OpenMP parallel region started from a thread
other than the main one cost ~8 ms per 6,250 x 256 cast here (200 casts: 1.74 s with
a 2-thread team, 0.03 s serial), and its team competed with the callers' own
BLAS/OpenMP threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def optional_torch() -> Any:
    """torch if it can be imported (it is a dependency; callers keep a NumPy fallback)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed with diccae
        return None
    return torch


@functools.cache
def _torch_openmp(torch: Any) -> Any:
    """The OpenMP runtime torch's CPU kernels use (Linux wheels bundle libgomp), or None."""
    path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
    try:
        return ctypes.CDLL(str(path)) if path.is_file() else None
    except OSError:  # pragma: no cover - another platform's build
        return None


@contextlib.contextmanager
def torch_serial(torch: Any) -> Iterator[None]:
    """Run torch's CPU kernels in the calling thread only, for this thread, for a while.

    ``omp_set_num_threads`` changes only the calling thread's setting (OpenMP's
    nthreads-var is per thread), and it is put back on exit, so other threads and
    later torch work keep their thread count.
    """
    omp = _torch_openmp(torch) if torch is not None else None
    if omp is None:
        yield
        return
    torch.get_num_threads()  # torch's per-thread lazy init first: it would reset ours
    before = int(omp.omp_get_max_threads())
    omp.omp_set_num_threads(1)
    try:
        yield
    finally:
        omp.omp_set_num_threads(before)
