"""Every TrainConfig field as a command-line option: one table for both entry points.

``diccae train`` (Typer, :mod:`cli.cmd_train`) and ``python -m trainer`` (argparse,
the torchrun worker, :mod:`trainer.__main__`) read the same :data:`TRAIN_OPTIONS`
and turn parsed values into a config with :func:`build_config`, so the two take
exactly the same options.  ``--preset paper`` starts from the paper's exact
settings (docs/paper-mapping.md); ``--config FILE`` loads a saved
``config.json`` first and options override either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featstore.errors import InputError
from trainer.config import TrainConfig, preset_config
from trainer.phases import saved_run_config

#: options beside the table that every training command takes
PRESET_HELP = "default (converges at any data size) | paper (the paper's exact settings)"
CONFIG_HELP = "start from a saved config.json"
NPROC_HELP = (
    "train with N local DistributedDataParallel processes (gloo on CPU, one GPU each with NCCL); "
    "--batch-size stays the global batch, results match one process"
)


def parse_epochs(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lower() == "auto":
        return 0
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(f"--epochs must be a number or auto, got {value!r}") from exc


def parse_widths(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise InputError(f"widths must be comma-separated integers, got {value!r}") from exc


# (option name, config key, type, help); defaults come from TrainConfig (None = keep)
TRAIN_OPTIONS: list[tuple[str, str, Any, str]] = [
    (
        "epochs",
        "epochs",
        str,
        "epochs to train, or auto (default): enough for --min-steps optimiser steps (paper: 30)",
    ),
    ("min_steps", "min_steps", int, "optimiser steps that --epochs auto guarantees (default 2000)"),
    (
        "passes_per_epoch",
        "passes_per_epoch",
        int,
        "passes over the data per epoch, 0 = auto (>= 50 steps per epoch)",
    ),
    (
        "patience",
        "patience",
        int,
        "finetune: stop after N epochs without a better eval score (-1 auto, 0 never)",
    ),
    ("batch_size", "batch_size", int, "clips per batch (default 128; paper: 32)"),
    ("lr", "lr", float, "peak Adam learning rate (default 1e-3; paper: 1e-4)"),
    (
        "warmup",
        "warmup",
        float,
        "fraction of the planned steps with a linear warm-up (default 0.05)",
    ),
    ("weight_decay", "weight_decay", float, "Adam weight decay"),
    ("schedule", "schedule", str, "learning-rate decay per step: cosine | step | none"),
    ("step_size", "step_size", int, "epochs between decays (schedule=step)"),
    ("gamma", "gamma", float, "decay factor (schedule=step)"),
    ("min_lr", "min_lr", float, "final learning rate (schedule=cosine)"),
    (
        "sampler",
        "sampler",
        str,
        "balanced (P classes x K clips) | confusion (hard pairs together) | shuffle",
    ),
    (
        "clips_per_class",
        "clips_per_class",
        int,
        "K of the P x K sampler, 0 = auto (fill the batch)",
    ),
    ("shuffle_buffer", "shuffle_buffer", int, "rows in the shuffle buffer"),
    ("prefetch_shards", "prefetch_shards", int, "shards read ahead in a background thread"),
    ("split", "split", str, "rows to train on: auto (not val/test) | all | NAME[,NAME]"),
    (
        "update_set",
        "update_set",
        str,
        "rows for the M-hat update: auto | val:F | train:F | test:F (paper; leaks test data)",
    ),
    ("eval_split", "eval_split", str, "split scored every epoch (minus the update set)"),
    (
        "recluster_every",
        "recluster_every",
        int,
        "pretrain: epochs between re-clusterings, 0 = never, -1 = auto: a third of the run (paper: 10)",
    ),
    (
        "recluster_n_init",
        "recluster_n_init",
        int,
        "K-means restarts when re-clustering (paper: 20)",
    ),
    ("seed", "seed", int, "seed of every random choice"),
    ("device", "device", str, "auto | cpu | cuda[:N]"),
    ("amp", "amp", str, "mixed precision on CUDA: auto | on | off"),
    ("threads", "threads", int, "torch CPU threads (0 = default)"),
    ("plots", "plots", bool, "write training_curves.png / histograms"),
    ("lambda_nce", "loss.lambda_nce", float, "weight of InfoNCE"),
    ("lambda_cl", "loss.lambda_cl", float, "weight of the confusion loss L_DICCAE"),
    ("ce_audio", "loss.ce_audio", float, "weight of the audio head's cross-entropy"),
    ("ce_video", "loss.ce_video", float, "weight of the video head's cross-entropy"),
    ("ce_fused", "loss.ce_fused", float, "weight of the fused head's cross-entropy"),
    ("temperature", "loss.temperature", float, "InfoNCE temperature"),
    ("learn_temperature", "loss.learn_temperature", bool, "learn the InfoNCE temperature"),
    ("confusion_scale_init", "loss.confusion_scale_init", float, "initial s in sigmoid(s cos + b)"),
    ("confusion_bias_init", "loss.confusion_bias_init", float, "initial b in sigmoid(s cos + b)"),
    ("weighting", "loss.weighting", str, "pair weights: dynamic (M-hat) | static | uniform"),
    (
        "static_weight",
        "loss.static_weight",
        float,
        "--weighting static: every pair weighs 1 and w scales the confusion term (Fig. 3)",
    ),
    ("label_smoothing", "loss.label_smoothing", float, "cross-entropy label smoothing"),
    (
        "encoder_widths",
        "model.encoder_widths",
        str,
        "hidden widths of each modality MLP, e.g. 512,512",
    ),
    ("encoded_dim", "model.encoded_dim", int, "encoded feature size per modality"),
    ("projection_dim", "model.projection_dim", int, "InfoNCE projection size"),
    ("fusion_widths", "model.fusion_widths", str, "hidden widths of the fusion MLP"),
    ("fused_dim", "model.fused_dim", int, "fused feature z size"),
    ("dropout", "model.dropout", float, "dropout in the MLPs"),
]


def build_config(options: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """The config of parsed options: ``preset`` (or ``base``), then ``config_file``, then
    every option that is not None; ``progress`` is recorded as given."""
    cfg = base or preset_config(options.get("preset") or "default")
    if options.get("config_file"):
        try:
            saved = json.loads(Path(options["config_file"]).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{options['config_file']}: cannot read config ({exc})") from exc
        saved = {
            k: v
            for k, v in saved.items()
            if k not in ("phase", "label_source", "rows", "update_set_leaks_test", "plan")
        }
        cfg = TrainConfig.from_dict(saved)
    overrides: dict[str, Any] = {}
    for name, key, _typ, _help in TRAIN_OPTIONS:
        value = options.get(name)
        if value is not None and key.endswith("_widths"):
            value = parse_widths(value)
        if key == "epochs":
            value = parse_epochs(value)
        overrides[key] = value
    cfg = cfg.with_overrides(**overrides)
    cfg.progress = bool(options.get("progress", True))
    cfg.validate()
    return cfg


def keep_saved_epochs(
    cfg: TrainConfig, options: dict[str, Any], out: Path, resume: bool
) -> TrainConfig:
    """``--resume`` without ``--epochs`` finishes the run as planned, not at the default count."""
    if resume and options.get("epochs") is None:
        cfg.epochs = saved_run_config(out).epochs
    return cfg
