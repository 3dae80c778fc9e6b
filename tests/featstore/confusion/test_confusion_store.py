"""Confusion degree of a store: streamed two-pass engine vs in memory and vs the reference,
float16 and float32 stores, cached and re-read modes, errors naming rows, the circles picture."""

from __future__ import annotations

import numpy as np
import pytest
from confusioncases import (
    classification,
    digits,
    make_store,
    many_classes,
    naive,
    rel_err,
    store_of,
)

from featstore.confusion import confusion_degree, confusion_from_store
from featstore.errors import InputError
from featstore.store.core import FeatureStore, ModalitySpec
from featstore.store.features import l2_normalize


def test_store_chunked_equals_in_memory(tmp_path):
    store, A, V, y, _ = make_store(tmp_path / "s")
    labels = y.copy()
    labels[[3, 4]] = -1
    ok = np.ones(len(y), bool)
    ok[[5, 77, 9, 130, 3, 4]] = False
    X = np.concatenate([l2_normalize(A), l2_normalize(V)], axis=1)
    expect = confusion_degree(X[ok], labels[ok])
    for kwargs in ({"memory_budget": 0}, {}, {"chunked": False}):
        res = confusion_from_store(store, labels, block_rows=64, **kwargs)
        np.testing.assert_allclose(res.M, expect.M, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(res.radii, expect.radii, rtol=1e-6)
        assert res.n_rows == ok.sum()
    res = confusion_from_store(store, labels, block_rows=64, keep_plane=True)
    np.testing.assert_array_equal(np.sort(res.rows), np.flatnonzero(ok))
    assert res.plane.shape == (ok.sum(), 2)


def test_store_single_modality_split_and_full_space(tmp_path):
    store, A, _, y, splits = make_store(tmp_path / "s")
    ok = np.ones(len(y), bool)
    ok[[9, 130]] = False  # failed; video-missing rows still have audio
    ok &= splits == "test"
    expect = confusion_degree(A[ok], y[ok], n_components=None)
    res = confusion_from_store(
        store, y, features="audio", split="test", n_components=None, memory_budget=0, block_rows=32
    )
    np.testing.assert_allclose(res.M, expect.M, rtol=1e-6, atol=1e-9)
    with pytest.raises(InputError, match="splits present"):
        confusion_from_store(store, y, split="val")
    with pytest.raises(InputError, match="rows"):
        confusion_from_store(store, y[:-1])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("blas_threads", [1, 2])
def test_store_matches_reference_on_outside_data(tmp_path, dtype, blas_threads):
    """The issue's agreement goals: 1e-4 relative on a float16 store, 1e-5 on float32.

    The reference works in float64 on the numbers the view defines (the store's values,
    each modality L2-normalised); ours multiplies in float32.
    """
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from featstore.store.features import feature_view

    tol = {"float16": 1e-4, "float32": 1e-5}[dtype]
    for name, (X, y), features, split_at in [
        ("classification", classification(seed=2), "audio+video", 25),
        ("digits", digits(), "audio", None),  # raw pixel counts: no normalisation, big mean
    ]:
        store = store_of(tmp_path / f"{name}-{dtype}", X, y, dtype=dtype, split_at=split_at)
        rows, Xv = feature_view(store, features).load()
        for k in (2, None):
            M_ref, r_ref = naive(Xv, y[rows], k)
            with threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas"):
                for budget in (None, 0):
                    res = confusion_from_store(
                        store,
                        y,
                        features=features,
                        n_components=k,
                        memory_budget=budget,
                        block_rows=300,
                    )
                    assert rel_err(res.M, M_ref) <= tol, (name, k, budget)
                    assert rel_err(res.radii, r_ref) <= tol, (name, k, budget)
                    np.testing.assert_array_equal(res.rows, rows)  # store order


def test_a_bad_block_read_by_a_worker_names_its_rows(tmp_path):
    X, y = classification(seed=3)
    X = X.astype(np.float32)
    X[2345, 7] = np.inf
    store = store_of(tmp_path / "s", X, y, dtype="float32", split_at=20)
    with pytest.raises(InputError, match="2345"):
        confusion_from_store(store, y, workers=2, block_rows=200)


def test_circles_picture_of_one_dimensional_features(tmp_path):
    from featstore.confusion import plot_confusion_circles

    rng = np.random.default_rng(0)
    n = 200
    s = FeatureStore.create(
        tmp_path / "s",
        ids=[str(i) for i in range(n)],
        labels=rng.integers(0, 3, n),
        modalities={"audio": ModalitySpec("a", 1), "video": ModalitySpec("v", 1)},
        chunk_rows=64,
    )
    s.write_rows(
        0, embeddings={"audio": rng.standard_normal((n, 1)), "video": rng.standard_normal((n, 1))}
    )
    r = confusion_from_store(s, s.labels, features="audio", n_components=1, keep_plane=True)
    assert plot_confusion_circles(r, ["a", "b", "c"], tmp_path / "c.png").stat().st_size > 0


@pytest.mark.parametrize("budget", [None, 0])
def test_progress_reports_every_block_of_both_passes_as_data(tmp_path, budget):
    """The library reports ProgressUpdate values (no rich); each pass is a task that closes
    when its last block's rows are in, whatever order the workers finish in."""
    from featstore.progress import ProgressUpdate

    X, y = classification(seed=5)
    store = store_of(tmp_path / "s", X, y, dtype="float32", split_at=20)
    updates: list[ProgressUpdate] = []
    res = confusion_from_store(
        store, y, memory_budget=budget, block_rows=200, workers=2, progress=updates.append
    )
    quiet = confusion_from_store(store, y, memory_budget=budget, block_rows=200, workers=2)
    np.testing.assert_allclose(res.M, quiet.M, rtol=1e-12)  # 2 workers: sums in any order
    tasks = sorted({u.task for u in updates})
    # cached mode: pass 2 projects the kept blocks, with nothing to read, so only pass 1 reports
    assert tasks == (
        ["confusion-pass-1"] if budget is None else ["confusion-pass-1", "confusion-pass-2"]
    )
    for task in tasks:
        mine = [u for u in updates if u.task == task]
        assert mine[0].total == len(y)
        assert sum(u.advance for u in mine) == len(y)
        assert [u.done for u in mine].count(True) == 1 and mine[-1].done
        rates = [float(u.info.split()[0].replace(",", "")) for u in mine if u.info]
        assert rates and min(rates) > 0  # each rate counts the block it reports


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("seed", [0, 1])
def test_float64_accuracy_from_float32_products_on_close_eigenvalues(tmp_path, dtype, seed):
    """The issue's agreement goals (1e-4 on float16, 1e-5 on float32) on data where float32
    products alone miss them: bound 1e-6 here, measured ~1e-7 with the refined basis and
    5e-6 to 1.2e-5 without it (refine_basis replaced by the identity)."""
    X, y = many_classes(seed=seed)
    store = store_of(tmp_path / "s", X, y, dtype=dtype, split_at=64, chunk_rows=1024)
    from featstore.store.features import feature_view

    rows, Xv = feature_view(store).load()
    M_ref, r_ref = naive(Xv, y[rows], 2)
    for budget, workers in ((None, 1), (None, 2), (0, 2)):
        res = confusion_from_store(store, y, memory_budget=budget, workers=workers)
        assert rel_err(res.M, M_ref) <= 1e-6, (budget, workers)
        assert rel_err(res.radii, r_ref) <= 1e-6, (budget, workers)
