"""Per-view class models fitted in one streaming pass: centroids and a CV linear probe.

The audit asks of every clip "which class does this view of it look like?", twice:
by the nearest class centroid and by a cross-validated linear probe.  Both must be
fitted on stores larger than memory, so both are built from sufficient statistics
gathered block by block:

* centroids from per-class sums and counts;
* the probe is a ridge classifier (least squares on one-hot targets, intercept
  unpenalised) - the linear probe that has a closed form.  Per fold we keep ``X'X``
  (NumPy's ``x.T @ x`` is a BLAS ``syrk``, half a GEMM), the class sums ``X'Y`` and the counts; the model of
  fold k is solved from the totals minus fold k, so K-fold cross-validation costs one
  pass and K+1 eigendecompositions.  The ridge strength is chosen from a grid by the
  held-out squared error, a closed form of the per-fold statistics in the eigenbasis
  (each grid point then costs O(D^2), not a D x D x C product) - no extra pass.

Scoring is one float32 GEMM per block and fold against ``[centroids | probe | plane]``
(the plane: the top-2 principal axes of the view, for the confusion degree's circles),
so a row is multiplied once for all its opinions.

A row's own centroid distance is leave-one-out: removing x from its class of n
members moves the centroid so that ``||x - c^(-x)|| = ||x - c|| * n / (n - 1)``;
without this a small class would always look like the right answer for its members.
Statistics are float64 sums of float32 block products, in coordinates shifted by the
first block's mean so that the moments do not cancel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from featstore.errors import InputError

#: ridge strengths tried, as multiples of the mean eigenvalue of the training covariance
ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
SCORE_ROWS = 4096  # rows scored at a time: bounds the (rows, 2 classes) temporaries
NEAREST = 3  # centroids kept per row for the outlier score


def stratified_folds(cls: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every row: within each class a random permutation dealt round-robin.

    Every class is spread evenly over the folds, so no fold model misses a class, and
    the folds cannot line up with labels drawn from the same generator (a plain
    ``integers(0, K)`` with the seed that drew the labels gives ``fold = label * K // C``:
    every fold model then lacks the classes it is asked about).  Unlabelled rows
    (``cls < 0``) get fold ``n_folds``: they are scored by the model fitted on every row.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    n = cls.shape[0]
    folds = np.full(n, n_folds, np.int64)
    lab = np.flatnonzero(cls >= 0)
    if lab.size == 0:
        return folds
    order = lab[np.lexsort((rng.random(lab.size), cls[lab]))]
    c = cls[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    offset = rng.integers(0, n_folds, int(c.max()) + 1)  # balance fold sizes across classes
    folds[order] = (rank + offset[c]) % n_folds
    return folds


class ClassProbe:
    """Nearest-centroid and K-fold ridge-probe predictions for one feature view.

    Use ``partial_fit`` on every block (rows with class index -1 are unlabelled and
    only scored), then ``finish()``, then ``score`` block by block.  ``models_[k]`` is
    the ``(coef (D, C), intercept (C,))`` fitted without fold ``k``.  Fold ``k`` rows
    are predicted by the model fitted on the other folds; unlabelled rows (fold
    ``n_folds``) by the model fitted on every labelled row.  With ``keep_plane``,
    ``score`` also returns each row's coordinates on the view's top-2 principal plane
    (centred on the labelled rows' mean), ``plane_basis_`` and
    ``explained_variance_ratio_`` describe it.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        n_folds: int = 5,
        alphas: tuple[float, ...] = ALPHA_GRID,
        keep_plane: bool = False,
    ):
        self.n_classes = n_classes
        self.n_folds = n_folds
        self.alphas = alphas
        self.keep_plane = keep_plane
        self._shift: np.ndarray | None = None

    # ------------------------------------------------------------------ pass 1
    def partial_fit(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> ClassProbe:
        for task in self.fit_tasks(X, y, folds):
            task()
        return self

    def fit_tasks(
        self, X: np.ndarray, y: np.ndarray, folds: np.ndarray
    ) -> list[Callable[[], None]]:
        """The work of :meth:`partial_fit` on one block as independent calls, one per fold.

        Each call adds to its own fold's statistics only, so a thread pool may run them
        concurrently (NumPy's matmul releases the GIL); as long as the blocks are given
        in order, every sum is added in the same order and the results are those of
        :meth:`partial_fit`, bit for bit.
        """
        K, C = self.n_folds, self.n_classes
        if self._shift is None:
            d = X.shape[1]
            self._shift = X.astype(np.float64).mean(axis=0) if X.shape[0] else np.zeros(d)
            self._sxx = np.zeros((K, d, d))
            self._sxy = np.zeros((K, C, d))  # per-class sums
            self._sy = np.zeros((K, C))  # per-class counts
        lab = np.flatnonzero(y >= 0)
        if lab.size == 0:
            return []
        fd = folds[lab]
        tasks: list[Callable[[], None]] = []
        for k in range(K):
            rows = lab[fd == k]  # in block order, as a stable sort by fold would give
            if rows.size:
                tasks.append(functools.partial(self._fit_fold, k, X, rows, y[rows]))
        return tasks

    def _fit_fold(self, k: int, X: np.ndarray, rows: np.ndarray, ck: np.ndarray) -> None:
        assert self._shift is not None
        xk = np.asarray(X[rows], dtype=np.float32)
        xk -= self._shift.astype(np.float32)
        self._sxx[k] += xk.T @ xk  # NumPy's BLAS syrk, under the caller's thread limits
        self._sxy[k] += _class_sums(xk, ck, self.n_classes)
        self._sy[k] += np.bincount(ck, minlength=self.n_classes)

    # ------------------------------------------------------------------ solve
    def finish(self) -> ClassProbe:
        """Centroids and the K+1 ridge models at the CV-chosen strength."""
        if self._shift is None or self._sy.sum() == 0:
            raise InputError("no labelled rows to fit the class models on")
        sxx = self._sxx
        folds = [(self._sy[k], self._sxy[k], sxx[k]) for k in range(self.n_folds)]
        totals = (self._sy.sum(axis=0), self._sxy.sum(axis=0), sxx.sum(axis=0))
        counts = totals[0]
        self.counts_ = counts
        self.centroids_ = totals[1] / np.maximum(counts, 1)[:, None]  # shifted coordinates
        sse = np.zeros(len(self.alphas))
        systems = []
        for k in range(self.n_folds):
            train = tuple(t - f for t, f in zip(totals, folds[k], strict=True))
            systems.append(_system(train))
            if folds[k][0].sum() > 0 and train[0].sum() > 0:
                sse += self._heldout_sse(systems[-1], folds[k])
        self.cv_sse_ = sse
        self.alpha_index_ = int(np.argmin(sse)) if sse.any() else len(self.alphas) // 2
        self.alpha_ = float(self.alphas[self.alpha_index_])
        systems.append(_system(totals))
        self.models_ = [self._solve(s, self.alpha_) for s in systems]
        self._make_operands(systems[-1])
        return self

    def _heldout_sse(self, s: dict[str, Any], fold: tuple) -> np.ndarray:
        """Held-out squared error of every grid strength on one fold, in the eigenbasis.

        With ``W = Q diag(d) G`` (``G = Q'B``, ``d = 1/(lambda + alpha)``) and the fold's
        rows centred on the training mean (``u = x - mu``)::

            SSE = n - 2 (tr(W' Suy) + ybar.sy) + tr(W' Suu W) + 2 ybar' W' su + n |ybar|^2

        and every trace is ``d . v`` or ``d' M d`` for a vector/matrix built once per fold.
        """
        sy, sxy, sxx = fold
        n = float(sy.sum())
        mu, ybar, Q, G = s["mu"], s["ybar"], s["Q"], s["G"]
        sx = sxy.sum(axis=0)
        su = sx - n * mu
        suu = sxx - np.outer(sx, mu) - np.outer(mu, sx) + n * np.outer(mu, mu)
        suy = sxy.T - np.outer(mu, sy)  # (D, C)
        v = (G * (Q.T @ suy)).sum(axis=1)
        u = (Q.T @ su) * (G @ ybar)
        M = (Q.T @ suu @ Q) * (G @ G.T)
        const = n - 2 * float(ybar @ sy) + n * float(ybar @ ybar)
        out = []
        for a in self.alphas:
            d = 1.0 / (s["evals"] + a * s["scale"])
            out.append(const - 2 * d @ v + d @ M @ d + 2 * d @ u)
        return np.asarray(out)

    def _solve(self, s: dict[str, Any], alpha: float) -> tuple[np.ndarray, np.ndarray]:
        d = 1.0 / (s["evals"] + alpha * s["scale"])
        W = s["Q"] @ (d[:, None] * s["G"])
        assert self._shift is not None
        # intercept in the caller's (unshifted) coordinates
        return W.astype(np.float32), (s["ybar"] - (s["mu"] + self._shift) @ W).astype(np.float32)

    def _make_operands(self, full: dict[str, Any]) -> None:
        """Per fold, one (D+1, 2C[+2]) matrix: ``[x - shift, 1] @ op`` gives
        ``||c||^2 - 2 x.c`` (x's own ``||x||^2`` is added only where a true distance is
        needed), the probe scores with intercept, and the plane coordinates."""
        assert self._shift is not None
        cent = self.centroids_.astype(np.float32)
        cent_op = np.vstack([-2 * cent.T, (cent * cent).sum(axis=1)[None, :]])
        shift = self._shift.astype(np.float32)
        extra = []
        if self.keep_plane:
            evals, Q = full["evals"], full["Q"]
            basis = Q[:, ::-1][:, :2]  # eigh is ascending
            total = float(evals.sum())
            self.explained_variance_ratio_ = float(evals[::-1][:2].sum() / total) if total else 0.0
            self.plane_basis_ = basis
            extra = [np.vstack([basis, -(full["mu"] @ basis)[None, :]])]
        self._ops = [
            np.ascontiguousarray(
                np.hstack([cent_op, np.vstack([W, (b + shift @ W)[None, :]]), *extra]),
                dtype=np.float32,
            )
            for W, b in self.models_
        ]
        self._empty = np.flatnonzero(self.counts_ == 0)

    # ------------------------------------------------------------------ pass 2
    def score(self, X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
        """Per-row predictions for one block (class indices; -1 where undefined)."""
        if self.n_classes < 2:
            raise InputError("the class models need at least 2 classes")
        out = self.new_scores(X.shape[0])
        for task in self.score_tasks(X, y, folds, out):
            task()
        return out

    def new_scores(self, n: int) -> dict[str, np.ndarray]:
        """The per-row columns :meth:`score` fills, for ``n`` rows."""
        m = min(NEAREST, self.n_classes)
        out: dict[str, np.ndarray] = {
            "centroid": np.empty(n, np.int32),
            "centroid_margin": np.empty(n, np.float32),
            "probe": np.empty(n, np.int32),
            "probe_margin": np.empty(n, np.float32),
            "probe_gap": np.full(n, np.nan, np.float32),
            "own_distance": np.full(n, np.nan, np.float32),
            "near_class": np.empty((n, m), np.int32),
            "near_distance": np.empty((n, m), np.float32),
        }
        if self.keep_plane:
            out["plane"] = np.empty((n, 2), np.float32)
        return out

    def score_tasks(
        self, X: np.ndarray, y: np.ndarray, folds: np.ndarray, out: dict[str, np.ndarray]
    ) -> list[Callable[[], None]]:
        """The work of :meth:`score` as independent calls, each writing its own rows of
        ``out`` (made by :meth:`new_scores`), for a thread pool; same results."""
        order = np.argsort(folds, kind="stable")
        bounds = np.searchsorted(folds[order], np.arange(len(self._ops) + 1))
        tasks: list[Callable[[], None]] = []
        for k in range(len(self._ops)):
            for s in range(int(bounds[k]), int(bounds[k + 1]), SCORE_ROWS):
                idx = order[s : min(int(bounds[k + 1]), s + SCORE_ROWS)]
                tasks.append(functools.partial(self._score_rows, out, idx, X, y[idx], k))
        return tasks

    def _score_rows(
        self, out: dict[str, np.ndarray], idx: np.ndarray, X: np.ndarray, y: np.ndarray, k: int
    ) -> None:
        assert self._shift is not None
        X = X[idx]
        n, C, D = X.shape[0], self.n_classes, X.shape[1]
        rows = np.arange(n)
        xs1 = np.empty((n, D + 1), np.float32)  # [x - shift, 1]
        np.subtract(X, self._shift.astype(np.float32), out=xs1[:, :D])
        xs1[:, D] = 1.0
        x_sq = np.einsum("ij,ij->i", xs1[:, :D], xs1[:, :D])
        G = xs1 @ self._ops[k]
        part, Z = G[:, :C], G[:, C : 2 * C]  # d^2 - ||x||^2 (same argmin as d^2); probe
        if self.keep_plane:
            out["plane"][idx] = G[:, 2 * C :]
        lab = np.flatnonzero(y >= 0)
        yl = y[lab]
        n_own = self.counts_[yl]
        loo = np.where(n_own > 1, (n_own / np.maximum(n_own - 1, 1)) ** 2, np.inf)
        own_d2 = np.maximum(part[lab, yl] + x_sq[lab], 0) * loo.astype(np.float32)
        part[lab, yl] = own_d2 - x_sq[lab]
        if self._empty.size:
            part[:, self._empty] = np.inf
            Z[:, self._empty] = -np.inf
        # the NEAREST centroids in order, by repeated argmin (cheaper than a partition)
        m = min(NEAREST, C)
        near = np.empty((n, m), np.int64)
        near_d2 = np.empty((n, m), np.float32)
        for j in range(m):
            near[:, j] = part.argmin(axis=1)
            near_d2[:, j] = part[rows, near[:, j]]
            part[rows, near[:, j]] = np.inf
        near_d = np.sqrt(np.maximum(near_d2 + x_sq[:, None], 0))
        out["centroid"][idx] = near[:, 0]
        out["centroid_margin"][idx] = near_d[:, 1] - near_d[:, 0]
        out["near_class"][idx] = near
        out["near_distance"][idx] = near_d
        out["own_distance"][idx[lab]] = np.sqrt(own_d2)
        pred = Z.argmax(axis=1)
        top = Z[rows, pred]
        out["probe_gap"][idx[lab]] = top[lab] - Z[lab, yl]
        Z[rows, pred] = -np.inf
        out["probe"][idx] = pred
        out["probe_margin"][idx] = top - Z.max(axis=1)


def _class_sums(x: np.ndarray, cls: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, D) per-class sums of a block: one sparse one-hot product (10x faster than
    ``np.add.reduceat`` over sorted rows); float32 within a block, float64 across."""
    n = cls.shape[0]
    onehot = sp.csr_matrix((np.ones(n, np.float32), (cls, np.arange(n))), shape=(n_classes, n))
    return np.asarray(onehot @ x)


def _system(stats: tuple) -> dict[str, Any]:
    """Centred normal equations of one training set, diagonalised once for every alpha."""
    sy, sxy, sxx = stats
    n = max(float(sy.sum()), 1.0)
    mu, ybar = sxy.sum(axis=0) / n, sy / n
    A = sxx - n * np.outer(mu, mu)
    B = sxy.T - n * np.outer(mu, ybar)
    evals, Q = np.linalg.eigh((A + A.T) / 2)
    evals = np.clip(evals, 0, None)
    return {
        "mu": mu,
        "ybar": ybar,
        "evals": evals,
        "Q": Q,
        "G": Q.T @ B,
        "scale": max(float(evals.mean()), 1e-12),
    }
