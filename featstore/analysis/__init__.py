"""Offline analysis of stored embeddings (docs/analysis.md).

Public API (what other packages import, from here):

* :func:`open_dataset` / :func:`store_table`: lazy xarray and pandas views (the
  optional ``[analysis]`` extra);
* :func:`run_audit` -> :class:`AuditResult` (settings :class:`AuditConfig`, flag names
  :data:`FLAGS`), :func:`write_audit`, and :func:`audit_store` (labels + audit + files,
  what ``diccae audit`` calls); :func:`audit_summary_markdown` (the demo report's section);
* :class:`ClassProbe`: streamed nearest-centroid + K-fold ridge-probe models of one view;
* :func:`nearest_neighbors` (:class:`NeighborsConfig`): faiss neighbours (``diccae neighbors``);
* :func:`plot_map` (:class:`MapConfig`): a 2-D picture of the store (``diccae map``).

Inside, by idea: ``stream`` (all views of a block from one read) -> ``probe`` (the class
models) -> ``audit`` (two passes) -> ``flags`` (the four flags) -> ``report`` (the files)
-> ``plots``, ``summary``; ``dataset``, ``neighbors`` and ``mapping`` stand alone.  The
package imports featstore.errors, featstore.progress, featstore.common (fileio, prefetch),
the store's public modules (featstore.store.core, .features), featstore.labels.files and
the confusion degree (:func:`featstore.confusion.confusion_degree`); no rich - the
commands in cli/cmd_audit.py, cmd_neighbors.py and cmd_map.py render.
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
