"""The inter-class confusion degree M (paper Eq. 2), its scaling to [0, 2] (Eq. 3),
the report of ``diccae confusion`` and its pictures.

Public API (what other packages import, from here):

* :func:`confusion_degree` - M of (N, D) features in memory (NumPy, CuPy or torch);
* :func:`confusion_from_store` - M of a store's feature view, streamed in two passes;
* :class:`ConfusionResult` - M, radii, centroids, distances, counts, stats, top pairs;
* :func:`scale_confusion`, :func:`confusion_stats`, :func:`off_diagonal_values` - Eq. 3
  and the distribution of M (the trainer's weights and its feature-quality measure);
* :func:`run_confusion_analysis` - compute and write the report (``diccae confusion``);
* :func:`plot_confusion_histogram`, :func:`plot_confusion_heatmap`,
  :func:`plot_confusion_circles` - the PNGs (matplotlib imported on first use).

Inside, by idea: ``result`` (numbers, scaling, stats) <- ``kernels`` (array maths once
against NumPy/CuPy, ``cuda`` its GPU sources) <- ``engine`` (the two passes over blocks
shared by ``blocks``' workers) <- ``api`` (block sources) <- ``report`` -> ``plots``.
The package imports only featstore.errors, featstore.progress, featstore.common and the
store's public modules (featstore.store.core, featstore.store.features, and
featstore.labels.files for label files); the rich rendering is in cli/cmd_confusion.py.
"""

from featstore.confusion.api import confusion_degree, confusion_from_store
from featstore.confusion.plots import (
    plot_confusion_circles,
    plot_confusion_heatmap,
    plot_confusion_histogram,
)
from featstore.confusion.report import run_confusion_analysis
from featstore.confusion.result import (
    ConfusionResult,
    confusion_stats,
    off_diagonal_values,
    scale_confusion,
)

__all__ = [
    "ConfusionResult",
    "confusion_degree",
    "confusion_from_store",
    "confusion_stats",
    "off_diagonal_values",
    "plot_confusion_circles",
    "plot_confusion_heatmap",
    "plot_confusion_histogram",
    "run_confusion_analysis",
    "scale_confusion",
]
