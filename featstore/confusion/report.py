"""The files of ``diccae confusion``: matrices, JSON, CSV and pictures, written all or nothing.

:func:`run_confusion_analysis` is what the command calls (the CLI renders the returned
data).  Every file is written into a staging folder beside ``--out`` and moved in only
when all are whole, so a full disk or a crash leaves no half-written report.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from featstore.common.fileio import atomic_write_path
from featstore.confusion import plots
from featstore.confusion.api import confusion_from_store
from featstore.confusion.result import ConfusionResult, confusion_stats, finite_or_none
from featstore.errors import InputError
from featstore.progress import ProgressFn

#: the files of one report, in the order they are written
REPORT_FILES = (
    "confusion.npy",
    "confusion_scaled.npy",
    "classes.json",
    "stats.json",
    "top_pairs.csv",
    "histogram.png",
    "heatmap.png",
    "circles.png",
)
#: the columns of top_pairs.csv
PAIR_COLUMNS = (
    "rank",
    "class_i",
    "name_i",
    "class_j",
    "name_j",
    "M_ij",
    "M_hat_ij",
    "r_i",
    "r_j",
    "d_ij",
    "n_i",
    "n_j",
    "coincident",
)


def _class_names(values: np.ndarray, store_names: Sequence[str], ground_truth: bool) -> list[str]:
    if ground_truth:
        return [
            store_names[v] if 0 <= v < len(store_names) else f"class {v}" for v in values.tolist()
        ]
    return [f"cluster {v}" for v in values.tolist()]


def load_compare(folder: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The M (and stats) of an earlier ``diccae confusion`` output folder."""
    folder = Path(folder)
    f = folder / "confusion.npy"
    if not f.is_file():
        raise InputError(
            f"--compare {folder}: no confusion.npy there (is it a `diccae confusion` output folder?)"
        )
    try:
        M = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{f}: cannot read as a NumPy array: {exc}") from exc
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise InputError(f"{f}: expected a square (C, C) matrix, got shape {M.shape}")
    stats: dict[str, Any] = {}
    if (folder / "stats.json").is_file():
        try:
            stats = json.loads((folder / "stats.json").read_text())
        except ValueError as exc:
            raise InputError(f"{folder / 'stats.json'}: not valid JSON: {exc}") from exc
    return M, stats


def _labels_of(
    store: Any, labels_path: str | Path | None, ground_truth: bool
) -> tuple[np.ndarray, str, dict[str, Any] | None]:
    """(per-row labels, their source, the label file's metadata or None)."""
    if ground_truth:
        labels = store.labels
        if not (labels >= 0).any():
            raise InputError(
                f"{store.path} has no ground-truth labels (every row is -1); use --labels"
            )
        return labels, "ground-truth", None
    from featstore.labels.files import read_label_file

    if labels_path is None:
        raise InputError("give exactly one label source: a label file (--labels) or --ground-truth")
    labels, meta = read_label_file(labels_path, store)
    return labels, str(labels_path), meta.to_json() if hasattr(meta, "to_json") else None


def _classes_doc(result: ConfusionResult, names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "label": int(v),
            "name": names[i],
            "count": int(result.counts[i]),
            "radius": finite_or_none(result.radii[i]),
            "centroid": [finite_or_none(c) for c in result.centroids[i]][:8],
        }
        for i, v in enumerate(result.classes.tolist())
    ]


def _pairs_doc(
    result: ConfusionResult, names: list[str], M_hat: np.ndarray, top: int
) -> list[dict[str, Any]]:
    M = result.M
    return [
        {
            "rank": rank,
            "class_i": int(result.classes[i]),
            "name_i": names[i],
            "class_j": int(result.classes[j]),
            "name_j": names[j],
            "M_ij": float(M[i, j]),
            "M_hat_ij": float(M_hat[i, j]),
            "r_i": float(result.radii[i]),
            "r_j": float(result.radii[j]),
            "d_ij": float(result.distances[i, j]),
            "n_i": int(result.counts[i]),
            "n_j": int(result.counts[j]),
            "coincident": bool(result.distances[i, j] <= result.coincident_tol),
        }
        for rank, (i, j) in enumerate(result.top_pairs(top), start=1)
    ]


def _compare_doc(
    stats: dict[str, Any], compare: str | Path, compare_M: np.ndarray, compare_stats: dict
) -> dict[str, Any]:
    other = confusion_stats(compare_M)

    def delta(key: str) -> float | None:
        return None if None in (stats[key], other[key]) else stats[key] - other[key]

    return {
        "dir": str(compare),
        "mean": other["mean"],
        "var": other["var"],
        "delta_mean": delta("mean"),
        "delta_var": delta("var"),
        "parameters": compare_stats.get("parameters"),
    }


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(PAIR_COLUMNS))
        w.writeheader()
        w.writerows(rows)


def run_confusion_analysis(
    store: Any,
    *,
    labels_path: str | Path | None = None,
    ground_truth: bool = False,
    out_dir: str | Path,
    features: str = "audio+video",
    split: str | None = None,
    n_components: int | None = 2,
    coverage: float = 0.95,
    compare: str | Path | None = None,
    top: int = 20,
    device: str = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """What ``diccae confusion`` calls: compute M for a store and write the report.

    Labels come from a label file (``labels_path``, checked against the store's
    fingerprint) or from the store's ground-truth ``label`` array.  Writes into
    ``out_dir``: confusion.npy, confusion_scaled.npy, classes.json, stats.json,
    top_pairs.csv, histogram.png (overlaid with ``compare``'s M), heatmap.png and
    circles.png.  ``progress`` receives the two passes' updates.  Returns
    ``{"stats", "top_pairs", "files", "result"}``.
    """
    from featstore.store.core import FeatureStore

    if (labels_path is None) == (not ground_truth):
        raise InputError("give exactly one label source: a label file (--labels) or --ground-truth")
    if top < 1:
        raise InputError(f"top must be >= 1, got {top}")
    if not isinstance(store, FeatureStore):
        store = FeatureStore.open(store)
    compare_M, compare_stats = load_compare(compare) if compare is not None else (None, {})
    labels, source, label_meta = _labels_of(store, labels_path, ground_truth)

    result = confusion_from_store(
        store,
        labels,
        features=features,
        split=split,
        n_components=n_components,
        coverage=coverage,
        device=device,
        keep_plane=True,
        progress=progress,
    )
    names = _class_names(result.classes, store.class_names, ground_truth)
    M, M_hat = result.M, result.scaled()
    pairs = _pairs_doc(result, names, M_hat, top)
    stats = result.stats()
    stats["parameters"] = {
        "store": str(store.path),
        "store_fingerprint": store.fingerprint,
        "features": features,
        "split": split,
        "labels": source,
        "label_file": label_meta,
        "n_components": n_components,
        "coverage": coverage,
        "device": device,
        "backend": result.backend,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if compare_M is not None and compare is not None:
        stats["compare"] = _compare_doc(stats, compare, compare_M, compare_stats)

    out = Path(out_dir)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        files = {name: stage / name for name in REPORT_FILES}
        classes_doc = _classes_doc(result, names)
        atomic_write_path(
            files["confusion.npy"], lambda p: np.save(p, M.astype(np.float64), allow_pickle=False)
        )
        atomic_write_path(
            files["confusion_scaled.npy"], lambda p: np.save(p, M_hat, allow_pickle=False)
        )
        atomic_write_path(
            files["classes.json"], lambda p: p.write_text(json.dumps(classes_doc, indent=1))
        )
        atomic_write_path(files["top_pairs.csv"], lambda p: _write_csv(p, pairs))
        atomic_write_path(
            files["stats.json"],
            lambda p: p.write_text(json.dumps(stats, indent=1, allow_nan=False)),
        )
        this_name = out.name or "this run"
        if compare_M is not None:
            other_name = Path(str(compare)).name or "compare"
            if other_name == this_name:
                other_name = f"{other_name} (compare)"
            plots.plot_confusion_histogram(
                [compare_M, M], [other_name, this_name], files["histogram.png"]
            )
        else:
            plots.plot_confusion_histogram([M], [this_name], files["histogram.png"])
        plots.plot_confusion_heatmap(M, names, files["heatmap.png"], top=top)
        plots.plot_confusion_circles(result, names, files["circles.png"])
        out.mkdir(parents=True, exist_ok=True)
        for name, path in list(files.items()):
            os.replace(path, out / name)
            files[name] = out / name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {
        "stats": stats,
        "top_pairs": pairs,
        "files": {k: str(v) for k, v in files.items()},
        "result": result,
    }
