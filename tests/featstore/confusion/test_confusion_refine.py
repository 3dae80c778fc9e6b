"""One step of subspace refinement: float64 eigenvectors from a float32-accurate covariance."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.confusion.refine import refine_basis


@pytest.mark.parametrize("k", [1, 2, 5])
def test_refinement_squares_the_error_of_an_approximate_covariance(k):
    rng = np.random.default_rng(k)
    d = 60
    # close top eigenvalues (1.0, 0.99, 0.985, ...): the case that tilts a float32 plane
    evals = np.concatenate([[1.0, 0.99, 0.985, 0.97, 0.96, 0.95], np.linspace(0.9, 0.1, d - 6)])
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    A = (Q * evals) @ Q.T
    E = rng.normal(size=(d, d)) * 1e-8
    cov_hat = A + (E + E.T) / 2  # float32-like error
    w, V = np.linalg.eigh(cov_hat)
    V = V[:, ::-1][:, :k]
    exact = Q[:, :k]

    def off_span(W):  # M depends only on the span of the basis: distance from the exact one
        return np.linalg.norm(W - exact @ (exact.T @ W))

    before = off_span(V)
    theta, Y, B = refine_basis(np, cov_hat, V, A @ V)
    after = off_span(B)
    assert before > 1e-7  # tilted by error / gap ~ 1e-8 / 0.01
    assert after < 1e-11 and after < before * 1e-4  # ~ (error / gap) x before
    np.testing.assert_allclose(theta, evals[:k], rtol=1e-13)
    np.testing.assert_allclose(B.T @ B, np.eye(k), atol=1e-14)
    assert np.all(np.sum(B * (V @ Y), axis=0) > 0.999)  # same sense as the Ritz vectors
