"""Exception hierarchy for diccae.

Library code raises these; only the CLI (``cli/``) turns them into exit codes and
messages, so the functions stay usable from notebooks and other programs.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Sequence


class DiccaeError(Exception):
    """Base class of every error diccae raises on purpose."""

    #: exit status the CLI uses for this kind of error
    exit_code: int = 1


class InputError(DiccaeError):
    """User-supplied input (manifest, file, option value) is malformed."""

    exit_code = 2


class ManifestError(InputError):
    """A manifest cannot be parsed; the message names the file and the row."""


class StoreError(DiccaeError):
    """A feature store is missing, damaged or of an unknown format."""

    exit_code = 3


class StoreConfigMismatch(StoreError):
    """An existing store was created with different encoders or settings."""


class StoreDamaged(StoreError):
    """Store content is absent or corrupt although the store says it was written.

    The message names the array, the chunk and the rows, so a user knows what to
    re-extract; a chunk that is absent because its rows are still pending is not
    damage and never raises this.
    """


class StoreLocked(StoreError):
    """Another live process holds the store's writer lock (the message names its pid)."""


class LabelFileError(InputError):
    """A label file is garbled or belongs to a different store."""


class DecodeError(DiccaeError):
    """A media file cannot be decoded (recorded per clip; never stops a run)."""


class WeightsUnavailable(DiccaeError):
    """Pretrained weights could not be found or downloaded."""

    exit_code = 4


class BackendUnavailable(DiccaeError):
    """A requested compute backend (cuML, CuPy, CUDA, faiss, Dask) is not usable here."""

    exit_code = 5


class CheckpointError(DiccaeError):
    """A training checkpoint is missing, damaged or incompatible."""

    exit_code = 3


class OutputError(InputError):
    """An output path cannot be written: permission denied, read-only, a file where a
    folder is needed (or the reverse), or already there.  The message names the path."""


class DiskFull(DiccaeError):
    """The disk (or quota) filled up while writing; nothing finished was replaced."""


class SomeClipsFailed(DiccaeError):
    """A run finished and kept every clip it could, but some clips failed.

    Not a crash: the store holds everything that worked and the failures are
    recorded per row (``store info`` lists them).  Commands raise it *after*
    printing their summary, so scripts can tell "all done" (0) from "done with
    failures" (6) without parsing output.
    """

    exit_code = 6

    def __init__(self, message: str, n_failed: int = 0):
        super().__init__(message)
        self.n_failed = n_failed


class DaskTasksIncomplete(DiccaeError):
    """Some Dask tasks did not finish (worker lost too often, ...); their rows stay pending.

    Rerunning the same command resumes exactly those rows.
    """

    exit_code = 1

    def __init__(self, message: str, ranges: Sequence[tuple[int, int]] = ()):
        super().__init__(message)
        self.ranges = sorted(ranges)  # the chunk ranges left pending


class TrainingDiverged(DiccaeError):
    """Training produced a non-finite loss or weights.

    The checkpoints written before the divergence are kept; the message names the
    phase, epoch and step and suggests a lower learning rate or float32.
    """

    exit_code = 7


#: errno values that describe the output location, not a bug
OUTPUT_ERRNOS = {
    _errno.EACCES: "permission denied",
    _errno.EPERM: "operation not permitted",
    _errno.EROFS: "read-only file system",
    _errno.EEXIST: "already exists",
    _errno.ENOTDIR: "a path component is a file, not a folder",
    _errno.EISDIR: "is a folder, not a file",
    _errno.ENOSPC: "no space left on device",
    _errno.EDQUOT: "disk quota exceeded",
}


def output_error(exc: OSError, path: object = None, what: str = "write") -> DiccaeError | None:
    """The typed error for an OSError met while writing output, or None if it is none of those."""
    code = exc.errno
    if code is None and "errno = 28" in str(exc):  # h5py reports ENOSPC only in its text
        code = _errno.ENOSPC
    if code not in OUTPUT_ERRNOS:
        return None
    where = path if path is not None else (exc.filename or "output")
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        return DiskFull(
            f"cannot {what} {where}: {OUTPUT_ERRNOS[code]}; finished outputs were kept, "
            "partial ones removed -- free some space and rerun"
        )
    return OutputError(f"cannot {what} {where}: {OUTPUT_ERRNOS[code]}")


def torch_load_problem(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file.

    torch's own message for a pickle with Python objects advises ``weights_only=False``,
    i.e. letting the file run code; diccae never does, so say what the file is instead.
    """
    text = str(exc)
    if "weights only" in text.lower() or "weights_only" in text:
        return (
            "not a safe checkpoint: it holds Python objects other than tensors and plain values, "
            "and diccae never unpickles those (they can run arbitrary code)"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"damaged or not a checkpoint ({type(exc).__name__}: {first})"
