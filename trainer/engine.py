"""The training loop and the two phases (paper section 2.3 and 3.1).

* :func:`pretrain`: cluster-guided self-supervision.  Classifier heads learn the
  K-means pseudo-labels of a label file; every ``recluster_every`` epochs the
  fused features of the whole store are written into the run directory
  (``RUN/fused``, never into the store, which is only read) and re-clustered
  (same K, aligned to the previous round) into the next label round; M-hat is
  recomputed at once under the new labels.
* :func:`finetune`: supervised training on ground-truth labels (or a label file),
  encoders and fusion initialised from a pretrain checkpoint, new heads.

How long a phase runs: ``epochs`` (0 = auto, enough epochs for ``min_steps``
optimiser steps), a per-step warm-up + cosine schedule, and, when labels stay
fixed (finetune, or pretrain without re-clustering), early stopping on the eval
rows: the score is the mean top-1 of the three heads; the best epoch's weights
are kept in ``best.pt`` beside the last ``checkpoint.pt``, and the metrics say
why and when the run stopped.

The loop itself only iterates, steps and logs; the objective lives in
:mod:`trainer.losses`, the batches in :mod:`trainer.data`, the M-hat update in
:mod:`trainer.weighting`, the files in :mod:`trainer.run_io`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featstore.common.backend import resolve_device
from featstore.common.fileio import refuse_inside_store
from featstore.errors import CheckpointError, InputError
from featstore.store.core import FeatureStore
from trainer.config import ModelConfig, TrainConfig
from trainer.data import (
    BatchPicker,
    RowSets,
    StoreSource,
    cached_source,
    iter_batches,
    iter_rows,
    resolve_row_sets,
)
from trainer.labels import LabelSource, ground_truth, load_label_file, no_labels, recluster
from trainer.losses import DiccaeLoss
from trainer.model import DiccaeModel
from trainer.run_io import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    atomic_write_json,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_epoch_outputs,
    write_fused_features,
)
from trainer.weighting import PairWeights


@dataclass
class RunSummary:
    run_dir: Path
    phase: str
    epochs: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    label_rounds: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}

    @property
    def stop(self) -> dict[str, Any]:
        """Why and when the run stopped, and its best epoch (from the last metrics record)."""
        return {
            k: self.final.get(k)
            for k in ("stop_reason", "stopped_epoch", "best_epoch", "best_score")
        }


# ------------------------------------------------------------------ building
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
        return cfg.gamma ** ((step // max(1, steps_per_epoch)) // max(1, cfg.step_size))
    return 1.0


def build_optimizer(
    cfg: TrainConfig, params, *, total_steps: int | None = None, steps_per_epoch: int = 1
) -> tuple[torch.optim.Optimizer, Any]:
    """Adam and its per-step schedule over ``total_steps`` (default: ``epochs`` x ``steps_per_epoch``)."""
    total_steps = total_steps or max(1, cfg.epochs) * steps_per_epoch
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: lr_factor(cfg, step, total_steps=total_steps, steps_per_epoch=steps_per_epoch),
    )
    return opt, sched


def _autocast(device: str, amp: str):
    # auto = float32: on an H200 bf16 autocast ran this small MLP at 0.80-0.94x the float32
    # steps/s (launch-bound; casts cost more than they save), see docs/gpu-and-scale.md
    use = device.startswith("cuda") and amp == "on"
    if amp == "on" and not device.startswith("cuda"):
        use = False  # AMP here means CUDA mixed precision; CPU runs stay float32
    if use:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_tensor(x: np.ndarray, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device != "cpu":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.float()


# ----------------------------------------------------------------- inference
@torch.no_grad()
def infer(
    model: DiccaeModel,
    source,
    mask: np.ndarray,
    *,
    device: str,
    batch: int = 4096,
    amp: str = "auto",
    prefetch: int = 4,
) -> dict[str, np.ndarray]:
    """Fused features and per-head predictions of the masked rows (store order)."""
    was_training = model.training
    model.eval()
    rows, zs, preds = [], [], {"audio": [], "video": [], "av": []}
    for r, a, v in iter_rows(source, mask, batch=batch, prefetch=prefetch):
        with _autocast(device, amp):
            out = model(_to_tensor(a, device), _to_tensor(v, device))
        rows.append(r)
        zs.append(out["z"].float().cpu().numpy())
        preds["audio"].append(out["logits_audio"].argmax(1).cpu().numpy())
        preds["video"].append(out["logits_video"].argmax(1).cpu().numpy())
        preds["av"].append(out["logits_fused"].argmax(1).cpu().numpy())
    model.train(was_training)
    if not rows:
        empty = np.empty(0, np.int64)
        return {
            "rows": empty,
            "z": np.empty((0, model.cfg.fused_dim), np.float32),
            "pred_audio": empty,
            "pred_video": empty,
            "pred_av": empty,
        }
    return {
        "rows": np.concatenate(rows),
        "z": np.concatenate(zs),
        **{f"pred_{k}": np.concatenate(v) for k, v in preds.items()},
    }


def top1(result: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, float]:
    if len(result["rows"]) == 0:
        return {}
    y = labels[result["rows"]]
    return {f"top1_{k}": float((result[f"pred_{k}"] == y).mean()) for k in ("audio", "video", "av")}


# ------------------------------------------------------------------- the run
class Run:
    """State of one phase; :meth:`fit` is the loop.

    :class:`trainer.distributed.DistributedRun` subclasses it: ``is_writer`` says
    whether this process writes run files (rank 0), :meth:`_sync` is a barrier,
    :meth:`_infer`, :meth:`_score_and_update` and :meth:`recluster` are where
    ranks share features and the M-hat matrix.
    """

    is_writer = True

    def __init__(
        self,
        store: FeatureStore,
        cfg: TrainConfig,
        out_dir: Path,
        phase: str,
        labels: LabelSource,
        *,
        init_state: dict[str, Any] | None = None,
        resume: bool = False,
        device: str | None = None,
    ):
        self.store, self.cfg, self.out_dir, self.phase = store, cfg, Path(out_dir), phase
        self.labels = labels
        self.device = device or resolve_device(cfg.device)
        self.source = cached_source(StoreSource(store))
        self.label_rounds: list[str] = [labels.path] if labels.kind == "file" else []
        self.start_epoch = 0
        self.run_id = hashlib.sha256(str(self.out_dir.resolve()).encode()).hexdigest()[:12]

        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        if cfg.deterministic and self.device.startswith("cuda"):
            # CPU kernels used here are deterministic already; on CUDA ask for it
            # (importing the switch costs seconds, so CPU runs skip it)
            torch.use_deterministic_algorithms(True, warn_only=True)
        cfg.model.audio_dim = self.source.audio_dim
        cfg.model.video_dim = self.source.video_dim
        if cfg.loss.infonce_only:
            cfg.model.num_classes = max(1, cfg.model.num_classes)
        else:
            cfg.model.num_classes = labels.num_classes
        self.model, self.loss = build_model_and_loss(cfg, self.device)
        if init_state is not None:
            self._load_backbone(init_state)
        self.rows = self._row_sets()
        if not resume:
            self.plan = self._plan()
        else:
            self.plan = dict(load_checkpoint(self.out_dir / CHECKPOINT).get("plan") or {})
            if (
                self.plan.get("epochs") != cfg.epochs
            ):  # resumed with more epochs: the schedule stretches
                self.plan.update(
                    epochs=cfg.epochs, total_steps=cfg.epochs * self.plan["steps_per_epoch"]
                )
        self.optimizer, self.scheduler = build_optimizer(
            cfg,
            list(self.model.parameters()) + list(self.loss.parameters()),
            total_steps=self.plan["total_steps"],
            steps_per_epoch=self.plan["steps_per_epoch"],
        )
        self.weights = PairWeights(
            cfg.loss.weighting, max(1, cfg.model.num_classes), cfg.loss.static_weight
        )
        self.best: dict[str, Any] = {
            "epoch": 0,
            "score": None,
            "since_strict": 0,
            "strict_score": None,
        }
        self.stop_reason: str | None = None
        if resume:
            self._resume()
            self.rows = self._row_sets()

    # ---------------------------------------------------------------- setup
    def _plan(self) -> dict[str, Any]:
        """Resolve the auto settings (epochs, re-clustering, patience) into numbers, once.

        They are written into the config, so ``config.json`` and the checkpoint
        hold what ran, and a resumed run keeps them.
        """
        cfg = self.cfg
        n_train = int(self.rows.train.sum())
        requested = cfg.epochs
        cfg.epochs = cfg.planned_epochs(n_train)
        cfg.passes_per_epoch = cfg.passes(n_train)
        steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size)) * cfg.passes_per_epoch
        if self.phase == "pretrain":
            cfg.recluster_every = cfg.recluster_interval(cfg.epochs)
        cfg.clips_per_class = cfg.clips_per_class_for(cfg.model.num_classes)
        monitored = self._monitored()
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
            else self._unmonitored_reason(),
        }

    def _monitored(self) -> bool:
        """Early stopping and a best checkpoint need fixed labels and rows to score."""
        return self._unmonitored_reason() == ""

    def _unmonitored_reason(self) -> str:
        if self.cfg.loss.infonce_only:
            return "not monitored: InfoNCE-only runs have no labels"
        if self.phase == "pretrain" and self.cfg.recluster_every != 0:
            return "not monitored: the pseudo-labels change with every re-clustering"
        if not self.rows.evaluate.any():
            return "not monitored: no eval rows (--eval-split)"
        if self.cfg.patience == 0 and self.cfg.preset == "paper":
            return "not monitored: the paper preset trains its fixed number of epochs"
        return ""

    def _row_sets(self) -> RowSets:
        c = self.cfg
        labels = None if self.cfg.loss.infonce_only else self.labels.labels
        return resolve_row_sets(
            self.store,
            labels,
            split=c.split,
            update_set=c.update_set,
            eval_split=c.eval_split,
            seed=c.seed,
        )

    def _load_backbone(self, state: dict[str, Any]) -> None:
        src = {
            k: v
            for k, v in state["model"].items()
            if not k.startswith(("head_audio.", "head_video.", "head_fused."))
        }
        mine = self.model.backbone_state()
        bad = [k for k in mine if k not in src or src[k].shape != mine[k].shape]
        if bad:
            raise CheckpointError(
                f"init checkpoint does not fit this model (mismatched: {bad[:5]}); "
                "the store's embedding dims or the model widths differ"
            )
        self.model.load_state_dict(src, strict=False)

    def _resume(self) -> None:
        state = load_checkpoint(self.out_dir / CHECKPOINT)
        if state.get("phase") != self.phase:
            raise CheckpointError(
                f"{self.out_dir} holds a {state.get('phase')} run, not {self.phase}"
            )
        if state.get("store_fingerprint") != self.store.fingerprint:
            raise CheckpointError(
                f"{self.out_dir} was trained on another store (fingerprint differs)"
            )
        src = state["label_source"]
        if src["kind"] == "file" and src["path"] != self.labels.path:
            self.labels = load_label_file(src["path"], self.store)
        self.label_rounds = list(state.get("label_rounds", self.label_rounds))
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.weights.matrix = state["pair_weights"].numpy()
        self.weights.updates = int(state["pair_weight_updates"])
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.best = dict(state.get("best") or self.best)
        self.stop_reason = state.get("stop_reason")

    def _checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "pair_weights": torch.from_numpy(np.asarray(self.weights.matrix, np.float32)),
            "pair_weight_updates": self.weights.updates,
            "label_source": self.labels.describe(),
            "label_rounds": list(self.label_rounds),
            "store_fingerprint": self.store.fingerprint,
            "store_path": str(self.store.path),
            "class_names": list(self.store.class_names),  # eval refuses a store with other classes
            "run_id": self.run_id,
            "plan": dict(self.plan),
            "best": dict(self.best),
            "stop_reason": self.stop_reason,
        }

    def _picker(self) -> BatchPicker:
        kind = "shuffle" if self.cfg.loss.infonce_only else self.cfg.sampler
        return BatchPicker(
            kind,
            batch_size=self.cfg.batch_size,
            clips_per_class=self.cfg.clips_per_class_for(self.cfg.model.num_classes),
            num_classes=self.cfg.model.num_classes,
            pair_weights=self.weights.matrix,
        )

    # ----------------------------------------------------------------- loop
    #: seconds between checkpoints inside a phase (one is always written at its end)
    checkpoint_seconds = 60.0

    def fit(self, stop_after: int | None = None) -> RunSummary:
        """Train to ``cfg.epochs`` or early stopping; ``stop_after`` ends early (resumable) after that epoch."""
        cfg = self.cfg
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        if self.stop_reason == "early_stopping":
            end = self.start_epoch  # a resumed run that had stopped early is finished
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                self.out_dir / "config.json",
                {
                    "phase": self.phase,
                    **cfg.to_dict(),
                    "label_source": self.labels.describe(),
                    "rows": self.rows.counts(),
                    "update_set": self.rows.update_spec,
                    "update_set_leaks_test": self.rows.leaks_test,
                    "plan": self.plan,
                },
            )
        last_save = time.perf_counter()
        with _progress(cfg.progress and self.is_writer) as progress:
            epoch_task = (
                progress.add_task(
                    f"{self.phase} epochs", total=cfg.epochs, completed=self.start_epoch
                )
                if progress
                else None
            )
            for epoch in range(self.start_epoch, end):
                record = self.train_epoch(epoch, progress)
                record.update(self.end_of_epoch(epoch))
                improved = self._monitor(epoch, record)
                last = epoch + 1 == end or self.stop_reason == "early_stopping"
                if last:
                    self.stop_reason = self.stop_reason or (
                        "planned_epochs" if epoch + 1 == cfg.epochs else "stop_after"
                    )
                    record.update(stop_reason=self.stop_reason, stopped_epoch=epoch + 1)
                record["seconds"] = round(time.perf_counter() - record.pop("_t0"), 4)
                if self.is_writer:
                    if improved:
                        best = self._checkpoint_state(epoch + 1)
                        for key in ("optimizer", "scheduler", "rng"):
                            best.pop(key)  # weights to score, not a state to resume from
                        save_checkpoint(self.out_dir / BEST_CHECKPOINT, best)
                    due = last or time.perf_counter() - last_save >= self.checkpoint_seconds
                    write_epoch_outputs(
                        self.out_dir,
                        record,
                        self._checkpoint_state(epoch + 1) if due else None,
                        plot=cfg.plots and (last or (epoch + 1) % 10 == 0),
                    )
                    if due:
                        last_save = time.perf_counter()
                if progress:
                    progress.update(epoch_task, advance=1)
                if last:
                    break
        self._sync()  # every rank returns after rank 0 wrote the last checkpoint
        from trainer.run_io import read_metrics

        return RunSummary(
            self.out_dir,
            self.phase,
            cfg.epochs,
            read_metrics(self.out_dir),
            list(self.label_rounds),
        )

    def _monitor(self, epoch: int, record: dict[str, Any]) -> bool:
        """Track the best epoch; set ``stop_reason`` when patience runs out.  True = new best.

        The score is the mean top-1 of the heads on the eval rows.  A tie also
        counts as the new best (later epochs have seen more annealing), but only
        a strict improvement resets the patience.
        """
        heads = [record[k] for k in ("top1_audio", "top1_video", "top1_av") if k in record]
        if not self.plan.get("early_stopping") or not heads:
            return False
        score = float(np.mean(heads))
        b = self.best
        record["score"] = score
        improved = b["score"] is None or score >= b["score"]
        if b["strict_score"] is None or score > b["strict_score"]:
            b["strict_score"], b["since_strict"] = score, 0
        else:
            b["since_strict"] += 1
        if improved:
            b["score"], b["epoch"] = score, epoch + 1
        record["best_epoch"], record["best_score"] = b["epoch"], b["score"]
        if self.cfg.patience and b["since_strict"] >= self.cfg.patience:
            self.stop_reason = "early_stopping"
        return improved

    def _sync(self) -> None:
        """Barrier between processes; nothing to wait for in a single-process run."""

    def _infer(self, mask: np.ndarray) -> dict[str, np.ndarray] | None:
        """Fused features + predictions of the masked rows, in store order.

        A distributed run returns them on rank 0 only (None elsewhere).
        """
        c = self.cfg
        return infer(
            self.model,
            self.source,
            mask,
            device=self.device,
            batch=c.infer_batch,
            amp=c.amp,
            prefetch=c.prefetch_shards,
        )

    def train_epoch(self, epoch: int, progress) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.model.train()
        labels = None if cfg.loss.infonce_only else self.labels.labels
        picker = self._picker()
        pair_w = torch.from_numpy(np.asarray(self.weights.matrix, np.float32)).to(self.device)
        n_train = int(self.rows.train.sum())
        task = (
            progress.add_task(f"epoch {epoch + 1}", total=self.plan["steps_per_epoch"])
            if progress
            else None
        )

        def advance() -> None:
            if progress:
                progress.update(task, advance=1)

        steps, losses = self._run_batches(epoch, labels, picker, pair_w, advance)
        if progress:
            progress.remove_task(task)
        record = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "steps": steps,
            "n_train": n_train,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "_t0": t0,
            "label_round": self.labels.round,
        }
        record.update(losses)
        if not np.isfinite(record.get("loss_total", 0.0)):
            raise FloatingPointError(
                f"{self.phase} epoch {epoch + 1}: loss became non-finite; lower --lr"
            )
        return record

    def _run_batches(
        self, epoch: int, labels, picker, pair_w: torch.Tensor, advance
    ) -> tuple[int, dict[str, float]]:
        """One epoch of optimiser steps; returns the step count and the mean loss terms."""
        cfg = self.cfg
        sums: dict[str, float] = {}
        steps = 0
        for pass_ in self.passes(epoch):
            for _rows, y, a, v in iter_batches(
                self.source,
                self.rows.train,
                labels,
                picker,
                seed=cfg.seed,
                epoch=pass_,
                buffer_rows=cfg.shuffle_buffer,
                prefetch=cfg.prefetch_shards,
            ):
                total, terms = self.step(a, v, y, pair_w)
                steps += 1
                sums["loss_total"] = sums.get("loss_total", 0.0) + total
                for k, val in terms.items():
                    sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + float(val)
                advance()
        return steps, {k: v / max(1, steps) for k, v in sums.items()}

    def passes(self, epoch: int) -> range:
        """The data passes of ``epoch`` (each its own seeded shuffle); one per epoch unless
        ``passes_per_epoch`` groups several short passes into one epoch."""
        n = max(1, self.cfg.passes_per_epoch)
        return range(epoch * n, (epoch + 1) * n)

    def step(
        self, a: np.ndarray, v: np.ndarray, y: np.ndarray, pair_w: torch.Tensor
    ) -> tuple[float, dict[str, torch.Tensor]]:
        a_t, v_t = _to_tensor(a, self.device), _to_tensor(v, self.device)
        y_t = torch.from_numpy(y).to(self.device)
        with _autocast(self.device, self.cfg.amp):
            out = self.model(a_t, v_t)
        total, terms = self.loss(out, y_t, pair_w)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()  # the schedule is per optimiser step
        return float(total.detach()), terms

    def end_of_epoch(self, epoch: int) -> dict[str, Any]:
        """Score the eval rows, update M-hat from the update set, re-cluster when due."""
        cfg = self.cfg
        record: dict[str, Any] = {}
        need = self.rows.update | self.rows.evaluate
        if need.any() and not cfg.loss.infonce_only:
            record.update(self._score_and_update(self._infer(need)))
        if self.phase == "pretrain" and self._recluster_due(epoch):
            record.update(self.recluster(epoch))
        return record

    def _score_and_update(self, res: dict[str, np.ndarray]) -> dict[str, Any]:
        """Top-1 on the eval rows and the M-hat update from the update rows of ``res``."""
        record: dict[str, Any] = {}
        y = self.labels.labels[res["rows"]]
        ev = self.rows.evaluate[res["rows"]]
        if ev.any():
            record.update(top1({k: val[ev] for k, val in res.items()}, self.labels.labels))
        up = self.rows.update[res["rows"]]
        record.update(self.weights.update(res["z"][up], y[up]))
        return record

    def _recluster_due(self, epoch: int) -> bool:
        r = self.cfg.recluster_every
        return (
            bool(r)
            and not self.cfg.loss.infonce_only
            and (epoch + 1) % r == 0
            and epoch + 1 < self.cfg.epochs
        )

    def recluster(self, epoch: int) -> dict[str, Any]:
        """K-means the fused features of the whole store into the next label round,
        then recompute M-hat from the same features under the new labels (so the
        next epoch's pair weights never belong to the previous round)."""
        res = self._infer(self.store.valid_rows(("audio", "video")))
        self.labels = self._cluster_next_round(epoch, res)
        self.label_rounds.append(self.labels.path)
        self.rows = self._row_sets()  # label >= 0 may cover other rows now
        return {"label_round": self.labels.round, **self._reweight(res)}

    def _reweight(self, res: dict[str, np.ndarray]) -> dict[str, Any]:
        """M-hat from the update rows of ``res`` under the current labels (after a re-clustering)."""
        up = self.rows.update[res["rows"]]
        stats = self.weights.update(res["z"][up], self.labels.labels[res["rows"]][up])
        return {f"{k}_after_recluster": v for k, v in stats.items()}

    def _cluster_next_round(self, epoch: int, res: dict[str, np.ndarray]) -> LabelSource:
        """Write the fused features ``res`` into ``RUN/fused`` and K-means them (one process only).

        The store is only read: the features go into the run directory as a Zarr
        array carrying the store's fingerprint and row ids, which ``diccae cluster``
        and ``diccae confusion`` read as ``--features RUN/fused``.
        """
        path = write_fused_features(
            self.store,
            res,
            self.out_dir,
            attrs={
                "run_id": self.run_id,
                "run_dir": str(self.out_dir),
                "epoch": epoch + 1,
                "phase": self.phase,
                "label_round": self.labels.round,
            },
        )
        nxt = self.labels.round + 1
        out = self.out_dir / f"labels_round{nxt}.npy"
        return recluster(
            self.store,
            features=str(path),
            out=out,
            k=self.labels.num_classes,
            previous=self.labels.path,
            round=nxt,
            seed=self.cfg.seed + nxt,
            n_init=self.cfg.recluster_n_init,
            max_iter=self.cfg.recluster_max_iter,
            progress=self.cfg.progress,
        )


@contextlib.contextmanager
def _progress(enabled: bool):
    if not enabled:
        yield None
        return
    from featstore.progress import make_progress

    with make_progress() as progress:
        yield progress


# ------------------------------------------------------------------- phases
def _open(store_path, mode: str = "r") -> FeatureStore:
    return (
        store_path
        if isinstance(store_path, FeatureStore)
        else FeatureStore.open(store_path, mode=mode)
    )


def saved_run_config(out_dir: str | Path) -> TrainConfig:
    """The configuration a run in ``out_dir`` was started with (from its checkpoint)."""
    return TrainConfig.from_dict(load_checkpoint(Path(out_dir) / CHECKPOINT)["config"])


def _resume_config(out_dir: Path, config: TrainConfig) -> TrainConfig:
    """A resumed run keeps its saved config; only ``epochs`` may be extended."""
    saved = saved_run_config(out_dir)
    if config.epochs > 0:  # auto (0) keeps the number the run resolved when it started
        saved.epochs = config.epochs
    saved.progress = config.progress
    saved.device = config.device
    return saved


def pretrain(
    store_path,
    *,
    labels_path: str | Path | None,
    out_dir: str | Path,
    config: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
) -> RunSummary:
    """Cluster-guided self-supervised pretraining (or InfoNCE only when ``loss.infonce_only``)."""
    out_dir = Path(out_dir)
    cfg = _resume_config(out_dir, config) if resume else TrainConfig.from_dict(config.to_dict())
    cfg.validate()
    store = _open(
        store_path, "r"
    )  # training only reads the store; re-clustering writes into out_dir
    if cfg.loss.infonce_only:
        labels = no_labels(store)
    else:
        if labels_path is None and resume:  # the run knows its current label round
            src = load_checkpoint(out_dir / CHECKPOINT)["label_source"]
            labels_path = src["path"] if src.get("kind") == "file" else None
        if labels_path is None:
            raise InputError(
                "pretrain needs --labels ROUND0.npy (from `diccae cluster`), or the InfoNCE-only variant"
            )
        labels = load_label_file(labels_path, store)
    _check_out_dir(out_dir, resume, store)
    return _run_class(cfg)(store, cfg, out_dir, "pretrain", labels, resume=resume).fit(stop_after)


def finetune(
    store_path,
    *,
    init_checkpoint: str | Path | None,
    out_dir: str | Path,
    config: TrainConfig,
    labels_path: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> RunSummary:
    """Supervised fine-tuning: new heads, backbone from ``init_checkpoint`` (None = from scratch)."""
    out_dir = Path(out_dir)
    cfg = _resume_config(out_dir, config) if resume else TrainConfig.from_dict(config.to_dict())
    init_state = None
    if init_checkpoint is not None and not resume:
        init_state = load_checkpoint(init_checkpoint)
        init_model = ModelConfig(**{**init_state["config"]["model"]})
        cfg.model.encoder_widths = tuple(init_model.encoder_widths)
        cfg.model.fusion_widths = tuple(init_model.fusion_widths)
        for name in ("encoded_dim", "projection_dim", "fused_dim", "input_norm"):
            setattr(cfg.model, name, getattr(init_model, name))
    cfg.loss.infonce_only = False
    cfg.validate()
    store = _open(store_path, "r")
    if init_state is not None and init_state.get("store_fingerprint") not in (
        None,
        store.fingerprint,
    ):
        # Pretraining on another store is legitimate (the paper pretrains on a merged
        # corpus); only the embedding dims have to agree, checked when loading.
        pass
    labels = load_label_file(labels_path, store) if labels_path is not None else ground_truth(store)
    _check_out_dir(out_dir, resume, store)
    return _run_class(cfg)(
        store, cfg, out_dir, "finetune", labels, init_state=init_state, resume=resume
    ).fit(stop_after)


def _run_class(cfg: TrainConfig) -> type[Run]:
    """:class:`Run`, or the DDP run when this process is one rank of several.

    A process started by ``torchrun`` (or ``diccae train ... --nproc N``) has
    ``WORLD_SIZE`` > 1 in its environment and joins the group here, so the phase
    functions keep one signature; without it nothing distributed is touched.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from trainer.distributed import world_size

        if world_size() <= 1:
            return Run
    from trainer.distributed import DistributedRun, ensure_process_group

    return DistributedRun if ensure_process_group(cfg.device) else Run


def _check_out_dir(out_dir: Path, resume: bool, store: FeatureStore | None = None) -> None:
    if store is not None:
        refuse_inside_store(out_dir, store)  # the store is only read; runs live beside it
    if not resume and (out_dir / CHECKPOINT).exists():
        raise InputError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
