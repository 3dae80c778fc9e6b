"""Label files: the hand-off between clustering and training.

``files`` (write/read a versioned ``LABELS.npy`` + ``.json`` with refusal of a wrong or
damaged file, the cluster-size plot) -> ``align`` (renumber a new round to match the
previous one; NMI/ARI/purity) -> ``make`` (``cluster_store``: store -> k-means -> aligned
label file, on one machine or Dask).  May import featstore.store, featstore.kmeans,
featstore.common, featstore.progress and featstore.errors.

Public API: :func:`cluster_store`, :func:`cluster_store_dask`, :class:`ClusterResult`,
:func:`read_label_file`, :func:`write_label_file`, :class:`LabelFileMeta`,
:func:`align_labels`, :func:`alignment_map`, :func:`agreement_metrics`,
:func:`cluster_sizes`, :func:`plot_cluster_sizes`.
"""

from __future__ import annotations

from featstore.labels.align import agreement_metrics, align_labels, alignment_map
from featstore.labels.files import (
    LabelFileMeta,
    cluster_sizes,
    meta_path,
    plot_cluster_sizes,
    read_label_file,
    write_label_file,
)
from featstore.labels.make import ClusterResult, DaskTarget, cluster_store, cluster_store_dask

__all__ = [
    "ClusterResult",
    "DaskTarget",
    "LabelFileMeta",
    "agreement_metrics",
    "align_labels",
    "alignment_map",
    "cluster_sizes",
    "cluster_store",
    "cluster_store_dask",
    "meta_path",
    "plot_cluster_sizes",
    "read_label_file",
    "write_label_file",
]
