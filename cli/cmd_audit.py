"""``diccae audit``: per-clip flags for label noise, modality disagreement, ambiguity, outliers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli._util import one_label_source, parse_names, progress_wanted
from cli.progress import rich_progress


def print_audit(doc: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Audit of {doc['rows_audited']:,} clips")
    table.add_column("flag")
    table.add_column("clips", justify="right")
    table.add_column("share", justify="right")
    n = max(doc["rows_audited"], 1)
    for flag, count in doc["flags"].items():
        table.add_row(flag, f"{count:,}", f"{100 * count / n:.1f} %")
    console.print(table)
    views = Table(title="Class models per view (cross-validated against the labels)")
    for col in ("view", "rows", "probe accuracy", "centroid accuracy"):
        views.add_column(col, justify="left" if col == "view" else "right")
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    for name, m in doc["metrics"]["views"].items():
        views.add_row(
            name, f"{m['rows']:,}", pct(m["probe_cv_accuracy"]), pct(m["centroid_loo_accuracy"])
        )
    console.print(views)
    console.print(
        f"wrote {', '.join(Path(p).name for p in doc['files'].values())} to "
        f"{Path(doc['files']['audit.json']).parent}"
    )


def audit(
    store: Path = typer.Argument(..., help="Feature store directory."),
    labels: Path = typer.Option(None, "--labels", help="Label file (.npy) from `diccae cluster`."),
    ground_truth: bool = typer.Option(
        False, "--ground-truth", help="Use the store's ground-truth labels."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output directory for audit.csv, review.md, audit.json, PNG."
    ),
    features: str = typer.Option(
        "audio,video,audio+video",
        "--features",
        help="Comma-separated views to audit: audio, video, audio+video, any feature array.",
    ),
    fused: str = typer.Option(
        None,
        "--fused",
        help="The view that names a suggested class and draws the 95% circles [default: audio+video].",
    ),
    folds: int = typer.Option(
        5, "--folds", min=2, help="Cross-validation folds of the linear probe."
    ),
    coverage: float = typer.Option(
        0.95,
        "--coverage",
        min=0.0,
        max=1.0,
        help="Circle coverage for `ambiguous` (the confusion degree's).",
    ),
    outlier_mads: float = typer.Option(
        6.0, "--outlier-mads", min=0.0, help="Robust z-score beyond which a clip is an outlier."
    ),
    top: int = typer.Option(20, "--top", min=1, help="Clips listed per flag in review.md."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
) -> None:
    """Audit every clip: likely_mislabeled, modality_disagreement, ambiguous, outlier.

    Per view, a nearest-centroid model and a cross-validated ridge probe predict each clip's
    class; the flags combine them (docs/analysis.md). Streams the store in chunks.
    """
    from featstore.analysis.audit import AuditConfig
    from featstore.analysis.report import audit_store

    one_label_source(labels, ground_truth)
    console = Console()
    cfg = AuditConfig(
        features=parse_names(features, "--features", "view"),
        n_folds=folds,
        seed=seed,
        coverage=coverage,
        ambiguity_features=fused,
        outlier_mads=outlier_mads,
        top=top,
    )
    with rich_progress(progress_wanted(console), transient=True) as progress:
        doc = audit_store(
            store,
            out_dir=out,
            labels_path=labels,
            ground_truth=ground_truth,
            config=cfg,
            progress=progress,
        )
    print_audit(doc, console)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
