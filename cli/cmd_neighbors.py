"""``diccae neighbors``: the nearest clips of a clip (faiss; exact or a saved IVF index)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from cli._util import progress_wanted
from cli.progress import rich_progress


def print_neighbors(res: dict[str, Any], console: Console) -> None:
    q = res["query"]
    how = res["method"] + (
        ""
        if res["index"] is None
        else f", index {res['index']}" + (" (rebuilt)" if res["rebuilt"] else "")
    )
    table = Table(
        title=f"Nearest clips to {q['id']} ({q['class_name'] or 'unlabelled'}) by {res['features']}; {how}"
    )
    for col in ("#", "id", "class", "distance", "path"):
        table.add_column(col, justify="right" if col in ("#", "distance") else "left")
    for n in res["neighbors"]:
        table.add_row(
            str(n["rank"]), n["id"], n["class_name"] or "-", f"{n['distance']:.4g}", n["path"]
        )
    console.print(table)


def neighbors(
    store: Path = typer.Argument(..., help="Feature store directory."),
    clip_id: str = typer.Option(None, "--id", help="Clip id in the store."),
    path: str = typer.Option(None, "--path", help="Media path of a clip in the store."),
    k: int = typer.Option(10, "--k", min=1, help="How many neighbours."),
    features: str = typer.Option(
        "audio+video",
        "--features",
        help="audio | video | audio+video | any feature array in the store.",
    ),
    method: str = typer.Option(
        "auto", "--method", help="auto (exact up to --exact-max-rows, else IVF) | exact | ivf."
    ),
    exact_max_rows: int = typer.Option(
        200_000,
        "--exact-max-rows",
        min=1,
        help="Largest store searched exactly under --method auto.",
    ),
    nprobe: int = typer.Option(32, "--nprobe", min=1, help="IVF lists visited per query."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the saved IVF index."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Nearest clips (L2 in the feature view) with ids, paths, labels and distances.

    Large stores use an IVF index saved beside the store (STORE.neighbors/), rebuilt when the
    store's fingerprint, finished rows or feature arrays change.
    """
    from featstore.analysis.neighbors import NeighborsConfig, nearest_neighbors

    cfg = NeighborsConfig(
        k=k,
        features=features,
        method=method,
        exact_max_rows=exact_max_rows,
        nprobe=nprobe,
        rebuild=rebuild,
    )
    console = Console()
    with rich_progress(progress_wanted(console, json_output=as_json), transient=True) as progress:
        res = nearest_neighbors(store, clip_id=clip_id, path=path, config=cfg, progress=progress)
    if as_json:
        typer.echo(json.dumps(res, indent=1))
    else:
        print_neighbors(res, console)


def register(app: typer.Typer) -> None:
    app.command("neighbors")(neighbors)
