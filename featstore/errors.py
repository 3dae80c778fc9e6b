"""Exception hierarchy for diccae.

Library code raises these; only the CLI (``cli/``) turns them into exit codes and
messages, so the functions stay usable from notebooks and other programs.
"""

from __future__ import annotations


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
