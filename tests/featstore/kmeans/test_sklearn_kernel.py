"""The ``sklearn`` block kernel (scikit-learn's private fused Lloyd step) and the streamed
passes built on it: per-block statistics equal a NumPy reference (clusters empty inside
a block stay empty), far rows come from an extra pass only when needed, blocks run on
worker threads in order, a streamed fit reads the store once per iteration, and the
kernel falls back cleanly where scikit-learn's private loops are missing."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

import featstore.kmeans.sklearn_kernel as skk
from featstore.kmeans import KMeans
from featstore.kmeans.backends import make_kernel
from featstore.kmeans.kernels import XpKernel
from featstore.kmeans.lloyd import kernel_session, lloyd
from featstore.kmeans.sources import ArraySource
from featstore.store.core import FeatureStore, ModalitySpec
from featstore.store.features import FeatureView


def make_store(path, X, *, chunk_rows=64):
    """X as a float32 store: audio = the first half of the columns, video = the rest."""
    n, d = X.shape
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        chunk_rows=chunk_rows,
        dtype="float32",
        modalities={"audio": ModalitySpec("a", d // 2), "video": ModalitySpec("v", d - d // 2)},
    )
    s.write_rows(0, embeddings={"audio": X[:, : d // 2], "video": X[:, d // 2 :]})
    return s


def reference(x: np.ndarray, C: np.ndarray):
    """Labels, float64 sums, counts and inertia computed plainly in float64."""
    d = ((x[:, None, :].astype(np.float64) - C[None].astype(np.float64)) ** 2).sum(-1)
    lab = d.argmin(1)
    k = C.shape[0]
    sums = np.zeros((k, x.shape[1]))
    np.add.at(sums, lab, x.astype(np.float64))
    return lab, sums, np.bincount(lab, minlength=k), float(d[np.arange(len(x)), lab].sum())


@pytest.fixture
def kernel():
    k = make_kernel("sklearn", "cpu")
    if not isinstance(k, skk.SklearnKernel):
        pytest.skip("this scikit-learn lacks the private loops (the fallback is tested below)")
    return k


@pytest.mark.parametrize("n", [400, 37])  # 37 < K: most clusters empty in the block
def test_block_step_matches_reference_even_with_clusters_empty_in_the_block(kernel, n):
    rs = np.random.RandomState(0)
    x = rs.randn(n, 16).astype(np.float32)
    C = rs.randn(60, 16).astype(np.float32)
    C[50:] += 40.0  # ten centres far from every row: empty in this block, never filled
    lab, sums, counts, inertia = reference(x, C)
    assert (counts == 0).sum() >= 10
    with kernel_session(kernel):
        got_lab, st = kernel.step(kernel.prepare(C), x, 60, 60)
    np.testing.assert_array_equal(got_lab, lab)
    np.testing.assert_array_equal(st.counts, counts)
    np.testing.assert_allclose(st.sums, sums, rtol=1e-5, atol=1e-4)
    assert st.inertia == pytest.approx(inertia, rel=1e-5)
    assert st.far_d2 is None  # far rows only on demand
    d2, rows, flab = kernel.far_rows(kernel.prepare(C), x, got_lab, 5)
    own = ((x - C[lab]) ** 2).sum(1)
    idx, order = np.argsort(own)[-5:], np.argsort(d2)
    np.testing.assert_allclose(d2[order], own[idx], rtol=1e-5)
    np.testing.assert_array_equal(rows[order], x[idx])
    np.testing.assert_array_equal(flab[order], lab[idx])


def test_lloyd_relocates_an_empty_cluster_through_the_extra_far_pass(kernel):
    """A pass that leaves a cluster empty must reseed it from the farthest rows, like
    the NumPy kernel (which collects far rows in every block) does."""
    X, _ = make_blobs(3000, centers=5, n_features=6, random_state=2)
    X = X.astype(np.float32)
    C0 = X[:6].copy()
    C0[5] = 1000.0  # no row will choose this centre
    runs = {}
    for name, kern in (("sklearn", kernel), ("numpy", XpKernel("numpy", "cpu"))):
        src = ArraySource(X, kern, block_rows=512)
        runs[name] = lloyd(src, C0, kern, max_iter=20, tol_abs=0.0)
    assert runs["sklearn"].n_reseeded >= 1
    assert np.bincount(runs["sklearn"].labels, minlength=6).min() > 0
    np.testing.assert_array_equal(runs["sklearn"].labels, runs["numpy"].labels)
    assert runs["sklearn"].inertia == pytest.approx(runs["numpy"].inertia, rel=1e-5)


def test_streamed_fit_reads_the_store_once_per_iteration_and_matches_in_memory(
    tmp_path, monkeypatch
):
    """Given starting centres, the scan is also the first pass, and strict convergence
    needs no final labels pass: passes over the store == iterations."""
    X, y = make_blobs(6000, centers=8, n_features=32, cluster_std=2.0, random_state=7)
    X = X.astype(np.float32)
    s = make_store(tmp_path / "s", X, chunk_rows=250)
    Xv = FeatureView(s, "audio+video").load()[1]  # the values clustered (halves normalised)
    init = Xv[[np.flatnonzero(y == c)[0] for c in range(8)]]  # one row per blob: none empty
    p = dict(init=init, max_iter=50, tol=0)
    mem = KMeans(8, **p).fit(s)
    reads = [0]
    orig = FeatureView.iter_blocks

    def counted(self, *a, **k):
        reads[0] += 1
        return orig(self, *a, **k)

    monkeypatch.setattr(FeatureView, "iter_blocks", counted)
    st = KMeans(8, memory_budget=1_200_000, **p).fit(s)
    assert st.streamed_ and not mem.streamed_
    assert st.n_iter_ == mem.n_iter_ < 50 and st.n_reseeded_ == 0  # converged strictly
    assert reads[0] == st.n_iter_
    np.testing.assert_array_equal(st.labels_, mem.labels_)
    assert st.inertia_ == pytest.approx(mem.inertia_, rel=1e-5)
    # k-means++ needs its sample first: one scan, then the iterations
    reads[0] = 0
    pp = KMeans(8, n_init=1, max_iter=50, tol=0, random_state=0, memory_budget=1_200_000).fit(s)
    assert reads[0] == pp.n_iter_ + 1
    ref = KMeans(8, n_init=1, max_iter=50, tol=0, random_state=0).fit(s)
    np.testing.assert_array_equal(pp.labels_, ref.labels_)


def test_without_the_private_loops_the_backend_falls_back_cleanly(monkeypatch, tmp_path):
    monkeypatch.setattr(skk, "private_loops", lambda: None)
    kern = make_kernel("sklearn", "cpu")
    assert type(kern) is XpKernel and kern.name == "numpy"
    X, _ = make_blobs(2000, centers=4, n_features=8, random_state=1)
    X = X.astype(np.float32)
    s = make_store(tmp_path / "s", X)
    mem = KMeans(4, n_init=2, random_state=0).fit(s)  # public KMeans for in-memory runs
    assert not mem.streamed_
    st = KMeans(4, n_init=2, random_state=0, memory_budget=1_000_000).fit(s)
    assert st.streamed_
    assert st.inertia_ == pytest.approx(mem.inertia_, rel=1e-4)


def test_results_do_not_depend_on_how_many_blocks_run_at_once(kernel):
    """Blocks are summed in order, so 1, 2 or 4 worker threads give the same bits."""
    X, _ = make_blobs(5000, centers=12, n_features=16, cluster_std=3.0, random_state=3)
    X = X.astype(np.float32)
    C0 = X[:12].copy()
    runs = []
    for w in (1, 2, 4):
        kernel.workers = w
        runs.append(
            lloyd(ArraySource(X, kernel, block_rows=300), C0, kernel, max_iter=8, tol_abs=0)
        )
    for r in runs[1:]:
        np.testing.assert_array_equal(r.labels, runs[0].labels)
        np.testing.assert_array_equal(r.centers, runs[0].centers)
        assert r.inertia == runs[0].inertia
