"""``diccae demo``: the whole method end to end on a generated data set.

The command parses options, calls :func:`demo.pipeline.run_demo` and draws what it
reports: a rule per stage, the time each took, the bars of the library calls, and a
short table of the headline numbers at the end (``report.md`` has the rest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.progress import rich_progress
from featstore.progress import ProgressFn, ProgressUpdate


def demo_command(
    out: Path = typer.Option(
        Path("demo-out"), "--out", help="Directory for the data, store, runs and report.md."
    ),
    clips: int = typer.Option(
        None,
        "--clips",
        min=8,
        help="Number of clips to generate (default 480; 64 with --quick).",
    ),
    classes: int = typer.Option(
        None, "--classes", min=2, help="Number of classes (default 8; 4 with --quick)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed for data generation, clustering and training."
    ),
    pretrain_epochs: int = typer.Option(
        None,
        "--pretrain-epochs",
        min=1,
        help="Self-supervised epochs on cluster labels (default: auto from the step budget).",
    ),
    finetune_epochs: int = typer.Option(
        None,
        "--finetune-epochs",
        min=1,
        help="Supervised epochs on the ground truth (default: auto, with early stopping).",
    ),
    recluster_every: int = typer.Option(
        None,
        "--recluster-every",
        min=0,
        help="Epochs between re-clusterings of the fused features during pretraining (0 = never; default: a third of the run).",
    ),
    ablate: bool = typer.Option(
        True, "--ablate/--no-ablate", help="Also train without the confusion loss and compare."
    ),
    seeds: int = typer.Option(
        None, "--seeds", min=1, help="Seeds per ablation variant (default 3; 2 with --quick)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="A much smaller run (about a minute) for smoke tests and CI."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto | cpu | cuda, for extraction and training."
    ),
) -> None:
    """Generate a small audio-visual data set and run the whole DICCAE pipeline on it.

    Stages: generate clips -> extract -> store info -> cluster -> confusion analysis
    -> pretrain with re-clustering -> finetune -> eval -> ablation -> confusion of the
    fused features.  Writes OUT/report.md with the numbers and the pictures it cites.
    """
    from demo.pipeline import DemoSettings, run_demo

    settings = DemoSettings.quick() if quick else DemoSettings()
    settings = settings.with_overrides(
        n_clips=clips,
        n_classes=classes,
        seed=seed,
        pretrain_epochs=pretrain_epochs,
        finetune_epochs=finetune_epochs,
        recluster_every=recluster_every,
        ablate=ablate,
        device=device,
        ablation_seeds=seeds,
    )
    console = Console()
    with rich_progress(console=console, while_open=True) as bars:
        report = run_demo(out, settings=settings, progress=stage_printer(console, bars))
    print_summary(report.numbers, report.total_seconds, report.report_path, console)


def stage_printer(console: Console, bars: ProgressFn | None) -> ProgressFn:
    """Stage updates as a rule when a stage starts and its time when it ends; the rest to ``bars``."""
    from demo.pipeline import STAGE_TASK

    def show(update: ProgressUpdate) -> None:
        if update.task != STAGE_TASK:
            if bars is not None:
                bars(update)
            return
        if update.description:
            console.rule(f"[bold]{escape(update.description)}")
        if update.info:
            console.print(f"[dim]{escape(update.info)}[/]")

    return show


def print_summary(n: dict[str, Any], total_seconds: float, path: Path, console: Console) -> None:
    """A few lines for the terminal from the demo's numbers; the report has the rest."""
    from demo.report import format_number, format_percent
    from trainer.ablate import format_delta

    table = Table(title="DICCAE demo", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    c = n.get("cluster", {})
    if "nmi" in c:
        table.add_row("cluster/true-class NMI", f"{c['nmi']:.3f}")
    e = n.get("eval", {})
    for key, label in (
        ("top1_audio", "top-1 audio"),
        ("top1_video", "top-1 video"),
        ("top1_av", "top-1 audio-visual"),
    ):
        if e.get(key) is not None:
            table.add_row(label, format_percent(e[key]))
    raw, fused = n.get("confusion_raw", {}).get("audio+video"), n.get("confusion_fused")
    if raw and fused:
        table.add_row(
            "confusion mean raw -> fused",
            f"{format_number(raw['mean'])} -> {format_number(fused['mean'])}",
        )
        table.add_row(
            "confusion var raw -> fused",
            f"{format_number(raw['var'])} -> {format_number(fused['var'])}",
        )
    if e.get("probe_av") is not None:
        table.add_row(
            "probe A / V / A-V",
            " / ".join(format_percent(e.get(f"probe_{h}")) for h in ("audio", "video", "av")),
        )
    for name, r in n.get("ablation", {}).items():
        if name != "full":
            table.add_row(f"{r['title']}: Δ top-1 A-V", format_delta(r["delta_top1_av"]))
    table.add_row("wall time", f"{total_seconds:.0f} s")
    console.print(table)
    console.print(f"report: [bold]{escape(str(path))}[/]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
