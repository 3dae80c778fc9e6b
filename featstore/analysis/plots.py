"""The audit's picture: share of each class's clips under each flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featstore.analysis.audit import FLAGS, AuditResult
from featstore.common.fileio import atomic_write_path


def plot_flags_per_class(result: AuditResult, path: Path, *, max_classes: int = 30) -> Path:
    """Share of each class's clips under each flag; the classes with most flags first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.columns
    cls = c["class_index"]
    C = len(result.classes)
    n = np.maximum(np.bincount(cls[cls >= 0], minlength=C), 1)
    share = np.stack([np.bincount(cls[(cls >= 0) & c[f]], minlength=C) / n for f in FLAGS])
    order = np.argsort(-share.sum(axis=0), kind="stable")[:max_classes][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(order)))
    h = 0.8 / len(FLAGS)
    for i, f in enumerate(FLAGS):
        ax.barh(np.arange(len(order)) + (i - 1.5) * h, 100 * share[i, order], height=h, label=f)
    ax.set_yticks(np.arange(len(order)), [result.class_names[k] for k in order], fontsize=8)
    ax.set_xlabel("% of the class's clips flagged")
    title = "Audit flags per class" + (
        f" ({max_classes} most flagged of {C})" if C > max_classes else ""
    )
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        return atomic_write_path(path, lambda p: fig.savefig(p, dpi=120))
    finally:
        plt.close(fig)
