"""Crash-safe file writing shared by label files, run directories and reports.

A reader must never see half a file: everything is written to a temp file beside
the target, flushed to disk, and only then renamed over it (atomic on POSIX).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from featstore.errors import OutputError, output_error


def _typed(exc: OSError, path: Path) -> BaseException:
    """ENOSPC/EACCES/EEXIST... become OutputError/DiskFull naming ``path``; others stay."""
    return output_error(exc, path) or exc


def _temp_prefix(path: Path) -> str:
    # the writer's pid in the name lets a later run remove what a killed one left
    return f".{path.name}.{os.getpid()}."


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temp files in ``folder`` left by writers that were killed (their pid is gone).

    A temp file of a live process is never touched, so this is safe while another run
    is writing into the same folder.
    """
    from featstore.common.lock import pid_alive

    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP_NAME.match(p.name)
        if m and p.is_file() and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_temp(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write through ``write(fileobj)`` into a synced temp file beside ``path``.

    Returns the temp path; the caller renames it (``os.replace``), which lets a
    caller commit several files only once all of them are written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _typed(exc, path) from None
    with _removed_on_error(Path(tmp), path):
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _apply_umask(Path(tmp))
    return Path(tmp)


@contextmanager
def _removed_on_error(tmp: Path, path: Path) -> Iterator[None]:
    """Delete the temp file ``tmp`` if the block fails; an OSError becomes the typed
    output error naming ``path`` (the file the user asked for, not the temp name)."""
    try:
        yield
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _typed(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _apply_umask(path: Path) -> None:
    """mkstemp makes 0600 files; give outputs the mode a plain open() would (0666 & ~umask)."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # read, not set: setting it would race with other threads creating files
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Write ``path`` atomically through ``write(fileobj)``."""
    path = Path(path)
    tmp = write_temp(path, write)
    with _removed_on_error(tmp, path):
        os.replace(tmp, path)
    return path


def atomic_write_path(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Like :func:`atomic_write` for writers that want a file *name* (``np.save``,
    ``savefig``, csv helpers): ``write(tmp)`` fills a temp file with the same suffix."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=_temp_prefix(path), suffix=path.suffix or ".tmp", dir=path.parent
        )
    except OSError as exc:
        raise _typed(exc, path) from None
    os.close(fd)
    tmp = Path(tmp_name)
    with _removed_on_error(tmp, path):
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _apply_umask(tmp)
        os.replace(tmp, path)
    return path


def ensure_output_dir(path: str | Path, *, store: object = None, what: str = "--out") -> Path:
    """Create the output folder ``path`` or raise a typed error naming it.

    Refuses a path that is an existing file, that cannot be created or written, and
    (when ``store`` is given) one inside the feature store, whose folder belongs to Zarr.
    """
    path = Path(path)
    if store is not None:
        refuse_inside_store(path, store, what)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _typed(exc, path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: permission denied")
    return path


def refuse_inside_store(path: str | Path, store: object, what: str = "--out") -> None:
    """Raise OutputError if ``path`` lies inside the store folder ``store``."""
    store_dir = Path(str(getattr(store, "path", store))).resolve()
    if Path(path).resolve().is_relative_to(store_dir):
        raise OutputError(
            f"{what} {path} lies inside the store {store_dir}; write outputs elsewhere"
        )


def check_output_file(path: str | Path, *, store: object = None, what: str = "--out") -> Path:
    """Check, before any long work, that the file ``path`` can be written.

    Raises OutputError for a folder at ``path``, a file where its folder should be, an
    unwritable folder, or (with ``store``) a path inside the feature store.
    """
    path = Path(path)
    if store is not None:
        refuse_inside_store(path, store, what)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {path}: permission denied in {parent}")
    return path


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/Infinity floats replaced by None: ``Infinity`` is not JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
