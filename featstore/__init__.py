"""diccae feature store: extraction, storage, clustering and confusion analysis.

Stages read and write one chunked Zarr store (:mod:`featstore.store`); the trainer
package reads the same store plus label files and never imports extraction code.
"""

from featstore.errors import DiccaeError
from featstore.store import FeatureStore, ModalitySpec

__all__ = ["DiccaeError", "FeatureStore", "ModalitySpec"]
