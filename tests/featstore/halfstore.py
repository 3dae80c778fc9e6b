"""A store whose audio is the first half of a matrix's columns and video the rest (used by
the streamed k-means tests and the part-cache tests)."""

from __future__ import annotations

import numpy as np

from featstore.store import FeatureStore, ModalitySpec


def make_halves_store(path, X: np.ndarray, *, chunk_rows: int = 100, dtype: str = "float16"):
    """``X`` (n, d) written as audio = ``X[:, : d // 2]``, video = the rest."""
    n, d = X.shape
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        chunk_rows=chunk_rows,
        dtype=dtype,
        modalities={"audio": ModalitySpec("a", d // 2), "video": ModalitySpec("v", d - d // 2)},
    )
    s.write_rows(0, embeddings={"audio": X[:, : d // 2], "video": X[:, d // 2 :]})
    return s
