"""Confusion degree (Eq. 2) in memory and its scaling (Eq. 3): hand-computed cases, invariances,
bad input, and the engine against the per-class reference on data we did not design."""

from __future__ import annotations

import json

import numpy as np
import pytest
from confusioncases import blobs, circle, classification, digits, naive, rel_err, two_circles

from featstore.confusion import (
    confusion_degree,
    confusion_stats,
    scale_confusion,
)
from featstore.confusion.engine import MAX_KEPT_COMPONENTS
from featstore.confusion.result import COINCIDENT_FLOOR
from featstore.errors import InputError


# ------------------------------------------------------------------ hand-computed cases
@pytest.mark.parametrize(
    ("d", "r1", "r2", "expected"),
    [
        (1.0, 1.0, 1.0, 1.0),  # overlapping: (1 + 1 - 1) / 1
        (0.5, 1.0, 1.0, 3.0),  # heavily overlapping: 1.5 / 0.5
        (2.0, 1.0, 1.0, 0.0),  # touching
        (3.0, 1.0, 1.0, 0.0),  # disjoint
        (2.0, 1.0, 2.0, 0.5),  # unequal radii: (1 + 2 - 2) / 2
    ],
)
@pytest.mark.parametrize("k", [2, None])
def test_two_circles_hand_computed(d, r1, r2, expected, k):
    X, y = two_circles(d, r1, r2)
    res = confusion_degree(X, y, n_components=k)
    np.testing.assert_allclose(res.radii, [r1, r2], rtol=1e-12)
    np.testing.assert_allclose(res.distances[0, 1], d, rtol=1e-12)
    np.testing.assert_allclose(res.M, [[0.0, expected], [expected, 0.0]], atol=1e-12)
    np.testing.assert_array_equal(res.counts, [64, 64])
    np.testing.assert_array_equal(res.classes, [0, 1])


def test_radius_is_the_numpy_linear_quantile_of_member_distances():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(37, 3)) * [3.0, 1.0, 0.2]
    y = np.zeros(37, int)
    y[20:] = 1
    for q in (0.95, 0.5, 0.0, 1.0, 0.333):
        res = confusion_degree(X, y, n_components=None, coverage=q)
        for i, c in enumerate((0, 1)):
            pts = X[y == c]
            expect = np.quantile(np.linalg.norm(pts - pts.mean(0), axis=1), q)
            assert res.radii[i] == pytest.approx(expect, rel=1e-12)


def test_three_dimensional_data_projected_to_the_two_largest_components():
    # the z axis has a tiny spread, so the 2-D PCA plane is the x-y plane
    X, y = two_circles(1.5)
    z = np.where(np.arange(len(y)) % 2 == 0, 0.01, -0.01)[:, None]
    X3 = np.concatenate([X, z], axis=1)
    res = confusion_degree(X3, y, n_components=2)
    np.testing.assert_allclose(res.M[0, 1], 0.5 / 1.5, rtol=1e-9)
    assert res.explained_variance_ratio > 0.99


@pytest.mark.parametrize("k", [1, 2, 3, None])
def test_matches_a_naive_per_class_loop(k):
    X, y = blobs()
    res = confusion_degree(X, y, n_components=k, block_rows=97)  # many uneven blocks
    M, r = naive(X, y, k)
    np.testing.assert_allclose(res.radii, r, rtol=1e-10)
    np.testing.assert_allclose(res.M, M, rtol=1e-9, atol=1e-12)
    assert res.M.dtype == np.float64 and res.M.shape == (6, 6)


def test_float32_input_agrees_with_float64():
    X, y = blobs(seed=3)
    a = confusion_degree(X, y)
    b = confusion_degree(X.astype(np.float32), y)
    np.testing.assert_allclose(b.M, a.M, rtol=1e-4, atol=1e-6)


def test_full_rank_pca_equals_no_projection():
    X, y = blobs(D=5)
    np.testing.assert_allclose(
        confusion_degree(X, y, n_components=5).M,
        confusion_degree(X, y, n_components=None).M,
        rtol=1e-9,
        atol=1e-12,
    )


def test_n_components_changes_the_answer_on_high_dimensional_data():
    X, y = blobs(D=10)
    assert not np.allclose(
        confusion_degree(X, y, n_components=2).M, confusion_degree(X, y, n_components=None).M
    )


# ---------------------------------------------------------------------------- invariance
def test_invariant_to_feature_permutation_and_scale_free_translation():
    X, y = blobs(seed=4)
    perm = np.random.default_rng(0).permutation(X.shape[1])
    base = confusion_degree(X, y)
    np.testing.assert_allclose(confusion_degree(X[:, perm], y).M, base.M, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(confusion_degree(X + 1000.0, y).M, base.M, rtol=1e-6, atol=1e-9)


def test_invariant_to_label_renaming_and_row_order():
    X, y = blobs(seed=5)
    rename = np.array([40, 7, 13, 2, 99, 5])  # class c -> rename[c]
    rows = np.random.default_rng(1).permutation(len(y))
    base = confusion_degree(X, y)
    res = confusion_degree(X[rows], rename[y][rows])
    np.testing.assert_array_equal(res.classes, np.sort(rename))
    pos = np.searchsorted(res.classes, rename)  # where old class c sits now
    np.testing.assert_allclose(res.M[np.ix_(pos, pos)], base.M, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.radii[pos], base.radii, rtol=1e-10)


# ----------------------------------------------------------------------- exclusions/edges
def test_rows_labelled_minus_one_are_excluded():
    X, y = blobs(seed=6)
    junk = np.random.default_rng(2).normal(size=(50, X.shape[1])) * 100
    Xj = np.concatenate([X, junk])
    yj = np.concatenate([y, -np.ones(50, int)])
    a, b = confusion_degree(X, y), confusion_degree(Xj, yj)
    np.testing.assert_allclose(b.M, a.M, rtol=1e-9, atol=1e-12)
    assert b.n_rows == len(y)


def test_num_classes_indexes_by_label_and_absent_classes_are_nan():
    X, y = blobs(C=4, seed=7)
    keep = y != 2
    res = confusion_degree(X[keep], y[keep], num_classes=5)
    assert res.M.shape == (5, 5)
    np.testing.assert_array_equal(res.counts, [80, 80, 0, 80, 0])
    for absent in (2, 4):
        off = np.delete(np.arange(5), absent)
        assert np.isnan(res.M[absent, off]).all() and np.isnan(res.M[off, absent]).all()
        assert res.M[absent, absent] == 0.0
    dense = confusion_degree(X[keep], y[keep])
    sub = [0, 1, 3]
    np.testing.assert_allclose(res.M[np.ix_(sub, sub)], dense.M, rtol=1e-12)
    S = res.scaled()
    assert S[2, 0] == 1.0 and S[0, 4] == 1.0  # neutral weight
    assert res.stats()["n_pairs"] == 3 and res.stats()["n_classes_present"] == 3
    with pytest.raises(InputError, match="outside 0..2"):
        confusion_degree(X, y, num_classes=3)


def test_single_member_class_has_radius_zero():
    X, y = two_circles(3.0, 1.0, 1.0)
    X = np.concatenate([X, [[0.5, 0.0]]])  # a lone point inside class 0's circle
    y = np.concatenate([y, [2]])
    res = confusion_degree(X, y, n_components=None)
    assert res.radii[2] == 0.0 and res.counts[2] == 1
    d = np.linalg.norm(res.centroids[0] - res.centroids[2])
    assert res.M[0, 2] == pytest.approx((res.radii[0] - d) / d)


def test_coincident_centroids_get_the_largest_finite_value_at_least_one():
    # classes 0 and 1 are concentric (d = 0); classes 2 and 3 overlap with M = 3
    X = np.concatenate(
        [circle((0, 0), 1.0), circle((0, 0), 2.0), circle((10, 0), 1.0), circle((10.5, 0), 1.0)]
    )
    y = np.repeat(np.arange(4), 64)
    res = confusion_degree(X, y, n_components=None)
    assert res.n_coincident == 1
    assert res.M[2, 3] == pytest.approx(3.0)
    assert res.M[0, 1] == res.M[1, 0] == pytest.approx(3.0)
    assert np.isfinite(res.M).all()
    # nothing else overlaps: the floor applies
    X2 = np.concatenate([circle((0, 0), 1.0), circle((0, 0), 2.0), circle((10, 0), 1.0)])
    res2 = confusion_degree(X2, np.repeat(np.arange(3), 64), n_components=None)
    assert res2.M[0, 1] == COINCIDENT_FLOOR and res2.M[0, 2] == 0.0


# -------------------------------------------------------------------------- scaling/stats
def test_scaling_maps_off_diagonal_to_0_2_affinely():
    rng = np.random.default_rng(0)
    M = rng.uniform(0.2, 3.0, size=(6, 6))
    M = (M + M.T) / 2
    np.fill_diagonal(M, 0.0)
    S = scale_confusion(M)
    off = ~np.eye(6, dtype=bool)
    assert S[off].min() == pytest.approx(0.0) and S[off].max() == pytest.approx(2.0)
    np.testing.assert_allclose(S[off], 2 * (M[off] - M[off].min()) / (M[off].max() - M[off].min()))
    assert (np.diag(S) == 0).all()


def test_scaling_when_max_equals_min_gives_ones():
    for value in (0.0, 0.7):
        M = np.full((4, 4), value)
        np.fill_diagonal(M, 0.0)
        S = scale_confusion(M)
        assert (S[~np.eye(4, dtype=bool)] == 1.0).all() and (np.diag(S) == 0).all()
    assert scale_confusion(np.zeros((1, 1))).tolist() == [[0.0]]
    with pytest.raises(InputError, match="square"):
        scale_confusion(np.zeros((2, 3)))


def test_stats_are_over_each_pair_once():
    X, y = blobs(C=8, seed=8)
    res = confusion_degree(X, y)
    vals = res.M[np.triu_indices(8, 1)]
    st = res.stats()
    assert st["n_pairs"] == 28
    assert st["mean"] == pytest.approx(vals.mean()) and st["var"] == pytest.approx(vals.var())
    assert st["quantiles"]["0.5"] == pytest.approx(np.median(vals))
    assert sum(st["histogram"]["counts"]) == 28
    assert st["fraction_overlapping"] == pytest.approx((vals > 0).mean())
    json.dumps(st, allow_nan=False)
    assert confusion_stats(np.zeros((1, 1)))["mean"] is None


def test_bad_input_is_refused_with_a_clear_message():
    X, y = blobs()
    with pytest.raises(InputError, match="one entry per row"):
        confusion_degree(X, y[:-1])
    with pytest.raises(InputError, match="integers"):
        confusion_degree(X, y + 0.5)
    with pytest.raises(InputError, match="n_components"):
        confusion_degree(X, y, n_components=11)
    with pytest.raises(InputError, match="coverage"):
        confusion_degree(X, y, coverage=1.5)
    with pytest.raises(InputError, match="no rows"):
        confusion_degree(X, -np.ones_like(y))
    Xn = X.copy()
    Xn[17, 3] = np.nan
    with pytest.raises(InputError, match="rows \\[17\\]"):
        confusion_degree(Xn, y)


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    X, y = blobs()
    res = confusion_degree(
        torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y), num_classes=6
    )
    np.testing.assert_allclose(res.M, confusion_degree(X, y).M, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("blas_threads", [1, 2])
@pytest.mark.parametrize("data", ["digits", "classification"])
@pytest.mark.parametrize("k", [2, 5, None])
def test_in_memory_matches_reference_on_outside_data(data, k, blas_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    X, y = digits() if data == "digits" else classification()
    M_ref, r_ref = naive(X, y, k)
    with threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas"):
        res64 = confusion_degree(X, y, n_components=k, block_rows=256)  # float64: exact path
        res32 = confusion_degree(X.astype(np.float32), y, n_components=k, block_rows=256)
    np.testing.assert_allclose(res64.M, M_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res64.radii, r_ref, rtol=1e-9)
    assert rel_err(res32.M, M_ref) <= 1e-5
    assert rel_err(res32.radii, r_ref) <= 1e-5


def test_float32_moments_do_not_cancel_under_a_large_mean():
    # float32 X^T X of data centred far from 0 would lose the variance to rounding;
    # the engine shifts each block by the first block's mean before multiplying
    X, y = digits()
    X32 = (X + 500.0).astype(np.float32)
    before = X32.copy()
    M_ref, _ = naive(X32.astype(np.float64), y, 2)
    for workers in (1, 2):
        res = confusion_degree(X32, y, block_rows=200, workers=workers)
        assert rel_err(res.M, M_ref) <= 1e-5
        np.testing.assert_array_equal(X32, before)  # shifted copies, never the caller's array


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_count_does_not_change_the_answer(workers):
    X, y = classification(seed=1)
    X = X.astype(np.float32)
    base = confusion_degree(X, y, workers=1, block_rows=128)
    res = confusion_degree(X, y, workers=workers, block_rows=128)
    np.testing.assert_allclose(res.M, base.M, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(res.counts, base.counts)


def test_many_components_take_the_class_sum_path():
    # k above MAX_KEPT_COMPONENTS: centroids from D-dim class sums, distances per block
    rng = np.random.default_rng(3)
    C, D = 5, MAX_KEPT_COMPONENTS + 16
    X = rng.normal(size=(C, D))[np.repeat(np.arange(C), 70)] * 0.7 + rng.normal(size=(C * 70, D))
    y = np.repeat(np.arange(C), 70)
    k = MAX_KEPT_COMPONENTS + 4
    M, r = naive(X, y, k)
    res = confusion_degree(X, y, n_components=k, block_rows=50, workers=2)
    np.testing.assert_allclose(res.M, M, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(res.radii, r, rtol=1e-8)


def test_concentric_classes_count_as_coincident_in_any_precision():
    """Two classes with the same centre: float32 rounding of the centroids must not decide M."""
    X, y = blobs(n_per=300, C=12, D=40, seed=9)
    X = np.concatenate(
        [X, np.concatenate([circle((0, 0), 1.0), circle((0, 0), 2.0)]) @ np.eye(2, 40)]
    )
    y = np.concatenate([y, np.repeat([12, 13], 64)])
    for k in (2, None):
        single, double = (
            confusion_degree(X.astype(dt), y, n_components=k, num_classes=14)
            for dt in (np.float32, np.float64)
        )
        for res in (single, double):
            assert res.stats()["n_coincident"] == 1
            assert np.isfinite(res.M[12, 13]) and res.M[12, 13] < 1e3
        np.testing.assert_allclose(single.M, double.M, rtol=1e-4, atol=1e-9)
