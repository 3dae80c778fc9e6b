"""Streamed k-means (featstore/kmeans/streamed.py): the memory plan's cache, that the
cache changes how much is read but never the result, that it stays inside the budget,
and that the seeding sample is gone before the passes that fill it."""

from __future__ import annotations

import tracemalloc
import weakref

import numpy as np
import pytest
from halfstore import make_halves_store
from sklearn.datasets import make_blobs

import featstore.kmeans.sklearn_kernel as skk
import featstore.kmeans.streamed as streamed
from featstore.kmeans import KMeans
from featstore.store.features import FeatureView

#: 40,000 x 48 rows: 7.7 MB as float32, 3.8 MB stored (float16); in memory a fit needs ~17 MB
BUDGET = 11_000_000


@pytest.fixture(scope="module")
def blobs_store(tmp_path_factory):
    X, _ = make_blobs(40000, centers=10, n_features=48, random_state=5)
    return make_halves_store(
        tmp_path_factory.mktemp("st") / "s", X.astype(np.float32), chunk_rows=512
    ), X


@pytest.fixture
def two_workers(monkeypatch):
    """scikit-learn's loops on 2 threads whatever the machine (the cache's size depends on it)."""
    loops = dict(skk.private_loops() or {})
    if not loops:
        pytest.skip("this scikit-learn lacks the private loops")
    loops["n_threads"] = lambda: 2
    monkeypatch.setattr(skk, "private_loops", lambda: loops)


def plan(view, *, init_sample=0, workers=2, kernel_temp_blocks=0):
    return streamed.stream_plan(
        BUDGET, view, 10, init_sample, 512, workers=workers, kernel_temp_blocks=kernel_temp_blocks
    )


def test_plan_gives_the_cache_what_the_passes_leave(blobs_store):
    s, _ = blobs_store
    view = FeatureView(s, "audio+video")
    plans = {w: plan(view, workers=w) for w in (1, 2, 3, 5)}
    # more workers hold more blocks in flight: less cache; blocks and sample never change
    caches = [plans[w].cache_bytes for w in (1, 2, 3, 5)]
    assert caches[0] > caches[1] > caches[2] > caches[3] == 0, caches
    assert len({(p.rows_per_block, p.sample_cap) for p in plans.values()}) == 1
    assert plans[1].rows_per_block == streamed.block_rows_wanted(10) == 4096  # not as large as fits
    # never more than the whole view as stored (one worker: all of it fits here)
    assert caches[0] == 40000 * view.stored_row_bytes
    # the seeding sample is gone before the passes, so it does not take the cache's share
    assert plan(view, init_sample=2000, workers=2).cache_bytes >= caches[1]
    # a kernel with block-sized temporaries leaves less
    assert plan(view, workers=2, kernel_temp_blocks=1).cache_bytes < caches[1]


@pytest.mark.parametrize("init", ["k-means++", "given"])
def test_the_cache_changes_what_is_read_never_the_result(
    blobs_store, monkeypatch, two_workers, init
):
    s, X = blobs_store
    start = X[:10].astype(np.float32) if init == "given" else init
    p = dict(init=start, n_init=1, max_iter=6, tol=0, random_state=0, memory_budget=BUDGET)
    reads = {"n": 0}
    real = FeatureView.read_part

    def counting(self, part, a, b):
        reads["n"] += 1
        return real(self, part, a, b)

    monkeypatch.setattr(FeatureView, "read_part", counting)
    cached = KMeans(10, **p).fit(s)
    reads_cached, reads["n"] = reads["n"], 0
    plan = streamed.stream_plan
    monkeypatch.setattr(
        streamed,
        "stream_plan",
        lambda *a, **k: streamed.StreamPlan(**{**plan(*a, **k).__dict__, "cache_bytes": 0}),
    )
    uncached = KMeans(10, **p).fit(s)
    assert cached.streamed_ and uncached.streamed_
    assert "kept decoded between passes" in cached.choice_["kernel"]
    assert "kept decoded" not in uncached.choice_["kernel"]
    np.testing.assert_array_equal(cached.labels_, uncached.labels_)
    np.testing.assert_array_equal(cached.cluster_centers_, uncached.cluster_centers_)
    assert cached.inertia_ == uncached.inertia_
    assert reads_cached < reads["n"], (reads_cached, reads["n"])  # the same passes, fewer reads


def fit_peak(s, init, budget):
    """tracemalloc's peak over a streamed fit, after a warm-up (imports are not data)."""
    p = dict(init=init, n_init=1, max_iter=5, random_state=0, memory_budget=budget)
    KMeans(10, **p).fit(s)
    tracemalloc.start()
    km = KMeans(10, **p).fit(s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert km.streamed_ and peak < budget, f"peak {peak} > budget {budget}"
    return km


def test_a_streamed_fit_with_its_cache_full_stays_within_the_budget(blobs_store, two_workers):
    s, X = blobs_store
    for init in ("k-means++", X[:10].astype(np.float32)):
        assert "kept decoded" in fit_peak(s, init, BUDGET).choice_["kernel"]


def test_a_budget_too_small_for_a_cache_is_kept_too(tmp_path):
    """On this machine's own core count: the features alone are 8000 x 48 x 4 = 1.5 MB."""
    X, _ = make_blobs(8000, centers=10, n_features=48, random_state=5)
    s = make_halves_store(tmp_path / "s", X.astype(np.float32), dtype="float32")
    for init in ("k-means++", X[:10].astype(np.float32)):
        fit_peak(s, init, 1_500_000)


def test_the_seeding_sample_is_freed_before_the_passes_that_fill_the_cache(
    blobs_store, monkeypatch
):
    s, _ = blobs_store
    samples: list[weakref.ref] = []
    alive_at_first_pass: list[bool] = []
    real_scan, real_blocks = streamed.scan_blocks, streamed.StoreSource.blocks

    def scan(*a, **k):
        out = real_scan(*a, **k)
        samples.append(weakref.ref(out.sample))
        return out

    def blocks(self):
        if not alive_at_first_pass:
            alive_at_first_pass.append(any(r() is not None for r in samples))
        return real_blocks(self)

    monkeypatch.setattr(streamed, "scan_blocks", scan)
    monkeypatch.setattr(streamed.StoreSource, "blocks", blocks)
    KMeans(10, n_init=1, max_iter=3, random_state=0, memory_budget=BUDGET).fit(s)
    assert samples and alive_at_first_pass == [False]


@pytest.mark.parametrize("wanted", ["never", "always"])
def test_passes_skip_the_inertia_sweep_unless_they_may_be_the_last(
    tmp_path, monkeypatch, two_workers, wanted
):
    """The per-block inertia is a second sweep of each block with scikit-learn's kernel;
    only a pass that may end the run computes it, and the result is the same bits."""
    import featstore.kmeans.lloyd as lloyd_mod

    X, _ = make_blobs(40000, centers=10, n_features=48, cluster_std=6.0, random_state=5)
    s = make_halves_store(tmp_path / "s", X.astype(np.float32), chunk_rows=512)
    loops = skk.private_loops()
    sweeps = {"n": 0}
    real_inertia = loops["inertia"]

    def counting(*a):
        sweeps["n"] += 1
        return real_inertia(*a)

    monkeypatch.setitem(loops, "inertia", counting)
    p = dict(n_init=1, random_state=0, max_iter=40, tol=0, memory_budget=BUDGET)
    fitted = KMeans(10, **p).fit(s)
    adaptive_sweeps, sweeps["n"] = sweeps["n"], 0
    forced = lambda *_a: wanted == "always"  # noqa: E731
    monkeypatch.setattr(lloyd_mod, "inertia_wanted", forced)
    other = KMeans(10, **p).fit(s)
    assert 3 < fitted.n_iter_ < 40  # ends strictly, after passes that skip the sweep
    np.testing.assert_array_equal(fitted.labels_, other.labels_)
    np.testing.assert_array_equal(fitted.cluster_centers_, other.cluster_centers_)
    if wanted == "always":  # every pass swept: the adaptive run did fewer, same inertia
        assert adaptive_sweeps < sweeps["n"]
        assert fitted.inertia_ == other.inertia_
    # never: a strict end without the last pass's inertia takes a final pass for it
    Xv = FeatureView(s, "audio+video").load()[1].astype(np.float64)
    C = other.cluster_centers_.astype(np.float64)
    direct = float(((Xv - C[other.labels_]) ** 2).sum())
    assert np.isfinite(other.inertia_) and other.inertia_ == pytest.approx(direct, rel=1e-5)


def test_a_budget_too_small_names_the_smallest_one_that_streams(blobs_store):
    """The message's figure is the budget that works, not an estimate that moves with it."""
    import re

    from featstore.errors import InputError

    s, _ = blobs_store
    p = dict(n_init=1, max_iter=2, random_state=0)
    for budget in (200_000, 2_000_000):
        with pytest.raises(InputError, match="need a budget of at least") as err:
            KMeans(10, memory_budget=budget, **p).fit(s)
        need = int(re.search(r"at least (\d+) bytes", str(err.value)).group(1))
        assert need > budget
        assert KMeans(10, memory_budget=need, **p).fit(s).streamed_
        with pytest.raises(InputError, match="too small"):
            KMeans(10, memory_budget=need - 1, **p).fit(s)
