"""The PCA basis to float64 accuracy from a float32 covariance and one exact product.

Why: pass 1 multiplies float32 rows in float32 (the cost of the whole analysis), so its
covariance ``cov_hat`` is off by ~1e-9 of its scale.  When the top eigenvalues are close
(the benchmark's top three lie within 3 %), that tilts the plane by ~5e-8, and a pair of
centroids 2e-4 apart in a plane 0.25 across moves by 2e-5 of its distance: M is off by
that much (measured 3e-6 to 3e-5 depending on the order of the float32 sums).  Float64
products throughout would cost twice the GEMM.  Instead pass 2, which streams every row
anyway, computes the exact product ``A V`` with the approximate basis V in float64
(N x D x k, cheap for small k), and this module does one step of inexact Newton
refinement of the invariant subspace:

1. Rayleigh-Ritz in span(V) with the exact ``V' A V``: fixes the mixing of close
   eigenvectors inside the span;
2. the residual ``R = A U - U Theta`` is exact; the correction ``Delta`` (orthogonal to U)
   solves ``(cov_hat - theta_i) delta_i = -r_i``.  Using ``cov_hat`` instead of A leaves an
   error of (|A - cov_hat| / gap) x |Delta|, i.e. squares the pass-1 error (~1e-14 here).

The result is the basis ``B = orth(U + Delta)``; rows keep their projections on U (an
error of |x| |Delta| ~ 1e-8, far below a radius), and centroids are exact class means
projected on B.  Written once against ``xp`` (NumPy or CuPy).
"""

from __future__ import annotations

from typing import Any


def refine_basis(xp, cov_hat: Any, V: Any, AV: Any) -> tuple[Any, Any, Any]:
    """``(theta, Y, B)``: Ritz values (descending), rotation of V and the refined basis.

    ``cov_hat`` (D, D) approximates the covariance A; ``V`` (D, k) holds its top-k
    orthonormal eigenvectors; ``AV`` = A @ V computed exactly.  ``V @ Y`` are the Ritz
    vectors (what the rows' kept projections ``Z @ Y`` refer to); ``B`` (D, k) the
    refined orthonormal basis, column i close to ``(V @ Y)[:, i]``.
    """
    H = V.T @ AV
    theta, Y = xp.linalg.eigh((H + H.T) / 2)
    theta, Y = theta[::-1], Y[:, ::-1]
    U = V @ Y
    R = AV @ Y - U * theta[None, :]
    d = cov_hat.shape[0]
    # lifting span(U) by c keeps the system regular there; the solution's small component
    # in span(U) is then projected out (the correction is orthogonal to U by definition)
    c = float(xp.abs(theta).max()) + float(xp.trace(cov_hat)) + 1.0
    lifted = cov_hat + c * (U @ U.T)
    eye = xp.eye(d, dtype=cov_hat.dtype)
    delta = xp.empty_like(U)
    for i in range(U.shape[1]):
        di = xp.linalg.solve(lifted - float(theta[i]) * eye, -R[:, i])
        delta[:, i] = di - U @ (U.T @ di)
    Q, T = xp.linalg.qr(U + delta)
    B = Q * xp.where(xp.diagonal(T) < 0, -1.0, 1.0)[None, :]  # same sense as U
    return theta, Y, B
