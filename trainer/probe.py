"""The baseline beside every score: a linear probe on the run's own input embeddings.

"Did training add anything?" needs a number next to each head.  The probe is a
scikit-learn logistic regression on standardised inputs, fitted on exactly the
rows the run trained on and scored on the same rows as the heads:

* ``audio``: the stored audio embedding (next to the audio head),
* ``video``: the stored video embedding (next to the video head),
* ``av``: both concatenated (next to the audio-visual head).

It has no tuned hyper-parameters (C = 1, lbfgs), so it is the same baseline on
every data set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.data import iter_rows

PROBE_INPUTS = ("audio", "video", "av")


@dataclass
class LinearProbe:
    """StandardScaler + LogisticRegression, sklearn style (``fit`` returns self)."""

    C: float = 1.0
    max_iter: int = 1000
    seed: int = 0

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed),
        )
        self.model_.fit(np.asarray(X, np.float64), np.asarray(y))
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.asarray(X, np.float64))

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(X) == np.asarray(y)).mean())


def read_inputs(source, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, audio, video)`` of the masked rows, float32, store order."""
    rows, audio, video = [], [], []
    for r, a, v in iter_rows(source, mask, batch=1 << 16):
        rows.append(r)
        audio.append(a)
        video.append(v)
    if not rows:
        return (
            np.empty(0, np.int64),
            np.empty((0, source.audio_dim), np.float32),
            np.empty((0, source.video_dim), np.float32),
        )
    return np.concatenate(rows), np.concatenate(audio), np.concatenate(video)


def probe_scores(
    source, labels: np.ndarray, train: np.ndarray, evaluate: np.ndarray, *, seed: int = 0
) -> dict[str, Any]:
    """Top-1 of the three probes on the ``evaluate`` rows, fitted on the ``train`` rows.

    Returns ``probe_audio``, ``probe_video``, ``probe_av`` (fractions), the row counts
    and the seconds spent; an empty dict when there is nothing to fit or score.
    """
    t0 = time.perf_counter()
    train, evaluate = train & (labels >= 0), evaluate & (labels >= 0)
    if not train.any() or not evaluate.any() or len(np.unique(labels[train])) < 2:
        return {}
    rows, a, v = read_inputs(source, train | evaluate)
    tr, ev = train[rows], evaluate[rows]
    y = labels[rows]
    inputs = {"audio": a, "video": v, "av": np.concatenate([a, v], axis=1)}
    out: dict[str, Any] = {}
    for name in PROBE_INPUTS:
        X = inputs[name]
        out[f"probe_{name}"] = LinearProbe(seed=seed).fit(X[tr], y[tr]).score(X[ev], y[ev])
    out.update(
        probe_n_train=int(tr.sum()),
        probe_n_eval=int(ev.sum()),
        probe_seconds=round(time.perf_counter() - t0, 3),
    )
    return out
