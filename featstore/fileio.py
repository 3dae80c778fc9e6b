"""Crash-safe file writing shared by label files, run directories and reports.

A reader must never see half a file: everything is written to a temp file beside
the target, flushed to disk, and only then renamed over it (atomic on POSIX).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_temp(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write through ``write(fileobj)`` into a synced temp file beside ``path``.

    Returns the temp path; the caller renames it (``os.replace``), which lets a
    caller commit several files only once all of them are written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically through ``write(fileobj)``."""
    path = Path(path)
    tmp = write_temp(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_path(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Like :func:`atomic_write` for writers that want a file *name* (``np.save``,
    ``savefig``, csv helpers): ``write(tmp)`` fills a temp file with the same suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
