"""The bfloat16 scoring product decides exactly as float32, on data we did not design."""

from __future__ import annotations

import numpy as np
import pytest
from storefactory import write_store

import featstore.analysis.lowprec as lowprec
from featstore.analysis import AuditConfig, run_audit

needs_bf16 = pytest.mark.skipif(
    not lowprec.bf16_available(), reason="CPU without bfloat16 instructions"
)


def _sklearn(name: str):
    from sklearn.datasets import load_digits, load_wine

    X, y = (load_digits if name == "digits" else load_wine)(return_X_y=True)
    X = ((X - X.mean(0)) / np.maximum(X.std(0), 1e-12)).astype(np.float32)
    rng = np.random.default_rng(0)
    flipped = rng.choice(y.size, int(round(0.05 * y.size)), replace=False)
    lab = y.copy()
    C = int(y.max()) + 1
    lab[flipped] = (y[flipped] + rng.integers(1, C, flipped.size)) % C
    split = X.shape[1] // 2
    return X[:, :split], X[:, split:], lab


def _differences(a, b) -> dict[str, int]:
    """Columns whose integer/boolean values differ (predictions, classes, flags)."""
    return {
        k: int((a.columns[k] != b.columns[k]).sum())
        for k in a.columns
        if a.columns[k].dtype.kind in "biu" and (a.columns[k] != b.columns[k]).any()
    }


@needs_bf16
@pytest.mark.parametrize("name", ["digits", "wine"])
def test_bfloat16_scoring_decides_as_float32(tmp_path, name):
    audio, video, lab = _sklearn(name)
    store = write_store(tmp_path / "s.zarr", audio, video, lab)
    ref = run_audit(store, lab, config=AuditConfig(scoring="float32"))
    fast = run_audit(store, lab, config=AuditConfig(scoring="bfloat16"))
    for view in ref.views:
        m = fast.metrics["views"][view]
        # the fast path really decided a share of the rows (else this proves nothing)
        assert m["rows_rechecked_float32"] < 0.7 * m["rows"], m
        assert ref.metrics["views"][view]["rows_rechecked_float32"] == 0
    assert _differences(ref, fast) == {}
    for k, a in ref.columns.items():
        if a.dtype.kind == "f":  # values: float32 entries summed in another order
            scale = float(np.nanmax(np.abs(a[np.isfinite(a)]), initial=1.0))
            np.testing.assert_allclose(fast.columns[k], a, rtol=1e-5, atol=1e-5 * scale, err_msg=k)


@needs_bf16
def test_without_the_error_bound_decisions_change(tmp_path, monkeypatch):
    """Breaking the check on purpose: trusting the bfloat16 product (bound 0) flips
    predictions and modality_disagreement flags on digits, so the test above can fail."""
    audio, video, lab = _sklearn("digits")
    store = write_store(tmp_path / "s.zarr", audio, video, lab)
    ref = run_audit(store, lab, config=AuditConfig(scoring="float32"))
    monkeypatch.setattr(lowprec, "bound_factor", lambda d: 0.0)
    broken = run_audit(store, lab, config=AuditConfig(scoring="bfloat16"))
    assert _differences(ref, broken) != {}


@needs_bf16
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_error_bound_holds(scale):
    """|bfloat16 estimate - float32 product| <= row_bounds * max column norm, on digits
    pixels (not designed here) against random operands, over several magnitudes."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float32) * scale
    X -= X.mean(axis=0)
    op = np.random.default_rng(1).normal(size=(X.shape[1], 40)).astype(np.float32) * 3
    est = lowprec.bf16_product(X, lowprec.bf16_operand(op))
    exact = X @ op
    norms = np.sqrt((op.astype(np.float64) ** 2).sum(axis=0))
    bound = lowprec.row_bounds(X, float(norms.max()))
    assert (np.abs(est - exact).max(axis=1) <= bound).all()
    assert (np.abs(est - exact).max(axis=1) > 0.01 * bound).any()  # and it is not vacuous


def test_smallest_and_settled():
    v = np.array([[3.0, 1.0, 2.0, 1.0], [0.0, 5.0, 9.0, 7.0]], np.float32)
    idx, val = lowprec.smallest(v.copy(), 3)
    assert idx.tolist() == [[1, 3, 2], [0, 1, 3]]  # ties to the lower index, like argmin
    ok = lowprec.settled(val, np.array([0.1, 0.9]))
    assert ok.tolist() == [False, True]  # a tie is never settled; gaps 5, 2 > 1.8
    assert not lowprec.settled(val[1:], np.array([np.inf]))[0]


def test_scoring_is_checked(tmp_path):
    from featstore.errors import InputError

    audio, video, lab = _sklearn("wine")
    store = write_store(tmp_path / "s.zarr", audio, video, lab)
    with pytest.raises(InputError, match="scoring"):
        run_audit(store, lab, config=AuditConfig(scoring="float16"))


def test_two_workers_give_the_one_worker_bits(tmp_path):
    """Workers split each block's per-fold products; every sum is still added in block
    order, so the columns are bit for bit those of one worker with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    audio, video, lab = _sklearn("digits")
    store = write_store(tmp_path / "s.zarr", audio, video, lab, chunk_rows=128)
    cfg = {"scoring": "float32", "rows_per_block": 256}
    with threadpool_limits(1):
        one = run_audit(store, lab, config=AuditConfig(workers=1, **cfg))
    two = run_audit(store, lab, config=AuditConfig(workers=2, **cfg))
    for k, a in one.columns.items():
        np.testing.assert_array_equal(two.columns[k], a, err_msg=k)
