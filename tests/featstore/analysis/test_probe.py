"""ClassProbe: the streamed statistics give exactly the directly fitted models."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.analysis.probe import ClassProbe
from featstore.errors import InputError


def _data(seed=0, n=300, d=7, C=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = (rng.normal(size=(C, d)) * 2)[y] + rng.normal(size=(n, d)) + 5.0  # offset: shift matters
    return X.astype(np.float32), y, rng.integers(0, 3, n)


def _fit(X, y, folds, K=3, block=50):
    p = ClassProbe(int(y.max()) + 1, n_folds=K)
    for s in range(0, len(X), block):
        p.partial_fit(X[s : s + block], y[s : s + block], folds[s : s + block])
    return p.finish()


def _ridge(X, y, alpha_abs, C):
    """Direct ridge with an unpenalised intercept: centre, solve, intercept."""
    X = X.astype(np.float64)
    Y = np.eye(C)[y]
    mu, ybar = X.mean(0), Y.mean(0)
    Xc = X - mu
    W = np.linalg.solve(Xc.T @ Xc + alpha_abs * np.eye(X.shape[1]), Xc.T @ (Y - ybar))
    return W, ybar - mu @ W


def test_fold_models_equal_direct_ridge_on_the_other_folds():
    X, y, folds = _data()
    p = _fit(X, y, folds)
    for k in range(3):
        tr = folds != k
        Xc = X[tr].astype(np.float64) - X[tr].mean(0)
        evals = np.clip(np.linalg.eigvalsh(Xc.T @ Xc), 0, None)
        W, b = _ridge(X[tr], y[tr], p.alpha_ * evals.mean(), 4)
        np.testing.assert_allclose(p.models_[k][0], W, rtol=2e-3, atol=2e-5)
        np.testing.assert_allclose(p.models_[k][1], b, rtol=2e-3, atol=2e-4)


def test_alpha_is_chosen_by_the_held_out_error():
    X, y, folds = _data(seed=1)
    p = _fit(X, y, folds)
    sse = []
    for a in p.alphas:
        total = 0.0
        for k in range(3):
            tr = folds != k
            Xc = X[tr].astype(np.float64) - X[tr].mean(0)
            scale = np.clip(np.linalg.eigvalsh(Xc.T @ Xc), 0, None).mean()
            W, b = _ridge(X[tr], y[tr], a * scale, 4)
            total += ((np.eye(4)[y[~tr]] - (X[~tr] @ W + b)) ** 2).sum()
        sse.append(total)
    np.testing.assert_allclose(p.cv_sse_, sse, rtol=1e-4)
    assert p.alpha_index_ == int(np.argmin(sse))


def test_scores_use_the_row_s_own_fold_and_leave_one_out_centroids():
    X, y, folds = _data(seed=2)
    p = _fit(X, y, folds)
    out = p.score(X, y, folds)
    for i in (0, 17, 123):
        W, b = p.models_[folds[i]]
        assert out["probe"][i] == int(np.argmax(X[i] @ W + b))
        d = np.linalg.norm(
            X[i].astype(np.float64)
            - np.stack(
                [
                    X[(y == c) & (np.arange(len(y)) != i)].astype(np.float64).mean(0)
                    for c in range(4)
                ]
            ),
            axis=1,
        )
        # other classes' centroids include every member; the own one excludes row i
        d_other = np.linalg.norm(X[i] - np.stack([X[y == c].mean(0) for c in range(4)]), axis=1)
        d_ref = np.where(np.arange(4) == y[i], d, d_other)
        assert out["centroid"][i] == int(np.argmin(d_ref))
        np.testing.assert_allclose(
            out["centroid_margin"][i], np.sort(d_ref)[1] - np.sort(d_ref)[0], rtol=1e-3
        )


def test_unlabelled_rows_are_scored_by_the_all_rows_model():
    X, y, folds = _data(seed=3)
    y2 = y.copy()
    y2[:10] = -1
    f2 = folds.copy()
    f2[:10] = 3
    p = _fit(X, y2, f2)
    out = p.score(X[:10], y2[:10], f2[:10])
    W, b = p.models_[3]
    np.testing.assert_array_equal(out["probe"], np.argmax(X[:10] @ W + b, axis=1))
    assert np.isnan(out["probe_gap"]).all()


def test_no_labelled_rows_is_an_input_error():
    p = ClassProbe(2, n_folds=2)
    p.partial_fit(np.zeros((3, 2), np.float32), np.full(3, -1), np.zeros(3, int))
    with pytest.raises(InputError, match="no labelled rows"):
        p.finish()


def test_stratified_folds_spread_every_class_evenly():
    from featstore.analysis.probe import stratified_folds

    rng = np.random.default_rng(0)
    cls = rng.integers(0, 7, 1000)
    cls[:30] = -1
    folds = stratified_folds(cls, 5, seed=3)
    assert (folds[:30] == 5).all() and set(folds[30:]) == set(range(5))
    for c in range(7):
        per_fold = np.bincount(folds[cls == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)
    np.testing.assert_array_equal(folds, stratified_folds(cls, 5, seed=3))
    assert (folds != stratified_folds(cls, 5, seed=4)).any()


def test_folds_do_not_line_up_with_labels_drawn_from_the_same_seed():
    """``default_rng(0).integers(0, C)`` labels and ``default_rng(0).integers(0, K)`` folds
    give fold = label * K // C: every fold model then lacks the classes it is asked about
    and the cross-validated accuracy is 0 (what bench/audit.py's own store showed)."""
    from featstore.analysis.probe import stratified_folds

    n, C, D = 3000, 10, 16
    y = np.random.default_rng(0).integers(0, C, n)
    X = (np.random.default_rng(1).normal(size=(C, D)) * 3)[y] + np.random.default_rng(2).normal(
        size=(n, D)
    )
    folds = stratified_folds(y, 5, seed=0)
    p = _fit(X.astype(np.float32), y, folds, K=5, block=512)
    out = p.score(X.astype(np.float32), y, folds)
    assert (out["probe"] == y).mean() > 0.95
