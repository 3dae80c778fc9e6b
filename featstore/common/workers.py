"""Worker processes that die with their parent.

A ``ProcessPoolExecutor`` worker waits on its call queue forever: when the parent is
killed (SIGKILL, SIGTERM, OOM killer) nobody tells it, and every killed ``extract``
left two decoders and a resource tracker running.  Each worker therefore asks the
kernel for a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``) and,
where that is unavailable or the parent died before the call, a watchdog thread
notices the parent is gone and exits.  Once the workers are gone, the resource
tracker sees its pipe close and exits too.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 0.5


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this process as soon as ``parent_pid`` is gone."""
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="diccae-parent-watchdog", daemon=True).start()


def worker_pool(workers: int, mp_context: Any) -> cf.ProcessPoolExecutor:
    """A process pool whose workers never outlive this process."""
    return cf.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=mp_context,
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
