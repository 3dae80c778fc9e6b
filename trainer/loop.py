"""The training loop of one phase (paper section 2.3 and 3.1): :class:`Run`.

The loop only iterates, steps and logs: the objective is :mod:`trainer.losses`,
the batches :mod:`trainer.data`, the plan :mod:`trainer.plan`, the M-hat update
:mod:`trainer.weighting`, the files :mod:`trainer.run_io`; :mod:`trainer.phases`
decides what a phase trains.  One loop serves one process and N DDP ranks:
:class:`trainer.distributed.DistributedRun` overrides only what differs (the
barrier, the gathered batch, the reduction over ranks, which rank writes).

How long a phase runs: the plan's epochs, a per-step warm-up + cosine schedule,
and, when labels stay fixed, early stopping on the eval rows: the score is the
mean top-1 of the three heads; the best epoch's weights are kept in ``best.pt``
beside the last ``checkpoint.pt``, and the metrics say why and when it stopped.
A non-finite loss raises :class:`~featstore.errors.TrainingDiverged`; the
checkpoints written before stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featstore.common.backend import resolve_device
from featstore.errors import TrainingDiverged
from featstore.progress import ProgressFn, ProgressTask, ProgressUpdate
from featstore.store.core import FeatureStore
from trainer.build import TrainingObjective, build_model_and_loss, build_optimizer
from trainer.config import TrainConfig
from trainer.data import BatchPicker, StoreSource, cached_source, iter_batches
from trainer.global_batches import GlobalBatch
from trainer.inference import to_tensor
from trainer.labels import LabelSource
from trainer.losses import BatchView
from trainer.plan import plan_phase, resumed_plan
from trainer.rows import RowSets, resolve_row_sets
from trainer.run_io import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    atomic_write_json,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
    write_epoch_outputs,
)
from trainer.run_state import EpochEnd, RunState
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


class Run(RunState, EpochEnd):
    """State of one phase; :meth:`fit` is the loop.

    Subclasses for other process layouts override the hooks: ``is_writer``
    (this process writes run files), :meth:`_sync` (a barrier),
    :meth:`global_batches` and :meth:`place_batch` (which rows this process
    computes and how they join the batch), :meth:`_reduce_sums` (loss sums over
    processes), and the end-of-epoch sharing in :class:`trainer.run_state.EpochEnd`.
    """

    is_writer = True
    world = 1
    #: seconds between checkpoints inside a phase (one is always written at its end)
    checkpoint_seconds = 60.0

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
        progress: ProgressFn | None = None,
    ):
        self.store, self.cfg, self.out_dir, self.phase = store, cfg, Path(out_dir), phase
        self.labels = labels
        self.progress = progress if self.is_writer else None
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
        self.objective: nn.Module = TrainingObjective(
            self.model, self.loss, device=self.device, amp=cfg.amp
        )
        if init_state is not None:
            self._load_backbone(init_state)
        self.rows = self._row_sets()
        if not resume:
            self.plan = plan_phase(cfg, phase, self.rows)
        else:
            saved = load_checkpoint(self.out_dir / CHECKPOINT).get("plan") or {}
            self.plan = resumed_plan(saved, cfg)
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

    def _row_sets(self) -> RowSets:
        c = self.cfg
        labels = None if c.loss.infonce_only else self.labels.labels
        specs = {"split": c.split, "update_set": c.update_set, "eval_split": c.eval_split}
        return resolve_row_sets(self.store, labels, seed=c.seed, **specs)

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
        with contextlib.ExitStack() as bars:
            epochs_bar = bars.enter_context(
                ProgressTask(
                    self.progress, "epochs", total=cfg.epochs, description=f"{self.phase} epochs"
                )
            )
            epochs_bar.update(completed=self.start_epoch)
            bars.enter_context(ProgressTask(self.progress, "steps", total=None))
            for epoch in range(self.start_epoch, end):
                record = self.train_epoch(epoch, self.progress)
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
                epochs_bar.advance(1)
                if last:
                    break
        self._sync()  # every rank returns after rank 0 wrote the last checkpoint
        return RunSummary(
            self.out_dir,
            self.phase,
            cfg.epochs,
            read_metrics(self.out_dir),
            list(self.label_rounds),
        )

    def _sync(self) -> None:
        """Barrier between processes; nothing to wait for in a single-process run."""

    def train_epoch(self, epoch: int, progress: ProgressFn | None) -> dict[str, Any]:
        """One epoch of optimiser steps; its record (loss terms, steps, lr)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        self.model.train()
        labels = None if cfg.loss.infonce_only else self.labels.labels
        picker = self._picker()
        pair_w = torch.from_numpy(np.asarray(self.weights.matrix, np.float32)).to(self.device)
        n_train = int(self.rows.train.sum())
        # this epoch's batches, estimated from the rows labelled now (a re-clustering can
        # change them; the plan's count is from the start) and corrected when the epoch ends
        spe = max(1, math.ceil(n_train / cfg.batch_size)) * max(1, cfg.passes_per_epoch)
        if progress is not None:  # one "steps" bar per phase, restarted every epoch
            progress(ProgressUpdate("steps", 0.0, spe, description=f"epoch {epoch + 1}"))

        def advance() -> None:
            if progress is not None:
                progress(ProgressUpdate("steps", advance=1))

        steps, losses, bad_step = self._run_batches(epoch, labels, picker, pair_w, advance)
        if progress is not None and steps != spe:  # class-balanced batches vary in number
            progress(ProgressUpdate("steps", total=steps))
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "steps": steps,
            "n_train": n_train,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "_t0": t0,
            "label_round": self.labels.round,
        }
        record.update(losses)
        if bad_step or not np.isfinite(record.get("loss_total", 0.0)):
            self._diverged(epoch, bad_step or steps, record.get("loss_total"))
        return record

    def _diverged(self, epoch: int, step: int, loss: Any) -> None:
        cfg = self.cfg
        kept = (
            f"the checkpoints written before are kept in {self.out_dir}"
            if (self.out_dir / CHECKPOINT).exists()
            else "no checkpoint was written yet"
        )
        fix = f"lower --lr (now {cfg.lr:g})"
        if cfg.amp == "on" and self.device.startswith("cuda"):
            fix += " or train in float32 (--amp off)"
        raise TrainingDiverged(
            f"{self.phase} epoch {epoch + 1}, step {step}: the loss or the weight update became non-finite "
            f"({loss}); {kept}. Start again with {fix} (a resumed run keeps its settings)"
        )

    def _run_batches(
        self,
        epoch: int,
        labels: np.ndarray | None,
        picker: BatchPicker,
        pair_w: torch.Tensor,
        advance: Callable[[], None],
    ) -> tuple[int, dict[str, float], int]:
        """One epoch of optimiser steps: the step count, the mean loss terms and the
        first step whose loss was non-finite (0 = none)."""
        sums: dict[str, float] = {}
        steps = bad = 0
        for pass_ in self.passes(epoch):
            for batch in self.global_batches(pass_, labels, picker):
                total, terms = self.step(batch, pair_w)
                steps += 1
                sums["loss_total"] = sums.get("loss_total", 0.0) + total
                for k, val in terms.items():
                    sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + float(val)
                advance()
                if not bad and not math.isfinite(total):
                    bad = steps
                    if self.world == 1:  # alone: stop now (ranks stop together at the epoch end)
                        return steps, {k: v / steps for k, v in sums.items()}, bad
        sums, bad = self._reduce_sums(sums, bad)
        return steps, {k: v / max(1, steps) for k, v in sums.items()}, bad

    def _reduce_sums(self, sums: dict[str, float], bad: int) -> tuple[dict[str, float], int]:
        """The epoch's loss sums of all processes (and the first non-finite step of any)."""
        return sums, bad

    def passes(self, epoch: int) -> range:
        """The data passes of ``epoch`` (each its own seeded shuffle); one per epoch unless
        ``passes_per_epoch`` groups several short passes into one epoch."""
        n = max(1, self.cfg.passes_per_epoch)
        return range(epoch * n, (epoch + 1) * n)

    def global_batches(
        self, pass_: int, labels: np.ndarray | None, picker: BatchPicker
    ) -> Iterator[GlobalBatch]:
        """The batches of one data pass; this process holds every row of each."""
        for rows, y, a, v in iter_batches(**self._pass_args(pass_, labels, picker)):
            yield GlobalBatch.whole(rows, y, a, v)

    def _pass_args(
        self, pass_: int, labels: np.ndarray | None, picker: BatchPicker
    ) -> dict[str, Any]:
        """What decides the batches of data pass ``pass_`` (the same for every layout)."""
        c = self.cfg
        return {
            "source": self.source,
            "mask": self.rows.train,
            "labels": labels,
            "picker": picker,
            "seed": c.seed,
            "epoch": pass_,
            "buffer_rows": c.shuffle_buffer,
            "prefetch": c.prefetch_shards,
        }

    @contextlib.contextmanager
    def place_batch(self, batch: GlobalBatch) -> Iterator[BatchView | None]:
        """How this process's rows join ``batch`` in the loss (None: they are all of it)."""
        yield None

    def step(
        self, batch: GlobalBatch, pair_w: torch.Tensor
    ) -> tuple[float, dict[str, torch.Tensor]]:
        """One optimiser step on ``batch``; this process computes the rows it holds."""
        dev = self.device
        a_t, v_t = to_tensor(batch.audio, dev), to_tensor(batch.video, dev)
        y_t = torch.from_numpy(batch.labels[batch.local]).to(dev)
        with self.place_batch(batch) as view:
            total, terms = self.objective(a_t, v_t, y_t, pair_w, view)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        try:
            self.optimizer.step()
        except RuntimeError as exc:  # an update beyond float32 (a huge --lr): diverged too
            if "overflow" not in str(exc):
                raise
            return float("nan"), terms
        self.scheduler.step()  # the schedule is per optimiser step
        return float(total.detach()), terms
