"""The two halves of :class:`trainer.loop.Run` around its loop.

* :class:`RunState`: what a run saves and restores -- the checkpoint's contents,
  resuming exactly, a backbone from a pretrain checkpoint, the best-epoch tracking
  behind early stopping.
* :class:`EpochEnd`: the work between epochs -- scoring the eval rows, the M-hat
  update, re-clustering into the next label round (pretrain).  A distributed run
  overrides :meth:`EpochEnd._infer`, :meth:`EpochEnd._score_and_update` and
  :meth:`EpochEnd.recluster`, where ranks share features and M-hat.

Both are mixins: they hold no state of their own; the attributes they use are
declared here and set by :class:`trainer.loop.Run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from featstore.errors import CheckpointError
from featstore.progress import ProgressFn
from featstore.store.core import FeatureStore
from trainer.config import TrainConfig
from trainer.inference import infer, top1
from trainer.labels import LabelSource, load_label_file, recluster
from trainer.losses import DiccaeLoss
from trainer.model import DiccaeModel
from trainer.rows import RowSets
from trainer.run_io import (
    CHECKPOINT,
    load_checkpoint,
    rng_state,
    set_rng_state,
    write_fused_features,
)
from trainer.weighting import PairWeights


class _RunAttributes:
    """The attributes of a run the mixins read (set in ``Run.__init__``)."""

    store: FeatureStore
    cfg: TrainConfig
    out_dir: Path
    phase: str
    labels: LabelSource
    label_rounds: list[str]
    rows: RowSets
    model: DiccaeModel
    loss: DiccaeLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    weights: PairWeights
    plan: dict[str, Any]
    best: dict[str, Any]
    stop_reason: str | None
    start_epoch: int
    run_id: str
    progress: ProgressFn | None
    device: str
    source: Any

    def _row_sets(self) -> RowSets:
        raise NotImplementedError


class RunState(_RunAttributes):
    """Checkpoint contents, resuming, a backbone to start from, the best epoch."""

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


class EpochEnd(_RunAttributes):
    """Scoring, the M-hat update and re-clustering between epochs."""

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

    def _score_and_update(self, res: dict[str, np.ndarray] | None) -> dict[str, Any]:
        """Top-1 on the eval rows and the M-hat update from the update rows of ``res``."""
        assert res is not None  # one process infers every row
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
        assert res is not None
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
            progress=self.progress,
        )
