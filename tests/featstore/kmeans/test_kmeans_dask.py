"""K-means on Dask reproduces the single-machine KMeans and writes the same label files."""

from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from featstore.errors import BackendUnavailable, InputError  # noqa: E402
from featstore.kmeans import KMeans, kmeans_dask  # noqa: E402
from featstore.labels import cluster_store, cluster_store_dask, read_label_file  # noqa: E402
from featstore.store.core import FeatureStore, ModalitySpec  # noqa: E402

N, DA, DV, K, CHUNK = 600, 12, 20, 6, 64


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """Gaussian blobs in both modalities; some rows failed, lack video, or are pending."""
    rng = np.random.default_rng(7)
    truth = rng.integers(0, K, N)
    ca, cv = rng.normal(0, 3, (K, DA)), rng.normal(0, 3, (K, DV))
    audio = ca[truth] + rng.normal(0, 1.0, (N, DA))
    video = cv[truth] + rng.normal(0, 1.0, (N, DV))
    path = tmp_path_factory.mktemp("dask_km") / "s.zarr"
    s = FeatureStore.create(
        path,
        ids=[f"c{i}" for i in range(N)],
        labels=truth,
        modalities={"audio": ModalitySpec("a", DA), "video": ModalitySpec("v", DV)},
        chunk_rows=CHUNK,
        dtype="float32",
        class_names=[f"k{i}" for i in range(K)],
    )
    for start, stop in s.shard_ranges():
        if start == 5 * CHUNK:
            continue  # one chunk never extracted: stays pending, must be excluded
        no_video = np.zeros(stop - start, bool)
        no_video[::17] = True
        failed = {start + 3: "broken"}
        s.write_rows(
            start,
            embeddings={"audio": audio[start:stop], "video": video[start:stop]},
            missing={"video": no_video},
            failed=failed,
        )
    return FeatureStore.open(path)


@pytest.fixture(scope="module")
def cluster():
    lc = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    try:
        yield lc
    finally:
        lc.close()


@pytest.mark.parametrize(
    "kernel,persist,rows_per_block", [("numpy", True, 128), ("faiss", False, 64)]
)
def test_matches_single_machine_kmeans(store, cluster, kernel, persist, rows_per_block):
    single = KMeans(K, n_init=3, random_state=11, backend=kernel).fit(store)
    dist = kmeans_dask(
        store,
        k=K,
        n_init=3,
        seed=11,
        scheduler=cluster.scheduler_address,
        kernel=kernel,
        persist=persist,
        rows_per_block=rows_per_block,
    )
    assert dist.backend_ == "dask-cpu" and dist.n_workers_ == 2
    np.testing.assert_array_equal(dist.labels_, single.labels_)  # -1 on excluded rows too
    assert dist.inertia_ == pytest.approx(single.inertia_, rel=1e-5)
    np.testing.assert_allclose(dist.inertias_, single.inertias_, rtol=1e-5)
    np.testing.assert_allclose(dist.cluster_centers_, single.cluster_centers_, rtol=1e-4, atol=1e-5)
    assert dist.n_iter_ == single.n_iter_ and dist.best_restart_ == single.best_restart_
    assert dist.seeds_ == single.seeds_ and dist.n_samples_ == single.n_samples_
    excluded = dist.labels_ < 0
    assert (
        excluded[5 * CHUNK : 6 * CHUNK].all() and excluded[3] and excluded[0]
    )  # pending, failed, no video


def test_restart_sample_then_refine_matches(store, cluster):
    """Restarts on a sample (client side), refinement on all rows (workers), bad seeds re-seeded."""
    kw = dict(n_init=4, restart_sample=200, init="random", max_iter=50)
    single = KMeans(K + 4, random_state=3, backend="numpy", **kw).fit(store)
    dist = kmeans_dask(
        store, k=K + 4, seed=3, scheduler=cluster.scheduler_address, kernel="numpy", **kw
    )
    assert dist.restart_sample_ == single.restart_sample_ == 200
    np.testing.assert_array_equal(dist.labels_, single.labels_)
    assert dist.inertia_ == pytest.approx(single.inertia_, rel=1e-5)
    assert dist.n_reseeded_ == single.n_reseeded_


def test_label_file_same_as_cluster_store(store, cluster, tmp_path):
    ref = cluster_store(
        store,
        out=tmp_path / "ref.npy",
        k=K,
        n_init=2,
        seed=5,
        backend="faiss",
        plot=False,
    )
    res = cluster_store_dask(
        store,
        out=tmp_path / "d.npy",
        k=K,
        n_init=2,
        seed=5,
        scheduler=cluster.scheduler_address,
    )
    labels, meta = read_label_file(tmp_path / "d.npy", store)
    np.testing.assert_array_equal(labels, ref.labels)
    assert meta.backend == "dask-cpu" and meta.store_fingerprint == store.fingerprint
    assert meta.inertia == pytest.approx(ref.meta.inertia, rel=1e-5)
    assert meta.extra["dask"]["n_workers"] == 2 and res.plot is not None and res.plot.exists()
    assert meta.agreement["ari"] > 0.95  # the blobs are well separated
    # the same "choice" explanation as the single-machine file (issue 12): same keys and
    # decisions (restart sample, seeding); the kernel and backend say where it ran
    assert ref.meta.choice is not None and meta.choice is not None
    assert set(meta.choice) == set(ref.meta.choice)
    for key in ("why_restart_sample", "seeding", "restart_sample", "streamed"):
        assert meta.choice[key] == ref.meta.choice[key], key
    assert meta.choice["backend"] == "dask-cpu" and "Dask worker" in meta.choice["kernel"]
    assert "--dask" in meta.choice["why_backend"] and "numpy" in meta.choice["why_backend"]
    # a second round aligned to the first keeps the ids
    res2 = cluster_store_dask(
        store,
        out=tmp_path / "d2.npy",
        k=K,
        n_init=1,
        seed=9,
        align_to=tmp_path / "d.npy",
        scheduler=cluster.scheduler_address,
        plot=False,
    )
    assert res2.meta.round == 1 and res2.meta.alignment["same_id_fraction"] > 0.95


def test_clear_errors(store, cluster):
    addr = cluster.scheduler_address
    with pytest.raises(InputError, match="no feature array"):
        kmeans_dask(store, k=K, features="fused", scheduler=addr)
    with pytest.raises(InputError, match="fewer than n_clusters"):
        kmeans_dask(store, k=N, n_init=1, scheduler=addr)
    with pytest.raises(BackendUnavailable, match="dask-cuml needs cuML"):
        kmeans_dask(store, k=K, backend="dask-cuml", scheduler=addr)


def test_non_finite_rows_are_named(tmp_path, cluster):
    s = FeatureStore.create(
        tmp_path / "nan.zarr",
        ids=[f"c{i}" for i in range(40)],
        modalities={"audio": ModalitySpec("a", 3), "video": ModalitySpec("v", 3)},
        chunk_rows=8,
        dtype="float32",
    )
    a = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    a[21, 1] = np.inf
    s.write_rows(0, embeddings={"audio": a, "video": a})
    with pytest.raises(InputError, match=r"non-finite values .* rows \[21\]"):
        kmeans_dask(s, k=2, n_init=1, scheduler=cluster.scheduler_address)


def test_cli_backend_names_map_to_dask_backends():
    from featstore.kmeans import split_backend

    assert split_backend("auto") == ("auto", "auto")
    assert split_backend("cuml") == ("dask-cuml", "auto")
    assert split_backend("numpy") == ("dask-cpu", "numpy")
    with pytest.raises(BackendUnavailable, match="not available with --dask"):
        split_backend("cupy")
