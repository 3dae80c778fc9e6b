"""``diccae cluster`` (K-means pseudo-labels from a store) and ``diccae labels info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli._util import progress_wanted
from cli.progress import rich_progress
from featstore.errors import InputError
from featstore.kmeans import BACKENDS, DASK_BACKENDS, parse_bytes
from featstore.labels import DaskTarget, cluster_sizes, cluster_store, read_label_file
from featstore.store.features import is_path_feature


def parse_restart_sample(value: str | None) -> int | float | None:
    """``auto`` -> None, ``off``/``0`` -> 0, ``0.2`` -> fraction, ``40000`` -> rows."""
    if value is None or value.strip().lower() == "auto":
        return None
    v = value.strip().lower()
    if v in ("off", "none", "no", "0"):
        return 0
    try:
        rows = int(v)
    except ValueError:
        pass
    else:
        if rows < 0:
            raise InputError(
                f"--restart-sample must be auto, off, a positive row count or a fraction, got {value!r}"
            )
        return rows
    try:
        f = float(v)
    except ValueError as exc:
        raise InputError(
            f"--restart-sample must be auto, off, a row count or a fraction, got {value!r}"
        ) from exc
    if not 0 < f <= 1:
        raise InputError(f"--restart-sample fraction must be in (0, 1], got {value!r}")
    return f


def _bar(value: int, top: int, width: int = 30) -> str:
    return "█" * (int(round(width * value / top)) if top else 0)


def size_table(sizes: np.ndarray, *, bins: int = 10) -> Table:
    """Histogram of cluster sizes (how many clusters have how many rows)."""
    t = Table(title=f"Cluster sizes (K={sizes.size}; empty: {int((sizes == 0).sum())})")
    t.add_column("rows per cluster", justify="right")
    t.add_column("clusters", justify="right")
    t.add_column("")
    if sizes.size == 0:
        return t
    lo, hi = int(sizes.min()), int(sizes.max())
    edges = np.unique(np.linspace(lo, hi + 1, min(bins, hi - lo + 1) + 1).astype(int))
    counts, _ = np.histogram(sizes, bins=edges)
    top = int(counts.max()) if counts.size else 0
    for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True):
        t.add_row(f"{a}–{b - 1}" if b - 1 > a else f"{a}", str(int(c)), _bar(int(c), top))
    return t


def print_summary(summary: dict[str, Any], sizes: np.ndarray, console: Console) -> None:
    console.print(size_table(sizes))
    r = Table(
        title="Restarts"
        + (
            f" (on a {summary['restart_sample']}-row sample; best refined on all rows)"
            if summary["restart_sample"]
            else ""
        )
    )
    r.add_column("restart", justify="right")
    r.add_column("inertia", justify="right")
    r.add_column("")
    for i, v in enumerate(summary["inertias"]):
        r.add_row(str(i + 1), f"{v:.6g}", "best" if i == summary["best_restart"] else "")
    console.print(r)
    console.print(
        f"K={summary['k']}  inertia={summary['inertia']:.6g}  iterations={summary['n_iter']}  "
        f"backend={summary['backend']} ({summary['device']})  rows clustered={summary['n_clustered']:,} "
        f"of {summary['n_rows']:,}  {summary['seconds']:.1f} s"
    )
    ch = summary.get("choice")
    if ch:
        console.print(
            f"kernel: {ch['kernel']} ({ch['why_backend']}); restart sample {ch['why_restart_sample']}"
        )
    if summary.get("n_reseeded"):
        console.print(f"re-seeded {summary['n_reseeded']} empty cluster(s) from the farthest rows")
    ag = summary.get("agreement")
    if ag:
        console.print(
            f"agreement with the store's labels ({ag['n_rows']:,} rows, {ag['n_classes']} classes): "
            f"NMI {ag['nmi']:.4f}  ARI {ag['ari']:.4f}  purity {ag['purity']:.4f}"
        )
    al = summary.get("alignment")
    if al:
        console.print(
            f"aligned to {escape(str(summary['aligned_to']))}: same id for {100 * al['same_id_fraction']:.1f} % of rows "
            f"(before alignment {100 * al['same_id_fraction_before']:.1f} %)"
        )
    console.print(
        escape(
            f"wrote {summary['path']} (+ .json)"
            + (f" and {summary['plot']}" if summary.get("plot") else "")
        )
    )


def cluster(
    store: Path = typer.Argument(..., help="Feature store directory."),
    k: int = typer.Option(300, "--k", min=1, help="Number of clusters."),
    n_init: int = typer.Option(
        20, "--n-init", min=1, help="Random restarts; the lowest inertia is kept."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (all restarts derive from it)."),
    out: Path = typer.Option(
        ..., "--out", help="Label file to write (LABELS.npy; metadata in LABELS.npy.json)."
    ),
    features: str = typer.Option(
        "audio+video",
        "--features",
        help="audio | video | audio+video | any 2-D feature array in the store | "
        "RUN/fused (a training run's fused features, checked against the store).",
    ),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto | sklearn | faiss | numpy | cupy | torch | cuml (auto: cuML/torch on GPU, sklearn on CPU).",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    align_to: Path = typer.Option(
        None,
        "--align-to",
        help="Previous label file: renumber clusters to match it (Hungarian).",
    ),
    round_: int = typer.Option(
        None, "--round", help="Refinement round (default: previous + 1, or 0)."
    ),
    memory_budget: str = typer.Option(
        None,
        "--memory-budget",
        help="e.g. 2GB: stream from the store when the features do not fit.",
    ),
    restart_sample: str = typer.Option(
        "auto",
        "--restart-sample",
        help="auto | off | ROWS | FRACTION: run restarts on a sample, refine the best.",
    ),
    max_iter: int = typer.Option(
        100, "--max-iter", min=1, help="Lloyd iterations per run at most."
    ),
    tol: float = typer.Option(
        1e-4, "--tol", min=0.0, help="Stop when centres move less (relative to data variance)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Do not write the cluster-size PNG."),
    dask: str = typer.Option(
        None,
        "--dask",
        metavar="SCHEDULER",
        help="Cluster on a Dask cluster: scheduler address (tcp://host:8786) or local:N; "
        "cuML on GPU workers, map-reduce Lloyd on CPU workers. --device is then ignored.",
    ),
) -> None:
    """K-means pseudo-labels (K=300, best of 20 restarts by default) from a feature store."""
    known: tuple[str, ...] = BACKENDS
    if dask:  # Dask takes its own backends and the CPU block kernels
        known = tuple(dict.fromkeys(DASK_BACKENDS + BACKENDS))
    if backend not in known:  # a typo is bad input (2), not an unavailable backend (5)
        raise InputError(f"--backend {backend!r} is not one of {', '.join(known)}")
    if dask and is_path_feature(features):
        raise InputError(
            f"--dask reads arrays inside the store; {features} is outside it (drop --dask)"
        )
    console = Console()
    # --memory-budget on Dask: re-read blocks from the store each pass instead of persisting
    target = DaskTarget(dask, persist=memory_budget is None) if dask else None
    with rich_progress(progress_wanted(console, json_output=as_json)) as progress:
        result = cluster_store(
            store,
            out=out,
            k=k,
            n_init=n_init,
            seed=seed,
            features=features,
            backend=backend,
            device=device,
            align_to=align_to,
            round=round_,
            memory_budget=None if dask else parse_bytes(memory_budget),
            restart_sample=parse_restart_sample(restart_sample),
            max_iter=max_iter,
            tol=tol,
            progress=progress,
            plot=not no_plot,
            dask=target,
        )
    summary = {
        **result.meta.to_json(),
        "path": str(result.path),
        "plot": str(result.plot) if result.plot else None,
        "sizes": result.sizes.tolist() if result.sizes is not None else None,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary, np.asarray(summary["sizes"] or [], np.int64), console)


def labels_info(
    path: Path = typer.Argument(..., help="Label file (.npy)."),
    store: Path = typer.Option(None, "--store", help="Also check the file belongs to this store."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Check a label file (and optionally that it matches a store) and summarise it."""
    labels, meta = read_label_file(path, store)
    sizes = cluster_sizes(labels, meta.k)
    summary = {
        **meta.to_json(),
        "path": str(path),
        "checked_against_store": str(store) if store else None,
        "sizes": sizes.tolist(),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console = Console()
    t = Table(title=f"{path}", show_header=False)
    for key in (
        "k",
        "round",
        "parent",
        "features",
        "backend",
        "device",
        "seed",
        "n_init",
        "inertia",
        "n_iter",
        "n_rows",
        "n_clustered",
        "store_fingerprint",
        "created",
        "diccae_version",
    ):
        t.add_row(key, escape(str(summary.get(key))))
    if meta.agreement:
        a = meta.agreement
        t.add_row("agreement", f"NMI {a['nmi']:.4f}  ARI {a['ari']:.4f}  purity {a['purity']:.4f}")
    t.add_row("store check", escape(f"matches {store}") if store else "not checked (give --store)")
    console.print(t)
    console.print(size_table(sizes))


def register(app: typer.Typer) -> None:
    """``diccae cluster`` and ``diccae labels info``."""
    app.command("cluster")(cluster)
    labels_app = typer.Typer(help="Inspect cluster label files.", no_args_is_help=True)
    labels_app.command("info")(labels_info)
    app.add_typer(labels_app, name="labels")
