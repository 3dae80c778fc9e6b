"""diccae feature store: extraction, storage, clustering and confusion analysis.

Stages read and write one chunked Zarr store (:mod:`featstore.store`); the trainer
package reads the same store plus label files and never imports extraction code.
``featstore.open_dataset(STORE)`` opens a store as a lazy xarray Dataset
(:mod:`featstore.analysis`).  The names below are imported on first use, so that
``import featstore.errors`` (which runs this file first) stays light: no NumPy, no Zarr.
"""

from typing import Any

from featstore.errors import DiccaeError

__all__ = ["DiccaeError", "FeatureStore", "ModalitySpec", "open_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("FeatureStore", "ModalitySpec"):
        import featstore.store as store

        return getattr(store, name)
    if name == "open_dataset":
        from featstore.analysis.dataset import open_dataset

        return open_dataset
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")
