"""Label sources of a run: cluster label files (pretrain) or store ground truth (finetune).

The only place the trainer calls :mod:`featstore.labels`.  A label file must
carry the fingerprint of the store it is used with; ``read_label_file`` refuses
any other, so a model is never trained on labels of different clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import InputError
from featstore.progress import ProgressFn
from featstore.store.core import FeatureStore


@dataclass
class LabelSource:
    """Per-row labels plus where they came from (saved in checkpoints as JSON)."""

    labels: np.ndarray  # (N,) int64, -1 = unknown
    kind: str  # "file" | "ground_truth" | "none"
    path: str = ""
    round: int = 0
    num_classes: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "round": self.round,
            "num_classes": self.num_classes,
        }


def load_label_file(path: str | Path, store: FeatureStore) -> LabelSource:
    from featstore.labels import read_label_file

    labels, meta = read_label_file(path, store=store)
    labels = np.asarray(labels, np.int64)
    k = int(getattr(meta, "k", 0) or 0)
    k = max(k, int(labels.max()) + 1 if labels.size else 0)
    rnd = getattr(meta, "round", 0)
    return LabelSource(labels, "file", str(Path(path).resolve()), int(rnd or 0), k)


def ground_truth(store: FeatureStore) -> LabelSource:
    labels = np.asarray(store.labels, np.int64)
    if not (labels >= 0).any():
        raise InputError(
            f"{store.path} has no ground-truth labels (every label is -1); pass --labels FILE"
        )
    k = max(len(store.class_names), int(labels.max()) + 1)
    return LabelSource(labels, "ground_truth", "", 0, k)


def no_labels(store: FeatureStore) -> LabelSource:
    return LabelSource(np.full(store.n_rows, -1, np.int64), "none", "", 0, 0)


def recluster(
    store: FeatureStore,
    *,
    features: str,
    out: Path,
    k: int,
    previous: str,
    round: int,
    seed: int,
    n_init: int,
    max_iter: int,
    progress: ProgressFn | None = None,
) -> LabelSource:
    """Re-cluster stored fused features into the next label round, aligned to the previous one.

    ``progress`` receives the K-means restarts and iterations (None: nothing shown).
    """
    from featstore.labels import cluster_store

    result = cluster_store(
        store,
        out=out,
        k=k,
        n_init=n_init,
        seed=seed,
        features=features,
        align_to=previous,
        round=round,
        parent=previous,
        max_iter=max_iter,
        progress=progress,
    )
    labels = np.asarray(result.labels, np.int64)
    return LabelSource(labels, "file", str(result.path), round, k)
