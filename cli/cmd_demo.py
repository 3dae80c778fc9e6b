"""``diccae demo``: the whole method end to end on a generated data set."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
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
        from demo.pipeline import DemoSettings, print_summary, run_demo

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
        report = run_demo(out, settings=settings, console=console)
        print_summary(report, console)
