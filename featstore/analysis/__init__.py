"""Offline analysis of stored embeddings (docs/analysis.md).

* :func:`open_dataset` / :func:`store_table`: lazy xarray and pandas views (the
  optional ``[analysis]`` extra);
* :func:`run_audit` / :func:`audit_store`: per-clip flags for label noise, modality
  disagreement, ambiguity and outliers (``diccae audit``);
* :func:`nearest_neighbors`: faiss neighbours of a clip (``diccae neighbors``);
* :func:`plot_map`: a 2-D picture of the store (``diccae map``).
"""

from featstore.analysis.audit import FLAGS, AuditConfig, AuditResult, run_audit
from featstore.analysis.dataset import open_dataset, store_table
from featstore.analysis.mapping import MapConfig, plot_map
from featstore.analysis.neighbors import NeighborsConfig, nearest_neighbors
from featstore.analysis.probe import ClassProbe
from featstore.analysis.report import audit_store, write_audit
from featstore.analysis.summary import audit_summary_markdown

__all__ = [
    "FLAGS",
    "AuditConfig",
    "AuditResult",
    "ClassProbe",
    "MapConfig",
    "NeighborsConfig",
    "audit_store",
    "audit_summary_markdown",
    "nearest_neighbors",
    "open_dataset",
    "plot_map",
    "run_audit",
    "store_table",
    "write_audit",
]
