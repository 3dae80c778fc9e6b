"""Building what a phase trains: the model, its loss, the two as one training
objective, and the optimiser with its schedule.

Separate from the loop so benchmarks and the GPU suite build exactly what a run
trains, without a store or a run directory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from trainer.config import TrainConfig
from trainer.inference import autocast
from trainer.losses import BatchView, DiccaeLoss
from trainer.model import DiccaeModel


def build_model_and_loss(cfg: TrainConfig, device: str) -> tuple[DiccaeModel, DiccaeLoss]:
    lc = cfg.loss
    infonce_only = lc.infonce_only
    model = DiccaeModel(cfg.model).to(device)
    loss = DiccaeLoss(
        ce_audio=0.0 if infonce_only else lc.ce_audio,
        ce_video=0.0 if infonce_only else lc.ce_video,
        ce_fused=0.0 if infonce_only else lc.ce_fused,
        lambda_nce=lc.lambda_nce if lc.lambda_nce or not infonce_only else 1.0,
        # static weighting (Fig. 3): every pair weighs 1 and w scales the whole confusion term;
        # a constant pair weight alone would cancel in the loss's weight-sum normaliser
        lambda_cl=0.0
        if infonce_only
        else lc.lambda_cl * (lc.static_weight if lc.weighting == "static" else 1.0),
        temperature=lc.temperature,
        learn_temperature=lc.learn_temperature,
        confusion_scale_init=lc.confusion_scale_init,
        confusion_bias_init=lc.confusion_bias_init,
        label_smoothing=lc.label_smoothing,
    ).to(device)
    return model, loss


def lr_factor(cfg: TrainConfig, step: int, *, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step ``step`` as a fraction of ``cfg.lr``.

    Linear warm-up over ``warmup * total_steps`` steps, then ``cosine`` (to
    ``min_lr`` at ``total_steps``), ``step`` (x ``gamma`` every ``step_size``
    epochs) or ``none``.  Per step, so a phase of 3 epochs decays as smoothly as
    one of 300.
    """
    warm = int(cfg.warmup * total_steps)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        floor = min(cfg.min_lr, cfg.lr) / cfg.lr
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return float(cfg.gamma ** ((step // max(1, steps_per_epoch)) // max(1, cfg.step_size)))
    return 1.0


def build_optimizer(
    cfg: TrainConfig,
    params: Iterable[torch.nn.Parameter],
    *,
    total_steps: int | None = None,
    steps_per_epoch: int = 1,
) -> tuple[torch.optim.Optimizer, Any]:
    """Adam and its per-step schedule over ``total_steps`` (default: ``epochs`` x ``steps_per_epoch``)."""
    total = total_steps or max(1, cfg.epochs) * steps_per_epoch
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: lr_factor(cfg, step, total_steps=total, steps_per_epoch=steps_per_epoch),
    )
    return opt, sched


class TrainingObjective(nn.Module):
    """Model + loss as one module: the forward pass of a training step.

    One module so DistributedDataParallel, which wraps it under DDP, synchronises
    every learnable parameter (heads, InfoNCE temperature, confusion s/b).
    """

    def __init__(self, model: nn.Module, loss: nn.Module, *, device: str, amp: str):
        super().__init__()
        self.model, self.loss = model, loss
        self.device, self.amp = device, amp

    def forward(
        self,
        audio: torch.Tensor,
        video: torch.Tensor,
        labels: torch.Tensor,
        pair_weights: torch.Tensor,
        batch: BatchView | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.device, self.amp):
            out = self.model(audio, video)
        return self.loss(out, labels, pair_weights, batch)
