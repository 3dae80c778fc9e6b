"""The block kernel (featstore/store/blocks.py): same bits as the plain formula, same errors."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.errors import InputError
from featstore.store import blocks
from featstore.store.blocks import assemble_block


def reference_block(parts, keep, start, *, combined, extra, what):
    """The definition, written plainly (the reader before the kernel was tuned)."""
    rows = keep.astype(np.int64) + start
    x = np.concatenate([np.asarray(p[keep], np.float32) for p in parts], axis=1)
    if combined:
        lo = 0
        for p in parts:
            blk = x[:, lo : lo + p.shape[1]]
            with np.errstate(invalid="ignore", over="ignore"):
                blk /= np.maximum(np.sqrt(np.einsum("ij,ij->i", blk, blk)), 1e-12)[:, None]
            lo += p.shape[1]
    if extra:
        computed = ~np.isnan(x).all(axis=1)
        rows, x = rows[computed], x[computed]
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        more = f" (and {bad.size - 5} more in this block)" if bad.size > 5 else ""
        raise InputError(
            f"non-finite values in {what} at rows {rows[bad][:5].tolist()}{more} (NaN/Inf); "
            "re-extract those rows or mark them failed"
        )
    return rows, x


def outcome(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except InputError as exc:
        return str(exc)


def assert_same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].dtype == b[1].dtype == np.float32 and a[1].shape == b[1].shape
    np.testing.assert_array_equal(a[1].view(np.uint32), b[1].view(np.uint32))  # bit for bit


def random_case(rng, trial):
    m = int(rng.choice([1, 2, 7, 300, 1500]))
    n_parts = 1 + trial % 2
    dims = [int(rng.choice([1, 3, 64, 129, 700])) for _ in range(n_parts)]
    dtype = np.float16 if trial % 3 else np.float32
    top = 4 if dtype == np.float16 else 30  # float32 rows up to 1e30 overflow the sum of squares
    parts = [
        (rng.standard_normal((m, d)) * 10.0 ** rng.uniform(-4, top, (m, 1))).astype(dtype)
        for d in dims
    ]
    if trial % 4 == 0:
        parts[0][rng.integers(m)] = 0  # zero rows stay zero
    if trial % 5 == 0:
        parts[-1][rng.integers(m), rng.integers(dims[-1])] = [np.nan, np.inf, -np.inf][trial % 3]
    if trial % 7 == 0:
        parts[0][rng.integers(m)] = np.nan  # an "extra" array's not-computed row
    keep = np.flatnonzero(rng.random(m) < (1.0 if trial % 2 else 0.7))
    combined = n_parts > 1 or trial % 4 == 1
    extra = not combined and trial % 3 == 0
    return parts, keep, dict(combined=combined, extra=extra, what="audio+video of S")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_gives_the_reference_bits_and_errors(seed):
    rng = np.random.default_rng(seed)
    for trial in range(60):
        parts, keep, kw = random_case(rng, trial)
        assert_same(
            outcome(assemble_block, parts, keep, 40, **kw),
            outcome(reference_block, parts, keep, 40, **kw),
        )


def test_numpy_fallback_gives_the_same_bits(monkeypatch):
    rng = np.random.default_rng(5)
    cases = [random_case(rng, t) for t in range(24)]
    with_torch = [outcome(assemble_block, p, k, 0, **kw) for p, k, kw in cases]
    monkeypatch.setattr(blocks, "optional_torch", lambda: None)
    for (p, k, kw), expected in zip(cases, with_torch, strict=True):
        assert_same(outcome(assemble_block, p, k, 0, **kw), expected)


def test_overflowing_rows_are_not_errors_but_nan_rows_are():
    a = np.ones((4, 3), np.float32)
    a[1] = 1e30  # sum of squares overflows: flagged by the screen, finite after the check
    v = np.ones((4, 2), np.float32)
    rows, x = assemble_block([a, v], np.arange(4), 10, combined=True, extra=False, what="w")
    assert rows.tolist() == [10, 11, 12, 13] and np.isfinite(x).all()
    v[2, 1] = np.nan
    with pytest.raises(InputError, match=r"non-finite values in w at rows \[12\]"):
        assemble_block([a, v], np.arange(4), 10, combined=True, extra=False, what="w")


def test_extra_array_drops_not_computed_rows_and_reports_partial_nan():
    f = np.arange(12, dtype=np.float32).reshape(6, 2)
    f[1] = np.nan
    rows, x = assemble_block([f], np.arange(6), 0, combined=False, extra=True, what="fused")
    assert rows.tolist() == [0, 2, 3, 4, 5]
    np.testing.assert_array_equal(x, f[[0, 2, 3, 4, 5]])
    f[4, 0] = np.inf
    with pytest.raises(InputError, match=r"at rows \[4\]"):
        assemble_block([f], np.arange(6), 0, combined=False, extra=True, what="fused")
