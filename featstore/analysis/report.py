"""What ``diccae audit`` writes: audit.csv, review.md, audit.json and flags_per_class.png
(:mod:`featstore.analysis.plots`), and :func:`audit_store`, the function the command calls.

Every file is written atomically (temp file + rename), so an interrupted audit never
leaves a half-written table that looks complete.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.audit import FLAGS, AuditConfig, AuditResult, config_json
from featstore.analysis.plots import plot_flags_per_class
from featstore.common.fileio import atomic_write_path
from featstore.progress import ProgressFn
from featstore.store.core import FeatureStore

CSV_CHUNK = 100_000
#: what each flag means, for review.md and the demo report
FLAG_HELP = {
    "likely_mislabeled": "no model of any view picks the label; the fused view names another class",
    "modality_disagreement": "audio names one class, video another (probe and centroid agree in each)",
    "ambiguous": "inside the 95 % circles of two or more classes (the confusion degree's plane)",
    "outlier": "far from every class centroid in some view (robust z-score over all rows)",
}


def _name(result: AuditResult, idx: np.ndarray) -> np.ndarray:
    names = np.asarray([*result.class_names, ""], dtype=object)
    return names[np.where(idx >= 0, idx, len(result.class_names))]


def _value(result: AuditResult, idx: np.ndarray) -> np.ndarray:
    """Class index -> label value (-1 stays -1)."""
    vals = np.asarray([*result.classes.tolist(), -1], dtype=np.int64)
    return vals[np.where(idx >= 0, idx, len(result.classes))]


def csv_columns(result: AuditResult) -> list[str]:
    cols = ["row", "id", "path", "split", "label", "class_name", "audited"]
    for v in result.views:
        cols += [
            f"{v}_centroid",
            f"{v}_centroid_margin",
            f"{v}_probe",
            f"{v}_probe_margin",
            f"{v}_outlier_score",
        ]
    cols += [
        "suggested_class",
        "suggested_class_name",
        "audio_class",
        "video_class",
        "n_circles",
        "circle_class_a",
        "circle_class_b",
        "mislabel_score",
        "disagreement_score",
        "outlier_z",
        *FLAGS,
    ]
    return cols


def _fmt_float(a: np.ndarray, digits: int = 5) -> list[Any]:
    """Floats rounded to ``digits`` significant digits (short reprs in the CSV), None for
    NaN/inf so the cell is empty.  Vectorised rounding; about 10x faster than formatting
    each value as a string."""
    x = a.astype(np.float64)
    ok = np.isfinite(x) & (x != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[ok]))))
    x[ok] = np.round(x[ok] * scale) / scale
    out = x.astype(object)
    out[~np.isfinite(x)] = None
    return out.tolist()


def _csv_block(result: AuditResult, store: FeatureStore, s: int, e: int) -> list[tuple[Any, ...]]:
    c = result.columns
    sl = slice(s, e)
    cols: list[list[Any]] = [
        list(range(s, e)),
        store.ids[sl].tolist(),
        store.paths[sl].tolist(),
        store.splits[sl].tolist(),
        c["label"][sl].tolist(),
        _name(result, c["class_index"][sl]).tolist(),
        result.audited[sl].astype(np.int8).tolist(),
    ]
    for v in result.views:
        cols += [
            _value(result, c[f"{v}_centroid"][sl]).tolist(),
            _fmt_float(c[f"{v}_centroid_margin"][sl]),
            _value(result, c[f"{v}_probe"][sl]).tolist(),
            _fmt_float(c[f"{v}_probe_margin"][sl]),
            _fmt_float(c[f"{v}_outlier_score"][sl]),
        ]
    sug = c["suggested_class_index"][sl]
    cols += [
        _value(result, sug).tolist(),
        _name(result, sug).tolist(),
        _value(result, c["audio_class_index"][sl]).tolist(),
        _value(result, c["video_class_index"][sl]).tolist(),
        c["n_circles"][sl].tolist(),
        _value(result, c["circle_class_a"][sl]).tolist(),
        _value(result, c["circle_class_b"][sl]).tolist(),
        _fmt_float(c["mislabel_score"][sl]),
        _fmt_float(c["disagreement_score"][sl]),
        _fmt_float(c["outlier_z"][sl]),
    ]
    cols += [c[f][sl].astype(np.int8).tolist() for f in FLAGS]
    return list(zip(*cols, strict=True))


def write_csv(result: AuditResult, store: FeatureStore, path: Path) -> Path:
    def write(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(csv_columns(result))
            for s in range(0, store.n_rows, CSV_CHUNK):
                w.writerows(_csv_block(result, store, s, min(store.n_rows, s + CSV_CHUNK)))

    return atomic_write_path(path, write)


def _pair_counts(
    a: np.ndarray, b: np.ndarray, result: AuditResult, top: int
) -> list[dict[str, Any]]:
    ok = (a >= 0) & (b >= 0)
    if not ok.any():
        return []
    C = len(result.classes)
    counts = np.bincount(a[ok].astype(np.int64) * C + b[ok], minlength=C * C)
    order = np.argsort(-counts, kind="stable")[:top]
    return [
        {"a": result.class_names[k // C], "b": result.class_names[k % C], "count": int(counts[k])}
        for k in order
        if counts[k] > 0
    ]


def audit_json(result: AuditResult, *, top: int = 20) -> dict[str, Any]:
    """Counts per flag and class, the class pairs behind the flags, metrics and settings."""
    c = result.columns
    cls = c["class_index"]
    C = len(result.classes)
    per_class = []
    for i in range(C):
        m = cls == i
        per_class.append(
            {
                "label": int(result.classes[i]),
                "name": result.class_names[i],
                "rows": int(m.sum()),
                **{f: int((c[f] & m).sum()) for f in FLAGS},
            }
        )
    dis = c["modality_disagreement"]
    mis = c["likely_mislabeled"]
    return {
        "store": result.store_path,
        "store_fingerprint": result.store_fingerprint,
        "labels": result.labels_source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": int(cls.size),
        "rows_audited": int(result.audited.sum()),
        "rows_labelled": int(((cls >= 0) & result.audited).sum()),
        "flags": result.counts(),
        "flag_meaning": FLAG_HELP,
        "per_class": per_class,
        "mislabel_pairs": _pair_counts(
            np.where(mis, cls, -1), c["suggested_class_index"], result, top
        ),
        "disagreement_pairs": _pair_counts(
            np.where(dis, c["audio_class_index"], -1), c["video_class_index"], result, top
        ),
        "metrics": result.metrics,
        "config": config_json(result.config),
    }


def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def review_markdown(result: AuditResult, store: FeatureStore, *, top: int = 20) -> str:
    """The top ``top`` clips per flag, ranked, with paths and the classes involved."""
    c = result.columns
    name = lambda idx: result.class_names[idx] if idx >= 0 else "-"  # noqa: E731
    counts = result.counts()
    lines = [
        f"# Audit review: {store.path}",
        "",
        f"{int(result.audited.sum()):,} clips audited with views {', '.join(result.views)}; "
        f"labels: {result.labels_source or 'given'}. Full table: `audit.csv`; counts: `audit.json`.",
        "",
    ]
    specs = {
        "likely_mislabeled": (
            "mislabel_score",
            ["label", "suggested", "score"],
            lambda r: [
                name(c["class_index"][r]),
                name(c["suggested_class_index"][r]),
                f"{c['mislabel_score'][r]:.3g}",
            ],
        ),
        "modality_disagreement": (
            "disagreement_score",
            ["label", "audio says", "video says", "score"],
            lambda r: [
                name(c["class_index"][r]),
                name(c["audio_class_index"][r]),
                name(c["video_class_index"][r]),
                f"{c['disagreement_score'][r]:.3g}",
            ],
        ),
        "ambiguous": (
            "n_circles",
            ["label", "circles", "most inside"],
            lambda r: [
                name(c["class_index"][r]),
                str(int(c["n_circles"][r])),
                f"{name(c['circle_class_a'][r])}, {name(c['circle_class_b'][r])}",
            ],
        ),
        "outlier": (
            "outlier_z",
            ["label", "nearest class", "robust z"],
            lambda r: [
                name(c["class_index"][r]),
                name(int(c[f"{result.views[-1]}_centroid"][r])),
                f"{c['outlier_z'][r]:.3g}",
            ],
        ),
    }
    for flag in FLAGS:
        key, heads, cells = specs[flag]
        rows = np.flatnonzero(c[flag])
        lines += [f"## {flag} ({counts[flag]:,})", "", f"_{FLAG_HELP[flag]}_", ""]
        if rows.size == 0:
            lines += ["No clips flagged.", ""]
            continue
        score = np.nan_to_num(c[key][rows].astype(np.float64), nan=-np.inf)
        rows = rows[np.argsort(-score, kind="stable")[:top]]
        lines += [
            "| # | row | id | path | " + " | ".join(heads) + " |",
            "|---|---|---|---|" + "---|" * len(heads),
        ]
        for rank, r in enumerate(rows, 1):
            lines.append(
                f"| {rank} | {r} | {_md(store.ids[r])} | {_md(store.paths[r])} | "
                + " | ".join(_md(x) for x in cells(r))
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def write_audit(
    result: AuditResult, store: FeatureStore, out_dir: str | Path, *, top: int | None = None
) -> dict[str, Any]:
    """Write the four files into ``out_dir``; returns audit.json's content plus ``files``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = result.config.top if top is None else top
    files = {
        "audit.csv": out / "audit.csv",
        "review.md": out / "review.md",
        "audit.json": out / "audit.json",
        "flags_per_class.png": out / "flags_per_class.png",
    }
    write_csv(result, store, files["audit.csv"])
    text = review_markdown(result, store, top=top)
    atomic_write_path(files["review.md"], lambda p: p.write_text(text))
    doc = audit_json(result, top=top)
    doc["files"] = {k: str(v) for k, v in files.items()}
    atomic_write_path(
        files["audit.json"], lambda p: p.write_text(json.dumps(doc, indent=1, allow_nan=False))
    )
    plot_flags_per_class(result, files["flags_per_class.png"])
    return doc


def audit_store(
    store: FeatureStore | str | Path,
    *,
    out_dir: str | Path,
    labels_path: str | Path | None = None,
    ground_truth: bool = False,
    config: AuditConfig | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """What ``diccae audit`` calls: labels from a label file or the store, audit, write.

    Returns audit.json's content (with ``files``) and the :class:`AuditResult` under
    ``"result"``.
    """
    from featstore.analysis.audit import class_names_for, load_labels, run_audit
    from featstore.analysis.dataset import as_store

    store = as_store(store)
    labels, source, gt = load_labels(store, labels_path, ground_truth)
    values = np.unique(labels[labels >= 0])
    result = run_audit(
        store,
        labels,
        config=config,
        class_names=class_names_for(store, values, gt),
        progress=progress,
        labels_source=source,
    )
    doc = write_audit(result, store, out_dir)
    doc["result"] = result
    return doc
