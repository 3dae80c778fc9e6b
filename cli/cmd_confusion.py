"""``diccae confusion``: inter-class confusion degree of a store (paper Eq. 2, Eq. 3, Fig. 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from featstore.errors import InputError


def _parse_components(value: str) -> int | None:
    if value.strip().lower() in ("none", "full", "all"):
        return None
    try:
        k = int(value)
    except ValueError as exc:
        raise InputError(
            f"--n-components must be a positive integer or 'none', got {value!r}"
        ) from exc
    if k < 1:
        raise InputError(f"--n-components must be >= 1 (or 'none'), got {k}")
    return k


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def print_report(report: dict[str, Any], console: Console) -> None:
    """The stats and the top pairs as rich tables."""
    s = report["stats"]
    stats = Table(title="Confusion degree M_ij over class pairs", show_header=True)
    stats.add_column("statistic")
    stats.add_column("value", justify="right")
    rows = [
        ("classes (present)", f"{s['n_classes_present']} of {s['n_classes']}"),
        ("rows used", f"{s['rows_used']:,}"),
        ("class pairs", f"{s['n_pairs']:,}"),
        ("mean", _fmt(s["mean"])),
        ("variance", _fmt(s["var"])),
        ("median", _fmt(s["median"])),
        ("95% quantile", _fmt(s["quantiles"].get("0.95"))),
        ("max", _fmt(s["max"])),
        (
            "pairs overlapping (M > 0)",
            _fmt(None if s["fraction_overlapping"] is None else 100 * s["fraction_overlapping"], 3)
            + " %",
        ),
        ("coincident centroid pairs", str(s["n_coincident"])),
        (
            "PCA components",
            "none (full space)" if s["n_components"] is None else str(s["n_components"]),
        ),
        (
            "variance kept by PCA",
            "-"
            if s["explained_variance_ratio"] is None
            else f"{100 * s['explained_variance_ratio']:.1f} %",
        ),
    ]
    if "compare" in s:
        c = s["compare"]
        rows += [
            ("compare: mean", f"{_fmt(c['mean'])} (change {_fmt(c['delta_mean'])})"),
            ("compare: variance", f"{_fmt(c['var'])} (change {_fmt(c['delta_var'])})"),
        ]
    for k, v in rows:
        stats.add_row(k, escape(str(v)))
    console.print(stats)
    pairs = Table(title=f"Top {len(report['top_pairs'])} most confused class pairs")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("#", "right"),
        ("class i", "left"),
        ("class j", "left"),
        ("M_ij", "right"),
        ("M̂_ij", "right"),
        ("r_i", "right"),
        ("r_j", "right"),
        ("d_ij", "right"),
    )
    for col, just in columns:
        pairs.add_column(col, justify=just)
    for p in report["top_pairs"]:
        pairs.add_row(
            str(p["rank"]),
            escape(str(p["name_i"])),
            escape(str(p["name_j"])),
            _fmt(p["M_ij"]),
            _fmt(p["M_hat_ij"], 3),
            _fmt(p["r_i"]),
            _fmt(p["r_j"]),
            _fmt(p["d_ij"]) + (" (coincident)" if p["coincident"] else ""),
        )
    console.print(pairs)
    console.print(
        escape(
            f"wrote {len(report['files'])} files to {Path(report['files']['stats.json']).parent}"
        )
    )


def confusion_command(
    store: Path = typer.Argument(..., help="Feature store directory."),
    labels: Path = typer.Option(None, "--labels", help="Label file (.npy) from `diccae cluster`."),
    ground_truth: bool = typer.Option(
        False, "--ground-truth", help="Use the store's ground-truth labels instead."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output directory for the matrices, stats and pictures."
    ),
    features: str = typer.Option(
        "audio+video",
        "--features",
        help="audio | video | audio+video | any feature array in the store | RUN/fused (a training run's fused features).",
    ),
    split: str = typer.Option(
        None, "--split", help="Only rows of this split (train | val | test ...)."
    ),
    n_components: str = typer.Option(
        "2",
        "--n-components",
        help="PCA components (the paper's circles: 2), or 'none' for the full space.",
    ),
    coverage: float = typer.Option(
        0.95,
        "--coverage",
        min=0.0,
        max=1.0,
        help="Share of each class the radius covers (quantile).",
    ),
    compare: Path = typer.Option(
        None,
        "--compare",
        help="Another `diccae confusion` output to overlay (e.g. before DICCAE).",
    ),
    top: int = typer.Option(
        20, "--top", min=1, help="How many most-confused pairs to list and plot."
    ),
    device: str = typer.Option(
        "cpu", "--device", help="cpu | cuda | auto (cuda runs the CuPy kernels)."
    ),
) -> None:
    """Inter-class confusion degree: PCA, 95% circles, M_ij = max(0, r_i + r_j - d_ij) / d_ij.

    Writes confusion.npy, confusion_scaled.npy (Eq. 3, [0, 2]), classes.json, stats.json,
    top_pairs.csv, histogram.png, heatmap.png and circles.png into --out.
    """
    from cli._util import one_label_source, progress_wanted
    from cli.progress import rich_progress
    from featstore.common.fileio import ensure_output_dir
    from featstore.confusion import run_confusion_analysis

    one_label_source(labels, ground_truth)
    components = _parse_components(n_components)
    ensure_output_dir(
        out, store=store
    )  # before the analysis: not a file, writable, outside the store
    console = Console()
    with rich_progress(progress_wanted(console), transient=True) as progress:
        report = run_confusion_analysis(
            store,
            labels_path=labels,
            ground_truth=ground_truth,
            out_dir=out,
            features=features,
            split=split,
            n_components=components,
            coverage=coverage,
            compare=compare,
            top=top,
            device=device,
            progress=progress,
        )
    print_report(report, console)


def register(app: typer.Typer) -> None:
    app.command("confusion")(confusion_command)
