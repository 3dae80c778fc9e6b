"""Shared cases for the confusion tests: circles, blobs, scikit-learn data, stores, and the
straightforward per-class reference the engine is checked against."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.store.core import FeatureStore, ModalitySpec


def circle(center, radius, n=64, phase=0.0):
    """n points evenly on a circle: centroid = center, every distance = radius."""
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], axis=1)


def two_circles(d, r1=1.0, r2=1.0):
    X = np.concatenate([circle((0.0, 0.0), r1), circle((d, 0.0), r2, phase=0.1)])
    y = np.repeat([0, 1], 64)
    return X, y


def naive(X, y, k=2, q=0.95):
    """Straightforward reference: SVD PCA, then a Python loop per class and per pair."""
    X = np.asarray(X, np.float64)
    Xc = X - X.mean(0)
    Z = Xc if k is None else Xc @ np.linalg.svd(Xc, full_matrices=False)[2][:k].T
    cls = np.unique(y[y >= 0])
    cent = np.array([Z[y == c].mean(0) for c in cls])
    r = np.array(
        [np.quantile(np.linalg.norm(Z[y == c] - cent[i], axis=1), q) for i, c in enumerate(cls)]
    )
    M = np.zeros((len(cls), len(cls)))
    for i in range(len(cls)):
        for j in range(len(cls)):
            if i != j:
                d = np.linalg.norm(cent[i] - cent[j])
                M[i, j] = max(0.0, r[i] + r[j] - d) / d
    return M, r


def blobs(n_per=80, C=6, D=10, seed=0, spread=2.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)) * spread
    X = np.concatenate([c + rng.normal(size=(n_per, D)) * rng.uniform(0.5, 1.5) for c in centres])
    return X, np.repeat(np.arange(C), n_per)


def make_store(path, *, n_per=60, C=5, seed=0):
    rng = np.random.default_rng(seed)
    n = n_per * C
    y = np.repeat(np.arange(C), n_per)
    rng.shuffle(y)
    A = rng.normal(size=(C, 12))[y] + rng.normal(size=(n, 12)) * 0.8
    V = rng.normal(size=(C, 8))[y] * 3 + rng.normal(size=(n, 8))
    splits = np.where(np.arange(n) % 3 == 0, "test", "train")
    store = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        modalities={"audio": ModalitySpec("a", 12), "video": ModalitySpec("v", 8)},
        labels=y,
        splits=splits.tolist(),
        class_names=[f"name{c}" for c in range(C)],
        chunk_rows=32,
        dtype="float32",
    )
    missing_v = np.zeros(n, bool)
    missing_v[[5, 77]] = True
    store.write_rows(
        0,
        embeddings={"audio": A, "video": V},
        missing={"video": missing_v},
        failed={9: "broken", 130: "broken"},
    )
    return store, A.astype(np.float32), V.astype(np.float32), y, splits


def rel_err(a, b):
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    return d.data, d.target  # 1797 x 64 pixel counts 0..16: a large common mean


def classification(seed=0):
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.make_classification(
        n_samples=3000,
        n_features=40,
        n_informative=12,
        n_classes=8,
        n_clusters_per_class=2,
        class_sep=0.7,
        shift=3.0,
        scale=2.0,
        random_state=seed,
    )


def store_of(path, X, y, *, dtype, split_at=None, chunk_rows=100):
    """Columns [:split_at] as audio and the rest as video (all audio without split_at)."""
    n, d = X.shape
    cut = d if split_at is None else split_at
    mods = {"audio": ModalitySpec("a", cut)}
    emb = {"audio": X[:, :cut]}
    if cut < d:
        mods["video"] = ModalitySpec("v", d - cut)
        emb["video"] = X[:, cut:]
    store = FeatureStore.create(
        path,
        ids=[f"r{i}" for i in range(n)],
        modalities=mods,
        labels=y,
        chunk_rows=chunk_rows,
        dtype=dtype,
    )
    store.write_rows(0, embeddings=emb)
    return store


def many_classes(n=20_000, d=128, c=100, seed=0):
    """The benchmark's kind of data at test size: many random class centres, so the top
    covariance eigenvalues lie within a few % of each other and some centroid pairs nearly
    coincide in the plane (M up to ~300).  Float32 products tilt that plane enough to move
    M by 5e-6 to 3e-5 relative (measured) unless the basis is refined."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    half = d // 2
    a = rng.normal(size=(c, half))[y] + rng.normal(size=(n, half)) * 1.5
    v = rng.normal(size=(c, d - half))[y] + rng.normal(size=(n, d - half)) * 2.0
    return np.concatenate([a, v], axis=1).astype(np.float32), y
