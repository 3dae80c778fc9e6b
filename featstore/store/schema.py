"""What a diccae store is on disk: its names, row states, provenance and fingerprint.

Everything here is plain data shared by the writers and the readers of a store (see
docs/store-format.md for the contract); nothing opens a store.  Keeping it apart from
:class:`~featstore.store.core.FeatureStore` lets the temp-build-and-swap code, the HDF5
import and the encoders name the format without importing the store class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import InputError

FORMAT_NAME = "diccae-featstore"
FORMAT_VERSION = 1
MODALITIES = ("audio", "video")

STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_FAILED: "failed"}

#: arrays every store has, one entry per row; not "features"
ROW_ARRAYS = ("status", "audio_missing", "video_missing", "ids", "paths", "split", "error", "label")
DTYPES = ("float16", "float32")
#: codecs for the embedding arrays.  zstd saves ~30% disk on typical embeddings but a
#: full pass decompresses every chunk (about 4x the read time of "none" on 2 cores);
#: "none" suits local disks and stores that are streamed every iteration or epoch.
COMPRESSIONS = ("zstd", "none")


def compressors(compression: str) -> Any:
    """Zarr's ``compressors=`` argument for a store ``compression`` name."""
    if compression == "zstd":
        return "auto"
    if compression == "none":
        return None
    raise InputError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")


def diccae_version() -> str:
    """The installed diccae version, recorded in every store and label file."""
    try:
        from importlib.metadata import version

        return version("diccae")
    except Exception:
        return "0+unknown"


@dataclass(frozen=True)
class ModalitySpec:
    """What produced one modality's embeddings; saved in the store attributes.

    ``weights`` identifies the parameters: a torchvision/torchaudio enum name, the
    ``sha256:...`` of a local checkpoint, ``"random"`` (initialised, not trained) or
    ``"none"`` (weightless front end).  ``pretrained`` is true only for real trained
    weights, so nobody mistakes a random-init store for a pretrained one.
    """

    encoder: str
    dim: int
    weights: str = "none"
    pretrained: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModalitySpec:
        return cls(
            encoder=str(d["encoder"]),
            dim=int(d["dim"]),
            weights=str(d.get("weights", "none")),
            pretrained=bool(d.get("pretrained", False)),
            config=dict(d.get("config", {})),
        )


@dataclass(frozen=True)
class Failure:
    """One failed row and the recorded reason."""

    row: int
    id: str
    path: str
    reason: str


@dataclass(frozen=True)
class Shard:
    """One chunk-aligned row range and the arrays read for it."""

    start: int
    stop: int
    data: dict[str, np.ndarray]

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.start, self.stop)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def content_fingerprint(
    *,
    manifest_sha256: str,
    n_rows: int,
    modalities: dict[str, Any],
    ids: Sequence[str],
    dtype: str,
) -> str:
    """The store fingerprint: a digest of what decides its content.

    Covers the manifest, the row ids in order, the modality specs (JSON) and the dtype,
    so label files and training runs can refuse a store that is not the one they were
    made from.  Written at creation and recomputed by ``store verify``.
    """
    content = {
        "manifest_sha256": manifest_sha256,
        "n_rows": n_rows,
        "modalities": modalities,
        "ids_sha256": hashlib.sha256("\n".join(str(i) for i in ids).encode()).hexdigest(),
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


def row_strings(
    values: Sequence[str] | np.ndarray | None, n: int, what: str, default: str = ""
) -> np.ndarray:
    """``n`` per-row strings as an object array; ``None`` gives ``default`` everywhere."""
    if values is None:
        return np.array([default] * n, dtype=object)
    arr = np.asarray([str(v) for v in values], dtype=object)
    if arr.shape != (n,):
        raise InputError(f"expected {n} {what} values (one per row), got {arr.shape[0]}")
    return arr


def is_store_dir(path: Path) -> bool:
    """True when ``path`` holds a diccae store (checked before anything deletes it)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("attributes", {}).get("format") == FORMAT_NAME
    except (OSError, ValueError):
        return False
