"""diccae feature store: extraction, storage, clustering and confusion analysis.

Stages read and write one chunked Zarr store (:mod:`featstore.store.core`); the trainer
package reads the same store plus label files and never imports extraction code.
``featstore.open_dataset(STORE)`` opens a store as a lazy xarray Dataset
(:mod:`featstore.analysis`, imported on first use so the core stays light).
"""

from typing import Any

from featstore.errors import DiccaeError
from featstore.store.core import FeatureStore, ModalitySpec

__all__ = ["DiccaeError", "FeatureStore", "ModalitySpec", "open_dataset"]


def __getattr__(name: str) -> Any:
    if name == "open_dataset":
        from featstore.analysis.dataset import open_dataset

        return open_dataset
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")
