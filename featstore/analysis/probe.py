"""Per-view class models fitted in one streaming pass: centroids and a CV linear probe.

The audit asks of every clip "which class does this view of it look like?", twice:
by the nearest class centroid and by a cross-validated linear probe.  Both must be
fitted on stores larger than memory, so both are built from sufficient statistics
gathered block by block:

* centroids from per-class sums and counts (plus the sum of squared norms, which
  gives each class's RMS spread ``spread_``, reported only);
* the probe is a ridge classifier (least squares on one-hot targets, intercept
  unpenalised) — the linear probe that has a closed form.  Per fold we keep
  ``X'X``, ``X'Y`` and the row sums; the model of fold k is solved from the totals
  minus fold k, so K-fold cross-validation costs one pass and K eigendecompositions.
  The ridge strength is chosen from a grid by the held-out squared error, which is
  also a closed form of the per-fold statistics — no extra pass.

A row's own centroid distance is leave-one-out: removing x from its class of n
members moves the centroid so that ``||x - c^(-x)|| = ||x - c|| * n / (n - 1)``;
without this a small class would always look like the right answer for its members.
Everything is float64 statistics over float32 blocks, in coordinates shifted by the
first block's mean so that the moments do not cancel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from featstore.errors import InputError

#: ridge strengths tried, as multiples of the mean eigenvalue of the training covariance
ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
SCORE_ROWS = 4096
NEAREST = 3  # centroids kept per row for the outlier score  # rows scored at a time: bounds the (rows, classes) temporaries


def _onehot(cls: np.ndarray, n_classes: int) -> sp.csr_matrix:
    """(C, n) sparse indicator, so class sums are one sparse-dense product."""
    n = cls.shape[0]
    return sp.csr_matrix((np.ones(n, np.float64), (cls, np.arange(n))), shape=(n_classes, n))


class ClassProbe:
    """Nearest-centroid and K-fold ridge-probe predictions for one feature view.

    Use ``partial_fit`` on every block (rows with class index -1 are unlabelled and
    only scored), then ``finish()``, then ``score`` block by block.  ``models_[k]`` is
    the ``(coef (D, C), intercept (C,))`` fitted without fold ``k``.  Fold ``k`` rows
    are predicted by the model fitted on the other folds; unlabelled rows (fold
    ``n_folds``) by the model fitted on every labelled row.
    """

    def __init__(self, n_classes: int, *, n_folds: int = 5, alphas: tuple[float, ...] = ALPHA_GRID):
        self.n_classes = n_classes
        self.n_folds = n_folds
        self.alphas = alphas
        self._shift: np.ndarray | None = None

    # ------------------------------------------------------------------ pass 1
    def _stats(self, dim: int) -> None:
        K, C = self.n_folds, self.n_classes
        self._n = np.zeros(K)
        self._sx = np.zeros((K, dim))
        self._sxx = np.zeros((K, dim, dim))
        self._sxy = np.zeros((K, dim, C))
        self._sy = np.zeros((K, C))
        self._sq = np.zeros(C)  # per-class sum of squared norms (shifted)

    def partial_fit(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> ClassProbe:
        if self._shift is None:
            self._shift = X.astype(np.float64).mean(axis=0) if X.shape[0] else np.zeros(X.shape[1])
            self._stats(X.shape[1])
        lab = y >= 0
        if not lab.any():
            return self
        xs = X[lab] - self._shift.astype(np.float32)
        cls, fd = y[lab], folds[lab]
        for k in range(self.n_folds):
            m = fd == k
            if not m.any():
                continue
            xk, ck = xs[m], cls[m]
            self._n[k] += xk.shape[0]
            self._sx[k] += xk.sum(axis=0, dtype=np.float64)
            self._sxx[k] += (xk.T @ xk).astype(np.float64)
            self._sxy[k] += np.asarray(_onehot(ck, self.n_classes) @ xk, dtype=np.float64).T
            self._sy[k] += np.bincount(ck, minlength=self.n_classes)
            self._sq += np.bincount(
                ck, weights=np.einsum("ij,ij->i", xk, xk), minlength=self.n_classes
            )
        return self

    # ------------------------------------------------------------------ solve
    def finish(self) -> ClassProbe:
        """Centroids, spreads, and the K+1 ridge models at the CV-chosen strength."""
        if self._shift is None or self._n.sum() == 0:
            raise InputError("no labelled rows to fit the class models on")
        counts = self._sy.sum(axis=0)
        self.counts_ = counts
        self.centroids_ = self._sx_by_class() / np.maximum(counts, 1)[:, None]
        ms = self._sq / np.maximum(counts, 1) - (self.centroids_**2).sum(axis=1)
        self.spread_ = np.sqrt(np.maximum(ms, 0.0))
        totals = [a.sum(axis=0) for a in (self._n, self._sx, self._sxx, self._sxy, self._sy)]
        folds = [
            tuple(a[k] for a in (self._n, self._sx, self._sxx, self._sxy, self._sy))
            for k in range(self.n_folds)
        ]
        sse = np.zeros(len(self.alphas))
        systems = []
        for k in range(self.n_folds):
            train = tuple(t - f for t, f in zip(totals, folds[k], strict=True))
            systems.append(self._system(train))
            if folds[k][0] > 0 and train[0] > 0:
                sse += self._heldout_sse(systems[-1], folds[k])
        self.cv_sse_ = sse
        self.alpha_index_ = int(np.argmin(sse)) if sse.any() else len(self.alphas) // 2
        self.alpha_ = float(self.alphas[self.alpha_index_])
        systems.append(self._system(tuple(totals)))
        self.models_ = [self._solve(s, self.alpha_) for s in systems]
        # scoring operands: one GEMM gives ||c||^2 - 2 x.c (x's own ||x||^2 is added only
        # where a true distance is needed), the other the probe scores with intercept
        cent = self.centroids_.astype(np.float32)
        self._cent_op = np.vstack([-2 * cent.T, (cent * cent).sum(axis=1)[None, :]]).astype(
            np.float32
        )
        shift = self._shift.astype(np.float32)
        self._probe_ops = [
            np.vstack([W, (b + shift @ W)[None, :]]).astype(np.float32) for W, b in self.models_
        ]
        self._empty = np.flatnonzero(counts == 0)
        return self

    def _sx_by_class(self) -> np.ndarray:
        return self._sxy.sum(axis=0).T  # (C, D): the sum of xs over members

    @staticmethod
    def _system(stats: tuple) -> dict[str, Any]:
        n, sx, sxx, sxy, sy = stats
        n = max(float(n), 1.0)
        mu, ybar = sx / n, sy / n
        A = sxx - n * np.outer(mu, mu)
        B = sxy - n * np.outer(mu, ybar)
        evals, Q = np.linalg.eigh((A + A.T) / 2)
        scale = max(float(np.clip(evals, 0, None).mean()), 1e-12)
        return {
            "mu": mu,
            "ybar": ybar,
            "evals": np.clip(evals, 0, None),
            "Q": Q,
            "QtB": Q.T @ B,
            "scale": scale,
        }

    def _coef(self, s: dict[str, Any], alpha: float) -> np.ndarray:
        return s["Q"] @ (s["QtB"] / (s["evals"] + alpha * s["scale"])[:, None])

    def _heldout_sse(self, s: dict[str, Any], fold: tuple) -> np.ndarray:
        n, sx, sxx, sxy, sy = fold
        mu, ybar = s["mu"], s["ybar"]
        su = sx - n * mu
        suu = sxx - np.outer(sx, mu) - np.outer(mu, sx) + n * np.outer(mu, mu)
        suy = sxy - np.outer(mu, sy)
        out = []
        for a in self.alphas:
            W = self._coef(s, a)
            yz = np.sum(W * suy) + ybar @ sy
            zz = np.sum(W * (suu @ W)) + 2 * ybar @ (su @ W) + n * ybar @ ybar
            out.append(n - 2 * yz + zz)
        return np.asarray(out)

    def _solve(self, s: dict[str, Any], alpha: float) -> tuple[np.ndarray, np.ndarray]:
        W = self._coef(s, alpha)  # intercept in the caller's (unshifted) coordinates
        return W.astype(np.float32), (s["ybar"] - (s["mu"] + self._shift) @ W).astype(np.float32)

    # ------------------------------------------------------------------ pass 2
    def score(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row predictions for one block (class indices; -1 where undefined)."""
        parts = [
            self._score(X[s : s + SCORE_ROWS], y[s : s + SCORE_ROWS], folds[s : s + SCORE_ROWS])
            for s in range(0, X.shape[0], SCORE_ROWS)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}

    def _score(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
        n, C = X.shape[0], self.n_classes
        rows = np.arange(n)
        xs1 = np.empty((n, X.shape[1] + 1), np.float32)  # [x - shift, 1]
        np.subtract(X, self._shift.astype(np.float32), out=xs1[:, :-1])
        xs1[:, -1] = 1.0
        x_sq = np.einsum("ij,ij->i", xs1[:, :-1], xs1[:, :-1])
        part = xs1 @ self._cent_op  # d^2 - ||x||^2, same argmin as d^2
        lab = np.flatnonzero(y >= 0)
        n_own = self.counts_[y[lab]]
        loo = np.where(n_own > 1, (n_own / np.maximum(n_own - 1, 1)) ** 2, np.inf).astype(
            np.float32
        )
        own_d2 = np.maximum(part[lab, y[lab]] + x_sq[lab], 0) * loo
        part[lab, y[lab]] = own_d2 - x_sq[lab]
        if self._empty.size:
            part[:, self._empty] = np.inf
        # the NEAREST centroids in order, by repeated argmin (cheaper than a partition)
        m = min(NEAREST, C)
        near = np.empty((n, m), np.int64)
        near_d2 = np.empty((n, m), np.float32)
        for j in range(m):
            near[:, j] = part.argmin(axis=1)
            near_d2[:, j] = part[rows, near[:, j]]
            part[rows, near[:, j]] = np.inf
        near_d = np.sqrt(np.maximum(near_d2 + x_sq[:, None], 0))
        margin = near_d[:, 1] - near_d[:, 0] if C > 1 else np.full(n, np.inf, np.float32)
        own = np.full(n, np.nan, np.float32)
        own[lab] = np.sqrt(own_d2)
        Z = np.empty((n, C), np.float32)
        for k in np.unique(folds):
            sel = folds == k
            Z[sel] = xs1[sel] @ self._probe_ops[int(k)]
        if self._empty.size:
            Z[:, self._empty] = -np.inf
        pred = Z.argmax(axis=1)
        top = Z[rows, pred]
        gap = np.full(n, np.nan, np.float32)
        gap[lab] = top[lab] - Z[lab, y[lab]]
        Z[rows, pred] = -np.inf
        pmargin = top - Z.max(axis=1) if C > 1 else np.full(n, np.inf, np.float32)
        return {
            "centroid": near[:, 0].astype(np.int32),
            "centroid_margin": margin.astype(np.float32),
            "probe": pred.astype(np.int32),
            "probe_margin": pmargin.astype(np.float32),
            "probe_gap": gap,
            "own_distance": own,
            "near_class": near.astype(np.int32),
            "near_distance": near_d.astype(np.float32),
        }
