"""``diccae map``: a 2-D scatter of the store (PCA, or UMAP when installed)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def map_(
    store: Path = typer.Argument(..., help="Feature store directory."),
    out: Path = typer.Option(
        ..., "--out", help="PNG to write (a .json summary is written beside it)."
    ),
    labels: Path = typer.Option(
        None, "--labels", help="Label file (.npy); default: the store's labels."
    ),
    method: str = typer.Option("pca", "--method", help="pca | umap (needs umap-learn installed)."),
    color_by: str = typer.Option("class", "--color-by", help="class | flag (needs --audit)."),
    audit: Path = typer.Option(
        None, "--audit", help="Output folder of `diccae audit` for --color-by flag."
    ),
    features: str = typer.Option(
        "audio+video",
        "--features",
        help="audio | video | audio+video | any feature array in the store.",
    ),
    max_points: int = typer.Option(
        20_000, "--max-points", min=2, help="Points drawn, sampled evenly per class."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the subsample (and UMAP)."),
) -> None:
    """2-D map of the clips coloured by class or by audit flag, subsampled evenly per class."""
    from featstore.analysis.mapping import MapConfig, plot_map

    cfg = MapConfig(
        method=method, features=features, color_by=color_by, max_points=max_points, seed=seed
    )
    doc = plot_map(store, out, labels_path=labels, audit_dir=audit, config=cfg)
    Console().print(
        f"wrote {doc['png']} ({doc['points']:,} of {doc['usable_rows']:,} clips, "
        f"{doc['config']['method'].upper()}) and {Path(doc['png']).with_suffix('.json').name}"
    )


def register(app: typer.Typer) -> None:
    app.command("map")(map_)
