"""Typed configuration of a training run, saved as ``config.json`` in every run dir.

Three dataclasses keep the concerns apart: :class:`ModelConfig` (what the network
looks like), :class:`LossConfig` (which terms and weights make the objective) and
:class:`TrainConfig` (how the data is fed and the optimiser stepped; it embeds the
other two).  All of them round-trip through plain JSON so that checkpoints can be
loaded with ``torch.load(weights_only=True)`` and a run can be reproduced from its
directory alone.

The defaults are chosen to converge at any data size: a budget of optimiser
steps (``epochs=0`` = auto: enough epochs for ``min_steps`` steps), a linear
warm-up then a per-step cosine decay from a base learning rate of 1e-3 (measured
on these small MLPs by ``bench/train_quality.py``), early stopping on the eval
split with patience, and the best checkpoint kept beside the last one.  The
paper's exact settings (section 3.1: Adam, learning rate 1e-4, batch size 32,
30 epochs, a decay, re-clustering every 10 epochs) are :func:`paper_preset`,
``--preset paper`` on the command line.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from featstore.errors import InputError

SAMPLERS = ("balanced", "confusion", "shuffle")
WEIGHTINGS = ("dynamic", "static", "uniform")
SCHEDULES = ("cosine", "step", "none")
PRESETS = ("default", "paper")


@dataclass
class ModelConfig:
    """Widths of the two-layer DICCAE network (paper section 2.2, Fig. 1)."""

    audio_dim: int = 0  # filled from the store
    video_dim: int = 0  # filled from the store
    encoder_widths: tuple[int, ...] = (512,)  # hidden widths of each modality MLP
    encoded_dim: int = 256  # output of each modality encoder
    projection_dim: int = 128  # InfoNCE projection head output
    fusion_widths: tuple[int, ...] = (512,)  # hidden widths of the fusion MLP
    fused_dim: int = 256  # fused feature z
    num_classes: int = 0  # filled from the labels
    dropout: float = 0.1
    input_norm: bool = True  # LayerNorm on the stored embeddings (their scale is arbitrary)

    def validate(self) -> None:
        for name in ("encoded_dim", "projection_dim", "fused_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class LossConfig:
    """Terms of the objective: CE_a + CE_v + CE_z + l_nce*InfoNCE + l_cl*L_DICCAE."""

    ce_audio: float = 1.0
    ce_video: float = 1.0
    ce_fused: float = 1.0
    lambda_nce: float = 1.0
    lambda_cl: float = 1.0
    temperature: float = 0.07  # InfoNCE temperature (initial value when learnable)
    learn_temperature: bool = False
    confusion_scale_init: float = 10.0  # s in sigmoid(s*cos + b)
    confusion_bias_init: float = -5.0  # b
    weighting: str = "dynamic"  # dynamic (M-hat), static (constant weight) or uniform (all 1)
    static_weight: float = (
        1.0  # weighting=static: pairs all weigh 1 and the confusion term is scaled by w (Fig. 3)
    )
    label_smoothing: float = 0.0
    infonce_only: bool = False  # "w/o K-means" ablation: only InfoNCE, no class labels

    def validate(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"loss.weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.temperature <= 0:
            raise InputError(f"loss.temperature must be > 0, got {self.temperature}")
        if self.static_weight < 0:
            raise InputError(f"loss.static_weight must be >= 0, got {self.static_weight}")
        for name in ("ce_audio", "ce_video", "ce_fused", "lambda_nce", "lambda_cl"):
            if getattr(self, name) < 0:
                raise InputError(f"loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    """How one phase (pretrain or finetune) is run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    preset: str = "default"  # default | paper (recorded; see paper_preset)
    epochs: int = 0  # 0 = auto: ceil(min_steps / steps per epoch), within [min_epochs, max_epochs]
    min_steps: int = 2000  # optimiser steps an auto epoch count guarantees
    passes_per_epoch: int = (
        0  # passes over the training rows per epoch (0 = auto: >= epoch_steps steps)
    )
    epoch_steps: int = (
        50  # auto passes_per_epoch: an epoch (M-hat update, scoring) is at least this many steps
    )
    min_epochs: int = 5
    max_epochs: int = 500
    batch_size: int = 128  # CPU steps cost about the same at 32 and 128 rows; the paper used 32
    lr: float = 1e-3  # base (peak) learning rate
    weight_decay: float = 0.0
    schedule: str = "cosine"  # learning-rate decay per optimiser step: cosine | step | none
    warmup: float = 0.05  # fraction of the planned steps with a linear warm-up (0 = none)
    step_size: int = 10  # epochs between decays when schedule=step
    gamma: float = 0.5  # decay factor when schedule=step
    min_lr: float = 1e-6  # floor of the cosine schedule
    patience: int = (
        -1
    )  # finetune: stop after this many epochs without a better eval score (-1 auto, 0 never)
    sampler: str = "balanced"  # balanced (P x K) | confusion (pairs ~ M-hat) | shuffle
    clips_per_class: int = 0  # K of the P x K sampler (0 = auto: fill the batch, at least 4)
    shuffle_buffer: int = 8192  # rows held in the shuffle buffer
    prefetch_shards: int = 4  # shards read ahead by the background thread
    split: str = "auto"  # rows trained on: auto | all | NAME[,NAME...]
    update_set: str = "auto"  # rows for the confusion update: auto | val:F | test:F | train:F
    eval_split: str = "val"  # rows scored each epoch (minus the update set)
    recluster_every: int = (
        -1
    )  # pretrain: epochs between re-clusterings (0 = never, -1 = auto: 3 rounds)
    recluster_n_init: int = 20  # K-means restarts when re-clustering (paper: 20)
    recluster_max_iter: int = 100
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto (= float32: bf16 measured slower for this MLP on an H200) | on (bf16, CUDA) | off
    progress: bool = True
    deterministic: bool = True  # torch.use_deterministic_algorithms where possible
    infer_batch: int = 4096  # rows per forward pass when computing features
    plots: bool = True  # training_curves.png per run (off in quick sweeps and tests)
    threads: int = 0  # torch CPU threads (0 = torch's default); small MLPs often run best on 1

    def validate(self) -> None:
        self.model.validate()
        self.loss.validate()
        if self.epochs < 0:
            raise InputError(f"epochs must be >= 1 (or 0 = auto), got {self.epochs}")
        if self.preset not in PRESETS:
            raise InputError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.min_steps < 1 or self.min_epochs < 1 or self.max_epochs < self.min_epochs:
            raise InputError(
                f"need min_steps >= 1 and 1 <= min_epochs <= max_epochs, got "
                f"{self.min_steps}, {self.min_epochs}, {self.max_epochs}"
            )
        if not 0.0 <= self.warmup < 1.0:
            raise InputError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if self.passes_per_epoch < 0 or self.epoch_steps < 1:
            raise InputError(
                f"passes_per_epoch must be >= 0 (0 = auto) and epoch_steps >= 1, got "
                f"{self.passes_per_epoch}, {self.epoch_steps}"
            )
        if self.patience < -1:
            raise InputError(f"patience must be >= 0 (or -1 = auto), got {self.patience}")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be >= 2 (pairs are needed), got {self.batch_size}")
        if not math.isfinite(self.lr) or self.lr <= 0:  # NaN compares false with everything
            raise InputError(f"lr must be a finite number > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.clips_per_class < 0 or self.clips_per_class > self.batch_size:
            raise InputError(
                f"clips_per_class must be in [1, batch_size] (or 0 = auto), got {self.clips_per_class}"
            )
        if self.shuffle_buffer < self.batch_size:
            raise InputError(
                f"shuffle_buffer ({self.shuffle_buffer}) must be >= batch_size ({self.batch_size})"
            )
        if self.recluster_every < -1:
            raise InputError(
                f"recluster_every must be >= 0 (or -1 = auto), got {self.recluster_every}"
            )
        if self.amp not in ("auto", "on", "off"):
            raise InputError(f"amp must be auto|on|off, got {self.amp!r}")

    # ------------------------------------------------------------ resolution
    def passes(self, n_train: int) -> int:
        """Passes over the training rows per epoch: as set, or (auto) enough for ``epoch_steps`` steps.

        The per-epoch work of the method (M-hat update, scoring, re-clustering
        interval) then happens every few dozen steps on a small data set instead
        of every two, as it does on VGGSound's 5,600-step epochs.
        """
        if self.passes_per_epoch > 0:
            return self.passes_per_epoch
        per_pass = max(1, math.ceil(n_train / self.batch_size))
        return max(1, math.ceil(self.epoch_steps / per_pass))

    def planned_epochs(self, n_train: int) -> int:
        """Epochs this phase runs: ``epochs``, or (auto) enough for ``min_steps`` optimiser steps."""
        if self.epochs > 0:
            return self.epochs
        per_epoch = max(1, math.ceil(n_train / self.batch_size)) * self.passes(n_train)
        return int(
            min(self.max_epochs, max(self.min_epochs, math.ceil(self.min_steps / per_epoch)))
        )

    def clips_per_class_for(self, num_classes: int) -> int:
        """K of the P x K sampler: as set, or (auto) enough for P x K to fill a batch of ``num_classes``."""
        from trainer.data import auto_clips_per_class

        if self.clips_per_class > 0:
            return self.clips_per_class
        return auto_clips_per_class(self.batch_size, num_classes)

    def recluster_interval(self, epochs: int) -> int:
        """Epochs between re-clusterings: as set, or (auto) a third of the run, as the paper's 10 of 30."""
        if self.recluster_every >= 0:
            return self.recluster_every
        return max(1, epochs // 3)

    def patience_epochs(self, epochs: int) -> int:
        """Early-stopping patience: as set, or (auto) a quarter of the run, at least 10 epochs."""
        if self.patience >= 0:
            return self.patience
        return max(10, math.ceil(epochs / 4))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("encoder_widths", "fusion_widths"):
            d["model"][key] = list(d["model"][key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = _build(ModelConfig, d.pop("model", {}) or {})
        model.encoder_widths = tuple(int(w) for w in model.encoder_widths)
        model.fusion_widths = tuple(int(w) for w in model.fusion_widths)
        loss = _build(LossConfig, d.pop("loss", {}) or {})
        cfg = _build(cls, d)
        cfg.model, cfg.loss = model, loss
        return cfg

    def with_overrides(self, **values: Any) -> TrainConfig:
        """A copy with top-level, ``model.x`` or ``loss.x`` fields replaced."""
        cfg = TrainConfig.from_dict(self.to_dict())
        for key, value in values.items():
            if value is None:
                continue
            target, name = cfg, key
            if "." in key:
                part, name = key.split(".", 1)
                target = getattr(cfg, part)
            if name not in {f.name for f in fields(target)}:
                raise InputError(f"unknown config field {key!r}")
            setattr(target, name, value)
        return cfg


def paper_preset(**overrides: Any) -> TrainConfig:
    """The paper's settings (section 3.1): Adam at lr 1e-4, batch 32, 30 epochs, cosine decay
    per epoch-length of steps without warm-up, re-clustering every 10 epochs, no early stopping."""
    cfg = TrainConfig(
        preset="paper",
        epochs=30,
        passes_per_epoch=1,
        lr=1e-4,
        batch_size=32,
        clips_per_class=4,
        warmup=0.0,
        schedule="cosine",
        min_lr=1e-6,
        patience=0,
        recluster_every=10,
        recluster_n_init=20,
    )
    return cfg.with_overrides(**overrides)


def preset_config(name: str) -> TrainConfig:
    """``default`` or ``paper`` (see :func:`paper_preset`)."""
    if name not in PRESETS:
        raise InputError(f"--preset must be one of {PRESETS}, got {name!r}")
    return paper_preset() if name == "paper" else TrainConfig()


def _build(cls: type, d: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise InputError(f"unknown {cls.__name__} fields {sorted(unknown)} in config")
    return cls(**d)


__all__ = ["ModelConfig", "LossConfig", "TrainConfig", "paper_preset", "preset_config", "replace"]
