"""Batched restarts (one distance product for every restart) agree with one-at-a-time Lloyd."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import adjusted_rand_score

from featstore.common.backend import torch_cuda_usable
from featstore.kmeans import KMeans, kmeans_plusplus
from featstore.kmeans.backends import make_kernel
from featstore.kmeans.batched import batched_lloyd, resolve_precision
from featstore.kmeans.lloyd import lloyd
from featstore.kmeans.seeding import kmeans_plusplus_many
from featstore.kmeans.sources import ArraySource

torch = pytest.importorskip("torch")


def _inits(X: np.ndarray, k: int, r: int, seed: int = 0) -> np.ndarray:
    return np.stack([kmeans_plusplus(X, k, np.random.RandomState(seed + i)) for i in range(r)])


@pytest.mark.parametrize("dataset", ["blobs", "digits"])
def test_each_restart_matches_the_sequential_lloyd_loop(dataset):
    if dataset == "blobs":
        X, _ = make_blobs(1500, centers=9, n_features=12, cluster_std=2.0, random_state=4)
        k = 9
    else:  # data we did not design
        X = load_digits().data
        k = 10
    X = X.astype(np.float32)
    C0 = _inits(X, k, 4)
    tol_abs = 1e-4 * float(X.var(axis=0).mean())
    runs = batched_lloyd(torch.from_numpy(X), C0, max_iter=60, tol_abs=tol_abs, precision="fp32")
    kernel = make_kernel("numpy", "cpu")
    for r, run in enumerate(runs):
        ref = lloyd(ArraySource(X), C0[r], kernel, max_iter=60, tol_abs=tol_abs)
        assert run.n_iter == ref.n_iter
        assert adjusted_rand_score(ref.labels, run.labels) == pytest.approx(1.0)
        np.testing.assert_array_equal(run.labels, ref.labels)
        assert run.inertia == pytest.approx(ref.inertia, rel=1e-5)
        np.testing.assert_allclose(run.centers, ref.centers, rtol=1e-4, atol=1e-4)


def test_empty_clusters_are_refilled_with_far_rows():
    X, _ = make_blobs(600, centers=3, n_features=4, cluster_std=0.3, random_state=0)
    X = X.astype(np.float32)
    C0 = np.repeat(X[:1], 6, axis=0)[None] + np.arange(6, dtype=np.float32)[None, :, None] * 1e-3
    C0 = np.concatenate([C0, C0 + 50.0])  # restart 2: every centre far away, all but one empty
    runs = batched_lloyd(torch.from_numpy(X), C0, max_iter=50, tol_abs=0.0, precision="fp32")
    for run in runs:
        assert run.n_reseeded > 0
        assert np.bincount(run.labels, minlength=6).min() > 0  # no cluster left empty
    ref = lloyd(ArraySource(X), C0[0], make_kernel("numpy", "cpu"), max_iter=50, tol_abs=0.0)
    assert runs[0].inertia == pytest.approx(ref.inertia, rel=1e-5)


def test_torch_backend_uses_batched_restarts_and_matches_sklearn_backend():
    X, y = make_blobs(3000, centers=8, n_features=16, cluster_std=1.5, random_state=2)
    X = X.astype(np.float32)
    events = []
    km = KMeans(8, n_init=5, random_state=0, backend="torch", device="cpu").fit(
        X, progress=events.append
    )
    sk = KMeans(8, n_init=5, random_state=0, backend="sklearn", device="cpu").fit(X)
    assert any("batched" in (ev.description or "") for ev in events if ev.task == "iterations")
    assert len(km.inertias_) == 5
    np.testing.assert_array_equal(km.labels_, sk.labels_)  # same seeds, canonical numbering
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "fp32"  # no faster CPU mode
    assert resolve_precision("auto", "cuda") == "tf32"
    assert resolve_precision("bf16", "cuda:0") == "bf16"


@pytest.mark.gpu
@pytest.mark.skipif(not torch_cuda_usable(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_cuda_batched_restarts_match_cpu(precision):
    X, _ = make_blobs(20000, centers=30, n_features=64, cluster_std=3.0, random_state=5)
    X = X.astype(np.float32)
    C0 = _inits(X, 30, 4)
    cpu = batched_lloyd(torch.from_numpy(X), C0, max_iter=30, tol_abs=0.0, precision="fp32")
    gpu = batched_lloyd(
        torch.from_numpy(X).cuda(), C0, max_iter=30, tol_abs=0.0, precision=precision
    )
    for c, g in zip(cpu, gpu, strict=True):
        assert g.inertia == pytest.approx(c.inertia, rel=1e-3)
        assert adjusted_rand_score(c.labels, g.labels) > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(
    not __import__("featstore.common.backend").common.backend.cupy_usable(),
    reason="needs CuPy and a CUDA GPU",
)
def test_kmeans_plusplus_on_cupy_picks_the_same_rows_as_numpy():
    import cupy as cp

    X, _ = make_blobs(5000, centers=20, n_features=32, random_state=1)
    X = X.astype(np.float32)
    np.testing.assert_array_equal(
        kmeans_plusplus(cp.asarray(X), 20, np.random.RandomState(3)),
        kmeans_plusplus(X, 20, np.random.RandomState(3)),
    )
    few = np.repeat(X[:4], 30, axis=0)  # fewer distinct rows than k: the host fallback, same draws
    np.testing.assert_array_equal(
        kmeans_plusplus(cp.asarray(few), 6, np.random.RandomState(0)),
        kmeans_plusplus(few, 6, np.random.RandomState(0)),
    )


def test_seeding_restarts_together_equals_seeding_each_alone():
    X = load_digits().data.astype(np.float32)
    seeds = [3, 11, 42, 7]
    many = kmeans_plusplus_many(X, 10, [np.random.RandomState(s) for s in seeds])
    for s, got in zip(seeds, many, strict=True):
        np.testing.assert_array_equal(got, kmeans_plusplus(X, 10, np.random.RandomState(s)))
    few = np.repeat(X[:3], 5, axis=0)  # 3 distinct rows, k = 5: the degenerate fill
    many = kmeans_plusplus_many(few, 5, [np.random.RandomState(s) for s in seeds])
    assert all(len(np.unique(m, axis=0)) == 3 for m in many)


def test_rows_equal_up_to_rounding_count_as_duplicates_in_seeding():
    """Fewer distinct rows than k: once every row sits on a centre, seeding takes the unused
    rows in order, whatever the BLAS.

    cuBLAS leaves ~1e-6 of the norms where NumPy's sgemm gives exact zeros for identical
    rows; copies perturbed at that level must take the same fallback as exact copies
    (without it, the last centres are drawn in proportion to rounding noise).
    """
    X, _ = make_blobs(400, centers=4, n_features=32, random_state=1)
    few = np.repeat(X[:4].astype(np.float32), 30, axis=0)  # groups of 30 copies
    rs = np.random.default_rng(0)
    noisy = (few * (1 + 1e-7 * rs.standard_normal(few.shape))).astype(np.float32)
    assert len({r.tobytes() for r in noisy}) == len(noisy)  # every row distinct, bit for bit
    for seed in range(3):
        centres = kmeans_plusplus(noisy, 6, np.random.RandomState(seed))
        idx = [int(np.flatnonzero((noisy == c).all(axis=1))[0]) for c in centres]
        assert sorted(i // 30 for i in idx[:4]) == [0, 1, 2, 3]  # one centre per group first
        unused = [i for i in range(len(noisy)) if i not in idx[:4]]
        assert idx[4:] == unused[:2]
