"""Read ahead in a background thread so storage I/O overlaps compute.

Shared by the streamed k-means passes and the trainer's shard loader: both iterate
chunks of a store while the main thread does BLAS/torch work (which releases the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield ``items`` while up to ``depth`` of the next ones are produced in a thread.

    The iteration of ``items`` (and any work a generator does per item) runs in the
    thread.  Its exceptions are raised in the consumer; a consumer that stops early
    stops the producer.  ``depth <= 0`` iterates inline.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj: object) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # surfaced in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="diccae-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
