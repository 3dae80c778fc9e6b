"""The chunked Zarr feature store: its format, reading rows as feature blocks,
importing/exporting HDF5, integrity checks and summaries.

Every stage after extraction reads through this package; nothing here knows about
k-means, confusion or training.  Modules, by idea:

* ``schema``: the format's names, row states, provenance (:class:`ModalitySpec`) and
  fingerprint; ``layout``: laying out a new store; ``structure``: the seal and the
  structural checks made at every open; ``integrity``: the chunk ledger and
  ``store verify``;
* ``handle`` (reading) and ``core`` (:class:`FeatureStore`: create, open, write);
* ``swap``: build a store under a hidden name and swap it in (extraction, import);
* ``h5source``/``h5import``/``h5export``: HDF5 in and out; ``info``: the summary
  ``store info`` shows; ``splits``; ``features``: rows as feature blocks.

Importing this package loads Zarr and NumPy, not h5py (``import_h5``/``export_h5``
are imported on first use).
"""

from typing import Any

from featstore.store.core import FeatureStore
from featstore.store.info import store_info
from featstore.store.integrity import verify_store
from featstore.store.schema import (
    COMPRESSIONS,
    DTYPES,
    MODALITIES,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PENDING,
    Failure,
    ModalitySpec,
    Shard,
    diccae_version,
    is_store_dir,
    sha256_file,
)
from featstore.store.swap import remove_stale_temps, swap_in

__all__ = [
    "COMPRESSIONS",
    "DTYPES",
    "MODALITIES",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_NAMES",
    "STATUS_PENDING",
    "Failure",
    "FeatureStore",
    "ModalitySpec",
    "Shard",
    "diccae_version",
    "export_h5",
    "import_h5",
    "is_store_dir",
    "remove_stale_temps",
    "sha256_file",
    "store_info",
    "swap_in",
    "verify_store",
]


def __getattr__(name: str) -> Any:
    if name == "import_h5":
        from featstore.store.h5import import import_h5

        return import_h5
    if name == "export_h5":
        from featstore.store.h5export import export_h5

        return export_h5
    raise AttributeError(f"module 'featstore.store' has no attribute {name!r}")
