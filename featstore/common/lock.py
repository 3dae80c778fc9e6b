"""One writer per store: an advisory ``fcntl`` lock on a file beside the store.

``extract``, ``import-h5``, ``--overwrite`` swaps and every later write into a store
(fused features, attributes) hold it; readers never take it.  The lock file sits
*beside* the store (``.NAME.lock``), so it also covers a store that does not exist
yet and the rename that swaps a new store in.  The kernel drops the lock when its
holder dies, however it dies, so a killed run never leaves a stale lock.  The
holder deletes the file when it is done, still holding the lock; a taker checks,
once locked, that the file it locked is still the one at the path (else it retries),
so two runs can never hold two different files.

The lock is re-entrant within a process (a writer that opens the store again, or
writes fused features while extracting, does not lock itself out).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featstore.errors import StoreError, StoreLocked

_held: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth)
_mutex = threading.Lock()


def lock_path(store: str | Path) -> Path:
    store = Path(store).absolute()
    return store.with_name(f".{store.name}.lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "an unknown process"


@contextmanager
def writer_lock(store: str | Path) -> Iterator[Path]:
    """Hold the store's writer lock for the ``with`` block, or raise :class:`StoreLocked`."""
    path = lock_path(store)
    key = str(path)
    with _mutex:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if not reentered:
        fd = _take(path, store)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _mutex:
            _held[key] = (fd, 1)
    try:
        yield path
    finally:
        with _mutex:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                path.unlink(missing_ok=True)  # still locked: nobody can be holding this file
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _take(path: Path, store: str | Path) -> int:
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StoreError(
                f"{store}: cannot create the writer lock {path} ({exc.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StoreLocked(
                f"{store} is being written by another diccae run ({holder}); wait for it to finish "
                f"or stop it (lock file {path})"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed the file as we locked it: take the new one


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (used before deleting another run's temp folder)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
