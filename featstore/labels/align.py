"""Comparing labelings: renumber a new round's clusters to match the previous one, and
score a labeling against another (NMI, ARI, purity).

Pseudo-label ids must keep their meaning across refinement rounds, or the trainer's
classifier head and per-cluster plots silently change meaning between rounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.errors import InputError


def alignment_map(new: np.ndarray, previous: np.ndarray, k_new: int | None = None) -> np.ndarray:
    """``map[c]`` = id that new cluster ``c`` should take to best match ``previous``.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``) maximising the
    number of rows both labelings share, counted on rows clustered in both (``-1``
    ignored).  Ids stay in ``[0, k_new)``: new clusters without a partner, or matched
    to a previous id >= k_new (when K shrank), take the free ids in ascending order.
    """
    from scipy.optimize import linear_sum_assignment

    new = np.asarray(new)
    previous = np.asarray(previous)
    if new.shape != previous.shape:
        raise InputError(
            f"cannot align labelings of different length ({new.shape[0]} vs {previous.shape[0]})"
        )
    k_new = int(k_new if k_new is not None else (new.max() + 1 if new.size else 0))
    k_prev = int(previous.max() + 1) if previous.size and previous.max() >= 0 else 0
    mapping = np.full(k_new, -1, np.int64)
    if k_new == 0:
        return mapping
    both = (new >= 0) & (previous >= 0)
    if k_prev and both.any():
        table = np.zeros((k_new, k_prev), np.int64)
        np.add.at(table, (new[both], previous[both]), 1)
        r, c = linear_sum_assignment(table, maximize=True)
        ok = (table[r, c] > 0) & (c < k_new)
        mapping[r[ok]] = c[ok]
    free = iter(sorted(set(range(k_new)) - set(mapping[mapping >= 0].tolist())))
    for cl in range(k_new):
        if mapping[cl] < 0:
            mapping[cl] = next(free)
    return mapping


def align_labels(new: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Renumber ``new`` cluster ids to best match ``previous`` (``-1`` kept).

    Keeps pseudo-label ids stable across refinement rounds, so the classifier head
    of the trainer keeps its meaning and per-cluster plots can be compared.
    """
    new = np.asarray(new)
    mapping = alignment_map(new, previous)
    out = np.full(new.shape, -1, np.int32)
    keep = new >= 0
    out[keep] = mapping[new[keep]]
    return out


def agreement_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any] | None:
    """NMI, ARI and purity of ``pred`` against ``truth`` on rows where both are >= 0."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    both = (pred >= 0) & (truth >= 0)
    if not both.any():
        return None
    p, t = pred[both], truth[both]
    _, t_idx = np.unique(t, return_inverse=True)
    _, p_idx = np.unique(p, return_inverse=True)
    table = np.zeros((p_idx.max() + 1, t_idx.max() + 1), np.int64)
    np.add.at(table, (p_idx, t_idx), 1)
    return {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "purity": float(table.max(axis=1).sum() / both.sum()),
        "n_rows": int(both.sum()),
        "n_classes": int(table.shape[1]),
    }


def align_to_previous(
    labels: np.ndarray, centers: np.ndarray, previous: np.ndarray, k: int, previous_k: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A new round's labels and centres renumbered to match ``previous``, and a report:
    the fraction of rows keeping their id before and after, and the agreement."""
    mapping = alignment_map(labels, previous, k)
    keep = labels >= 0
    before = float((labels[keep] == previous[keep]).mean()) if keep.any() else 0.0
    aligned = labels.copy()
    aligned[keep] = mapping[labels[keep]]
    inv = np.empty_like(mapping)
    inv[mapping] = np.arange(k)
    both = (aligned >= 0) & (previous >= 0)
    report = {
        "previous_k": int(previous_k),
        "same_id_fraction_before": before,
        "same_id_fraction": float((aligned[both] == previous[both]).mean()) if both.any() else 0.0,
        "vs_previous": agreement_metrics(aligned, previous),
    }
    return aligned, centers[inv], report
