"""What a demo run is: its settings, its shared state, and what it returns.

Kept apart from the stages (:mod:`demo.stages`) and the report
(:mod:`demo.report`) so that both read one definition of the run's paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from featstore.errors import InputError
from featstore.progress import ProgressFn


@dataclass
class DemoSettings:
    """Sizes and schedule of a demo run.

    Training uses ``diccae train``'s defaults (auto epochs from a step budget,
    warm-up + cosine, early stopping, best checkpoint) with a smaller step budget
    (``min_steps``) and a small model, so the whole demo with its ablation seeds
    stays within a few minutes on 2 CPU cores.
    """

    n_clips: int = 480
    n_classes: int = 8
    seed: int = 0
    duration: float = 1.5
    size: int = 64
    fps: float = 12.0
    k: int | None = None  # clusters for the pseudo-labels; None = number of classes
    n_init: int = 20  # K-means restarts (paper: 20)
    pretrain_epochs: int = 0  # 0 = auto (step budget)
    recluster_every: int = -1  # -1 = auto: a third of the run (paper: every 10 of 30 epochs)
    finetune_epochs: int = 0  # 0 = auto (step budget)
    min_steps: int = 400  # optimiser steps per phase that the auto epoch count guarantees
    ablation_variants: tuple[str, ...] = (
        "no_confusion_loss",
    )  # besides the full model (trainer.ablate.VARIANTS)
    ablation_seeds: int = 3  # seeds per ablation variant (mean ± sd, paired interval to full)
    batch_size: int = 128
    lr: float = 1e-3
    widths: int = 128  # hidden width of the small demo model
    ablate: bool = True
    device: str = "auto"
    workers: int = 2  # decode processes during extraction

    @classmethod
    def quick(cls) -> DemoSettings:
        """A much smaller run for smoke tests and CI (about a minute on 2 cores)."""
        return cls(
            n_clips=64,
            n_classes=4,
            duration=1.0,
            size=32,
            fps=16.0,
            n_init=3,
            min_steps=150,
            widths=64,
            workers=1,
            ablation_seeds=2,
        )

    def with_overrides(self, **values: Any) -> DemoSettings:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown demo settings {sorted(unknown)}")
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def n_clusters(self) -> int:
        return self.k or self.n_classes


@dataclass
class DemoReport:
    """Where the demo wrote its results and the headline numbers."""

    out_dir: Path
    report_path: Path
    numbers: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0


@dataclass
class DemoRun:
    """One run's shared state: where it writes, its settings, what it measured so far.

    Every stage reads the paths below and adds its numbers under its own key of
    ``numbers`` (which becomes ``report.json``).  ``progress`` is the caller's
    callback; stages hand it to the library functions they call.
    """

    out: Path
    settings: DemoSettings
    progress: ProgressFn | None = None
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def show_progress(self) -> bool:
        """For library functions that still take an on/off flag instead of a callback."""
        return self.progress is not None

    # paths every stage agrees on
    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def manifest(self) -> Path:
        return self.data_dir / "manifest.csv"

    @property
    def store(self) -> Path:
        return self.out / "store.zarr"

    @property
    def labels0(self) -> Path:
        return self.out / "labels" / "round0.npy"

    @property
    def pretrain_dir(self) -> Path:
        return self.out / "runs" / "pretrain"

    @property
    def finetune_dir(self) -> Path:
        return self.out / "runs" / "finetune"

    @property
    def eval_dir(self) -> Path:
        return self.out / "runs" / "eval"
