"""Dynamic / static weighting of the confusion loss."""

from __future__ import annotations

import numpy as np

from trainer.weighting import PairWeights


def _features():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.5, 0.0], [10.0, 0.0], [0.0, 10.0]])  # 0 and 1 overlap
    y = np.repeat(np.arange(4), 50)
    return centres[y] + rng.normal(scale=0.5, size=(200, 2)), y


def test_uniform_before_first_update_then_scaled_mhat():
    w = PairWeights("dynamic", 4)
    np.testing.assert_array_equal(w.matrix, np.ones((4, 4)))
    z, y = _features()
    stats = w.update(z, y)
    m = w.matrix
    off = ~np.eye(4, dtype=bool)
    assert w.updates == 1
    assert m[off].min() >= 0 and m[off].max() <= 2 + 1e-6
    assert m[0, 1] == m.max() == np.float32(2.0)  # the overlapping pair gets the largest weight
    assert stats["confusion_mean"] > 0 and stats["confusion_var"] >= 0
    assert 0 <= stats["mhat_mean"] <= 2


def test_static_weight_stays_constant_but_confusion_is_measured():
    w = PairWeights("static", 4, static_weight=0.3)
    before = w.matrix.copy()
    np.testing.assert_array_equal(
        before, np.ones((4, 4), np.float32)
    )  # w scales the loss term instead
    z, y = _features()
    stats = w.update(z, y)
    np.testing.assert_array_equal(w.matrix, before)
    assert stats["confusion_mean"] > 0


def test_update_ignores_unlabelled_rows_and_single_class_sets():
    w = PairWeights("dynamic", 4)
    z, y = _features()
    assert w.update(z[:50], y[:50]) == {}  # one class only: nothing to compare
    y2 = y.copy()
    y2[:10] = -1
    assert w.update(z, y2) and w.updates == 1
