"""KMeans: agreement with scikit-learn, determinism, empty clusters, streaming, excluded rows."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from featstore.common.backend import cupy_usable, torch_cuda_usable
from featstore.errors import BackendUnavailable, InputError
from featstore.kmeans import KMeans, kmeans_plusplus, parse_bytes, resolve_backend
from featstore.store.core import FeatureStore, ModalitySpec

CPU_BACKENDS = ["faiss", "numpy", "torch"]


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(2000, centers=7, n_features=10, cluster_std=0.6, random_state=3)
    return X.astype(np.float32), y


def make_store(path, X, y=None, *, chunk_rows=64, failed=(), audio_missing=(), video_missing=()):
    n, d = X.shape
    da = d // 2
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(n)],
        labels=y,
        chunk_rows=chunk_rows,
        dtype="float32",
        modalities={"audio": ModalitySpec("a", da), "video": ModalitySpec("v", d - da)},
    )
    am = np.zeros(n, bool)
    vm = np.zeros(n, bool)
    am[list(audio_missing)] = True
    vm[list(video_missing)] = True
    s.write_rows(
        0,
        embeddings={"audio": X[:, :da], "video": X[:, da:]},
        missing={"audio": am, "video": vm},
        failed={int(r): "broken" for r in failed},
    )
    return s


@pytest.mark.parametrize("backend", ["sklearn", *CPU_BACKENDS])
def test_recovers_well_separated_blobs_like_sklearn(blobs, backend):
    X, y = blobs
    km = KMeans(7, n_init=3, random_state=0, backend=backend, device="cpu").fit(X)
    sk = SKKMeans(7, n_init=3, random_state=0).fit(X)
    assert adjusted_rand_score(y, km.labels_) > 0.999
    assert adjusted_rand_score(sk.labels_, km.labels_) > 0.999
    assert km.inertia_ <= sk.inertia_ * (1 + 1e-5)
    assert km.labels_.dtype == np.int32 and km.labels_.shape == (len(X),)
    assert km.cluster_centers_.shape == (7, X.shape[1]) and km.cluster_centers_.dtype == np.float32
    assert len(km.inertias_) == 3 and km.inertia_ == pytest.approx(min(km.inertias_), rel=1e-6)
    assert km.backend_ == backend
    np.testing.assert_array_equal(km.predict(X), km.labels_)


@pytest.mark.parametrize("backend", ["sklearn", *CPU_BACKENDS])
def test_inertia_no_worse_than_sklearn_at_equal_init_and_iterations(backend):
    X, _ = make_blobs(1500, centers=12, n_features=8, cluster_std=2.5, random_state=1)
    X = X.astype(np.float32)
    init = X[np.random.RandomState(0).choice(len(X), 12, replace=False)]
    for iters in (1, 3, 8):
        sk = SKKMeans(12, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd").fit(X)
        km = KMeans(12, init=init, max_iter=iters, tol=0, backend=backend, device="cpu").fit(X)
        assert km.n_iter_ == sk.n_iter_
        assert km.inertia_ <= sk.inertia_ * (1 + 1e-5)
        assert adjusted_rand_score(sk.labels_, km.labels_) > 0.99


def test_same_seed_same_result_and_seeds_come_from_one_random_state(blobs):
    X, _ = blobs
    a = KMeans(7, n_init=4, random_state=42, backend="faiss").fit(X)
    b = KMeans(7, n_init=4, random_state=42, backend="faiss").fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertias_ == b.inertias_ and a.seeds_ == b.seeds_
    assert len(set(a.seeds_)) == 4
    c = KMeans(7, n_init=4, random_state=43, backend="faiss").fit(X)
    assert c.seeds_ != a.seeds_


def test_kmeans_plusplus_is_deterministic_and_spreads_seeds(blobs):
    X, y = blobs
    c1 = kmeans_plusplus(X, 7, np.random.RandomState(5))
    c2 = kmeans_plusplus(X, 7, np.random.RandomState(5))
    np.testing.assert_array_equal(c1, c2)
    # on well-separated blobs greedy k-means++ puts one seed in every blob
    d = ((X[:, None, :] - c1[None]) ** 2).sum(-1)
    hit = {int(y[np.argmin(d[:, j])]) for j in range(7)}
    assert len(hit) == 7


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_cluster_is_reseeded_not_left_dead(backend):
    X, _ = make_blobs(600, centers=4, n_features=5, cluster_std=0.3, random_state=2)
    X = X.astype(np.float32)
    init = np.stack([X[0], X[0], X[0] + 1e-3, X[300]])  # duplicates: cluster 1 starts empty
    km = KMeans(4, init=init, max_iter=50, backend=backend, device="cpu").fit(X)
    sizes = np.bincount(km.labels_, minlength=4)
    assert (sizes > 0).all(), sizes
    assert km.n_reseeded_ >= 1
    assert np.isfinite(km.cluster_centers_).all()


def test_sklearn_backend_also_leaves_no_cluster_dead():
    X, _ = make_blobs(600, centers=4, n_features=5, cluster_std=0.3, random_state=2)
    X = X.astype(np.float32)
    init = np.stack([X[0], X[0], X[0] + 1e-3, X[300]])
    km = KMeans(4, init=init, max_iter=50, backend="sklearn", device="cpu").fit(X)
    assert (np.bincount(km.labels_, minlength=4) > 0).all()


def test_nan_and_inf_rows_are_reported_with_their_rows(blobs):
    X = blobs[0].copy()
    X[17, 2] = np.nan
    X[99, 0] = np.inf
    with pytest.raises(InputError, match=r"2 row\(s\).*\[17, 99\]"):
        KMeans(7, n_init=1).fit(X)


def test_store_rows_not_in_the_view_get_minus_one(tmp_path, blobs):
    X, y = blobs
    s = make_store(tmp_path / "s", X, y, failed=[3, 500], audio_missing=[7], video_missing=[1999])
    km = KMeans(7, n_init=2, random_state=0).fit(s)
    assert km.labels_.shape == (s.n_rows,)
    assert (np.flatnonzero(km.labels_ == -1) == [3, 7, 500, 1999]).all()
    ok = km.labels_ >= 0
    # default features = audio+video, each half L2-normalised: blobs stay separable
    assert adjusted_rand_score(y[ok], km.labels_[ok]) > 0.99
    np.testing.assert_array_equal(km.predict(s), km.labels_)
    # a single modality: rows lacking video still take part
    kv = KMeans(7, n_init=1, random_state=0, features="audio").fit(s)
    assert kv.labels_[1999] >= 0 and kv.labels_[7] == -1


def test_store_with_nan_embedding_is_refused(tmp_path, blobs):
    X = blobs[0].copy()
    X[42, 0] = np.nan
    s = make_store(tmp_path / "s", X)
    with pytest.raises(InputError, match="42"):
        KMeans(7, n_init=1).fit(s)


def test_streaming_equals_in_memory_and_stays_within_budget(tmp_path):
    X, y = make_blobs(5000, centers=6, n_features=48, cluster_std=1.0, random_state=4)
    X = X.astype(np.float32)
    s = make_store(tmp_path / "s", X, y, chunk_rows=100, failed=[10])
    params = dict(
        n_init=2, random_state=1, max_iter=6, init_sample=100, restart_sample=0, backend="faiss"
    )
    mem = KMeans(6, **params).fit(s)
    budget = 900_000  # the features alone are 5000 x 48 x 4 = 960 kB
    KMeans(6, memory_budget=budget, **params).fit(
        s
    )  # warm-up: one-off imports and caches are not data
    tracemalloc.start()
    streamed = KMeans(6, memory_budget=budget, **params).fit(s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert not mem.streamed_ and streamed.streamed_
    np.testing.assert_array_equal(mem.labels_, streamed.labels_)
    assert streamed.inertia_ == pytest.approx(mem.inertia_, rel=1e-5)
    np.testing.assert_allclose(
        streamed.cluster_centers_, mem.cluster_centers_, rtol=1e-4, atol=1e-5
    )
    assert peak < budget, f"peak {peak} bytes > budget {budget}"
    with pytest.raises(InputError, match="too small"):
        KMeans(6, memory_budget=20_000, **params).fit(s)


def test_restart_sample_runs_restarts_on_sample_and_refines_on_all_rows():
    X, y = make_blobs(6000, centers=10, n_features=8, cluster_std=1.5, random_state=5)
    full = KMeans(10, n_init=5, random_state=0, restart_sample=0).fit(X)
    samp = KMeans(10, n_init=5, random_state=0, restart_sample=0.25).fit(X)
    assert full.restart_sample_ == 0 and samp.restart_sample_ == 1500
    assert samp.labels_.shape == (6000,)
    assert samp.inertia_ <= full.inertia_ * 1.005
    # auto is off for small inputs
    assert KMeans(10, n_init=5, random_state=0).fit(X).restart_sample_ == 0


def test_progress_reports_restarts_iterations_and_refinement(tmp_path):
    """fit(progress=...) reports ProgressUpdate values (data, no rendering): the restarts
    done of n_init, the iterations of each restart, then the refinement on all rows."""
    X, y = make_blobs(3000, centers=5, n_features=8, cluster_std=1.0, random_state=1)
    ups: list = []
    KMeans(5, n_init=3, random_state=0, backend="numpy", restart_sample=500).fit(
        X.astype(np.float32), progress=ups.append
    )
    assert {u.task for u in ups} == {"restarts", "iterations"}
    restarts = [u for u in ups if u.task == "restarts"]
    assert restarts[0].total == 3 and sum(u.advance for u in restarts) == 3
    assert restarts[-1].done and "kept inertia" in (restarts[-1].info or "")
    iters = [u for u in ups if u.task == "iterations"]
    descs = [u.description for u in iters if u.description and u.description != "iterations"]
    assert descs == [f"restart {i} iterations" for i in (1, 2, 3)] + ["refine on all 3000 rows"]
    assert any((u.info or "").startswith("inertia ") for u in iters)
    # streamed from a store: the restarts task says so
    s = make_store(tmp_path / "s", X.astype(np.float32), y, chunk_rows=100)
    ups.clear()
    km = KMeans(5, n_init=1, random_state=0, backend="numpy", memory_budget=700_000)
    km.fit(s, progress=ups.append)
    assert km.streamed_ and any(u.info == "streaming from the store" for u in ups)


def test_torch_and_float64_inputs_are_accepted(blobs):
    import torch

    X, y = blobs
    km = KMeans(7, n_init=1, random_state=0).fit(torch.from_numpy(X))
    assert adjusted_rand_score(y, km.labels_) > 0.999
    km2 = KMeans(7, n_init=1, random_state=0).fit(X.astype(np.float64))
    np.testing.assert_array_equal(km.labels_, km2.labels_)


def test_estimator_contract_and_bad_parameters(blobs):
    km = KMeans(5, n_init=2, backend="numpy")
    assert km.get_params()["n_clusters"] == 5 and not hasattr(km, "labels_")
    assert km.fit(blobs[0]) is km
    with pytest.raises(InputError, match="not fitted"):
        KMeans(3).predict(blobs[0])
    with pytest.raises(InputError, match="fewer than n_clusters"):
        KMeans(50, n_init=1).fit(blobs[0][:20])
    with pytest.raises(BackendUnavailable):
        KMeans(3, backend="nope").fit(blobs[0])


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5g") == 1_500_000_000
    assert parse_bytes(1000) == 1000 and parse_bytes(None) is None
    with pytest.raises(InputError):
        parse_bytes("lots")


@pytest.mark.skipif(torch_cuda_usable() or cupy_usable(), reason="a GPU is present")
def test_gpu_backends_are_refused_clearly_without_a_gpu():
    with pytest.raises(BackendUnavailable):
        resolve_backend("cuml", "auto")
    with pytest.raises(BackendUnavailable):
        resolve_backend("torch", "cuda")
    assert resolve_backend("auto", "auto") == ("sklearn", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch_cuda_usable(), reason="needs a CUDA GPU")
def test_torch_cuda_matches_cpu(blobs):
    X, y = blobs
    cpu = KMeans(7, n_init=2, random_state=0, backend="sklearn", device="cpu").fit(X)
    gpu = KMeans(7, n_init=2, random_state=0, backend="torch", device="cuda").fit(X)
    assert gpu.device_.startswith("cuda") and gpu.restart_sample_ == 0
    np.testing.assert_array_equal(cpu.labels_, gpu.labels_)  # canonical numbering on both
    assert gpu.inertia_ == pytest.approx(cpu.inertia_, rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="needs CuPy and a CUDA GPU")
def test_cupy_backend_takes_cupy_arrays(blobs):
    import cupy as cp

    X, y = blobs
    km = KMeans(7, n_init=2, random_state=0, backend="cupy", device="cuda").fit(cp.asarray(X))
    assert adjusted_rand_score(y, km.labels_) > 0.999
    assert isinstance(km.labels_, np.ndarray)


def test_the_automatic_choice_is_explained_in_the_estimator_and_the_label_file(tmp_path, blobs):
    import json

    from featstore.labels import cluster_store

    X, y = blobs
    km = KMeans(7, n_init=3, random_state=0).fit(X)
    ch = km.choice_
    assert (
        ch["backend"] == "sklearn"
        and "scikit-learn" in ch["kernel"]
        and "auto on the CPU" in ch["why_backend"]
    )
    assert ch["restart_sample"] == 0 and ch["why_restart_sample"].startswith(
        "off: 2000 rows < 3 x 20000"
    )
    assert "candidates per step" in ch["seeding"] and not ch["streamed"]
    sampled = (
        KMeans(7, n_init=3, random_state=0, restart_sample=500, backend="numpy").fit(X).choice_
    )
    assert sampled["restart_sample"] == 500 and "asked for 500" in sampled["why_restart_sample"]
    assert "asked for backend 'numpy'" in sampled["why_backend"]
    given = KMeans(7, init=X[:7], random_state=0).fit(X).choice_
    assert given["seeding"] == "given initial centres" and given["why_restart_sample"].startswith(
        "off: a single run"
    )

    s = make_store(tmp_path / "s", X, y)
    cluster_store(s, out=tmp_path / "l.npy", k=7, n_init=2, seed=0, plot=False)
    meta = json.loads((tmp_path / "l.npy.json").read_text())
    assert meta["choice"]["backend"] == "sklearn" and meta["choice"][
        "why_restart_sample"
    ].startswith("off")


def test_every_backend_name_has_a_registered_kernel():
    """BACKENDS (what --backend accepts) and the kernel registry name the same backends."""
    from featstore.kmeans.backends import BACKENDS, make_kernel
    from featstore.kmeans.kernels import kernel_names

    assert set(BACKENDS) - {"auto"} == set(kernel_names())
    assert make_kernel("numpy", "cpu").name == "numpy"
    with pytest.raises(BackendUnavailable, match="no k-means kernel named 'nope'"):
        make_kernel("nope", "cpu")
