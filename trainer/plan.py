"""How long a phase runs: the auto settings resolved into numbers, once per run.

``epochs`` 0 (auto) becomes enough epochs for ``min_steps`` optimiser steps,
re-clustering and patience get their numbers, and whether the run is monitored
(early stopping on the eval rows, ``best.pt``) is decided with the reason when it
is not.  The result is written into the config and the checkpoint, so
``config.json`` holds what ran and a resumed run keeps it.
"""

from __future__ import annotations

import math
from typing import Any

from trainer.config import TrainConfig
from trainer.rows import RowSets


def unmonitored_reason(cfg: TrainConfig, phase: str, rows: RowSets) -> str:
    """Why early stopping and a best checkpoint are off ("" = they are on).

    They need fixed labels and rows to score.
    """
    if cfg.loss.infonce_only:
        return "not monitored: InfoNCE-only runs have no labels"
    if phase == "pretrain" and cfg.recluster_every != 0:
        return "not monitored: the pseudo-labels change with every re-clustering"
    if not rows.evaluate.any():
        return "not monitored: no eval rows (--eval-split)"
    if cfg.patience == 0 and cfg.preset == "paper":
        return "not monitored: the paper preset trains its fixed number of epochs"
    return ""


def plan_phase(cfg: TrainConfig, phase: str, rows: RowSets) -> dict[str, Any]:
    """Resolve ``cfg``'s auto settings in place and return the plan recorded with the run."""
    n_train = int(rows.train.sum())
    requested = cfg.epochs
    cfg.epochs = cfg.planned_epochs(n_train)
    cfg.passes_per_epoch = cfg.passes(n_train)
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size)) * cfg.passes_per_epoch
    if phase == "pretrain":
        cfg.recluster_every = cfg.recluster_interval(cfg.epochs)
    cfg.clips_per_class = cfg.clips_per_class_for(cfg.model.num_classes)
    reason = unmonitored_reason(cfg, phase, rows)
    monitored = reason == ""
    cfg.patience = cfg.patience_epochs(cfg.epochs) if monitored else 0
    return {
        "epochs_requested": "auto" if requested == 0 else requested,
        "epochs": cfg.epochs,
        "n_train": n_train,
        "passes_per_epoch": cfg.passes_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": cfg.epochs * steps_per_epoch,
        "min_steps": cfg.min_steps,
        "early_stopping": monitored,
        "patience": cfg.patience,
        "monitor": "mean top-1 of the audio, video and audio-visual heads on the eval rows"
        if monitored
        else reason,
    }


def resumed_plan(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """The plan of a resumed run; resumed with more epochs, the schedule stretches."""
    plan = dict(saved)
    if plan.get("epochs") != cfg.epochs:
        plan.update(epochs=cfg.epochs, total_steps=cfg.epochs * plan["steps_per_epoch"])
    return plan
