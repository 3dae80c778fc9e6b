"""DistributedDataParallel training: one global batch, computed by N processes.

The guarantee: a run on N ranks takes the same optimiser steps as a
single-process run with the same seed and (global) ``batch_size``, up to
floating-point summation order.  How:

* **Same batches.**  Every rank replays the single-process shuffle buffer and
  sampler on row indices and labels only (:func:`trainer.data.iter_global_batches`),
  so all ranks know each global batch.  Shards are split by rank
  (:func:`trainer.data.shard_order`): each shard is read by one rank, which
  computes the forward pass of that batch's rows from its shards (about B/N).
* **Same objective.**  The loss is the single-process one
  (:class:`trainer.losses.DiccaeLoss`) given a :class:`~trainer.losses.BatchView`
  whose ``gather`` is :func:`gather_batch` (all-gather with gradient) instead
  of the identity: cross-entropy terms are per-row, each rank sums its rows and
  divides by the global count; InfoNCE and the pairwise confusion loss see the
  gathered batch on every rank, and gradients flow back to the rank that owns
  each row.  Model and loss (InfoNCE temperature, confusion s/b) sit in one
  DDP module (:class:`trainer.build.TrainingObjective`), so every learnable
  parameter is averaged over ranks.
* **Same dropout.**  Dropout masks are drawn for the global batch from the CPU
  generator (identical on every rank, saved in checkpoints) and each rank keeps
  its rows' part (:class:`GlobalBatchDropout`).
* **Once per epoch on rank 0.**  Update/eval-set features are inferred by all
  ranks on their shards, gathered to rank 0, which scores them and computes the
  confusion matrix M-hat; it is broadcast.  Re-clustering (pretrain) runs on rank
  0; the new label file's path is broadcast and the other ranks read it.  Only
  rank 0 writes checkpoints, metrics and plots.

Because the batches do not depend on the number of ranks, a run may be resumed
with another ``--nproc`` and continues the same trajectory.  The loop is
:class:`trainer.loop.Run`'s; :class:`DistributedRun` overrides only its hooks.
Starting ranks on one machine is :mod:`trainer.launch`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from featstore.common.backend import resolve_device
from featstore.errors import BackendUnavailable
from trainer.data import BatchPicker
from trainer.global_batches import GlobalBatch, iter_global_batches, shard_index_of_rows
from trainer.inference import infer
from trainer.loop import Run, RunSummary
from trainer.losses import BatchView
from trainer.run_io import atomic_write_json

TIMEOUT_ENV = (
    "DICCAE_DIST_TIMEOUT_S"  # seconds a rank waits in a collective (rank 0 re-clustering!)
)
INIT_ENV = "DICCAE_DIST_INIT"  # init_method override (the --nproc launcher uses file://)
DEFAULT_TIMEOUT_S = 7200


# ------------------------------------------------------------ process group
def _dist():
    import torch.distributed as dist

    return dist


def is_available() -> bool:
    return _dist().is_available()


def world_size() -> int:
    """Processes in the default group (1 when there is none)."""
    dist = _dist()
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of its job, or alone; known before it joins the
    group (torchrun sets ``RANK``), so a command can decide early who draws and prints."""
    return rank() == 0 and int(os.environ.get("RANK", "0")) == 0


def rank_device(device: str = "auto") -> str:
    """This rank's device: ``cuda:LOCAL_RANK`` when the run uses CUDA, else ``cpu``."""
    resolved = resolve_device(device)
    if not resolved.startswith("cuda"):
        return "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    count = torch.cuda.device_count()
    if local >= count:
        raise BackendUnavailable(
            f"rank with LOCAL_RANK={local} needs GPU {local} but {count} are visible; "
            "start at most one process per GPU (or use --device cpu)"
        )
    return f"cuda:{local}"


def ensure_process_group(device: str = "auto") -> bool:
    """Join the group described by the environment (torchrun or the --nproc launcher).

    Does nothing when ``WORLD_SIZE`` is unset or 1, or a group exists already.
    Backend: NCCL when the run uses CUDA (each rank on ``cuda:LOCAL_RANK``), gloo
    on CPU.  Returns whether this process is one rank of several.
    """
    dist = _dist()
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n <= 1:
        return world_size() > 1
    if not dist.is_available():
        raise BackendUnavailable("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dist.is_initialized():
        return dist.get_world_size() > 1
    dev = rank_device(device)
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
        backend = "nccl"
    else:
        if not dist.is_gloo_available():
            raise BackendUnavailable(
                "CPU distributed training needs the gloo backend, missing in this torch build"
            )
        backend = "gloo"
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    kwargs: dict[str, Any] = {
        "backend": backend,
        "init_method": os.environ.get(INIT_ENV, "env://"),
        "rank": int(os.environ.get("RANK", "0")),
        "world_size": n,
        "timeout": timeout,
    }
    if backend == "nccl":
        kwargs["device_id"] = torch.device(dev)
    dist.init_process_group(**kwargs)
    return True


def shutdown() -> None:
    """Leave the process group (if any)."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------ gathering with grads
class _AllGatherRows(torch.autograd.Function):
    """all_gather of equally shaped (padded) blocks; backward sums the gradients of all ranks.

    Every rank evaluates the same full-batch loss, so the gradient of rank r's
    rows is the sum over ranks (N times dL/dx_r); DDP's average divides by N.
    Written with all_reduce (supported by every backend) instead of reduce_scatter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: int, rank_: int, world: int) -> torch.Tensor:
        dist = _dist()
        padded = torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))]).contiguous()
        out = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(out, padded)
        ctx.n, ctx.rank = x.shape[0], rank_
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        _dist().all_reduce(grad)
        return grad[ctx.rank, : ctx.n], None, None, None


def gather_batch(x: torch.Tensor, counts: Sequence[int], order: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-rank tensor ``x`` (rank r holds ``counts[r]`` rows).

    Rows come back in the single-process batch order: ``order`` maps the
    rank-major concatenation to batch positions.
    """
    dist = _dist()
    r, n = dist.get_rank(), dist.get_world_size()
    stacked = _AllGatherRows.apply(x, int(max(counts)), r, n)
    joined = torch.cat([stacked[k, : counts[k]] for k in range(n)])
    return joined[order]


# ------------------------------------------------------------------- dropout
class GlobalBatchDropout(nn.Dropout):
    """Dropout whose mask is drawn for the whole global batch, kept for this rank's rows.

    The mask comes from the CPU generator, which every rank seeds alike, so the
    ranks together apply the mask a single process draws on CPU for the same
    batch (same shape, same generator: ``empty(...).bernoulli_(1-p) / (1-p)``).
    ``batch_rows``/``positions`` are set before each forward.
    """

    batch_rows: int = 0
    positions: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.positions is None:
            return super().forward(x)
        if self.p >= 1.0:
            return x * 0.0
        noise = torch.empty((self.batch_rows, *x.shape[1:]), dtype=torch.float32).bernoulli_(
            1.0 - self.p
        )
        noise.div_(1.0 - self.p)
        return x * noise[self.positions].to(device=x.device, dtype=x.dtype)


def use_global_batch_dropout(model: nn.Module) -> list[GlobalBatchDropout]:
    """Swap every ``nn.Dropout`` of ``model`` for :class:`GlobalBatchDropout` (no state changes)."""
    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                new = GlobalBatchDropout(child.p)
                new.train(child.training)
                setattr(parent, name, new)
                swapped.append(new)
            elif isinstance(child, GlobalBatchDropout):
                swapped.append(child)
    return swapped


# ---------------------------------------------------------------------- run
class DistributedRun(Run):
    """One rank of a DDP run; the process group must exist (see :func:`ensure_process_group`).

    The loop, the loss and the files are :class:`trainer.loop.Run`'s; this class
    says what differs with N ranks: the barrier, which rows this rank computes
    and how they are gathered into the batch, the loss sums over ranks, which
    rank writes, and where features and M-hat are shared between epochs.
    """

    def __init__(self, store, cfg, out_dir, phase, labels, *, device=None, **kwargs: Any):
        dist = _dist()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0
        super().__init__(
            store, cfg, out_dir, phase, labels, device=device or rank_device(cfg.device), **kwargs
        )
        self.dropouts = use_global_batch_dropout(self.model)
        from torch.nn.parallel import DistributedDataParallel

        # a zero-weighted term leaves its parameters (a head, s/b, projections) out of the graph
        unused = not all(self.loss.weights.values())
        cuda = self.device.startswith("cuda")
        self.objective = DistributedDataParallel(
            self.objective,
            device_ids=[torch.device(self.device).index] if cuda else None,
            broadcast_buffers=False,
            find_unused_parameters=unused,
        )
        shard_of_row = shard_index_of_rows(self.source, np.arange(self.source.n_rows))
        self.inference_rows = shard_of_row % self.world == self.rank  # rows this rank infers

    # ----------------------------------------------------------- collectives
    def _broadcast(self, obj: Any) -> Any:
        box = [obj if self.is_writer else None]
        _dist().broadcast_object_list(box, src=0)
        return box[0]

    def _sync(self) -> None:
        _dist().barrier()

    def fit(self, stop_after: int | None = None) -> RunSummary:
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(
                self.out_dir / "distributed.json",
                {
                    "world_size": self.world,
                    "backend": _dist().get_backend(),
                    "device_rank0": self.device,
                    "global_batch_size": self.cfg.batch_size,
                    "start_epoch": self.start_epoch,
                },
            )
        return super().fit(stop_after)

    # ------------------------------------------------------------- training
    def global_batches(
        self, pass_: int, labels: np.ndarray | None, picker: BatchPicker
    ) -> Iterator[GlobalBatch]:
        """The single-process batches; this rank reads its shards and holds their rows."""
        args = self._pass_args(pass_, labels, picker)
        yield from iter_global_batches(**args, rank=self.rank, world_size=self.world)

    @contextlib.contextmanager
    def place_batch(self, batch: GlobalBatch) -> Iterator[BatchView | None]:
        """This rank's rows within the global batch: the gather for the loss, the dropout rows."""
        dev = self.device
        counts = np.bincount(batch.owner, minlength=self.world).tolist()
        rank_major = np.concatenate([np.flatnonzero(batch.owner == r) for r in range(self.world)])
        order = torch.from_numpy(np.argsort(rank_major, kind="stable")).to(dev)
        labels = torch.from_numpy(batch.labels).to(dev)
        positions = torch.from_numpy(batch.local)
        for m in self.dropouts:
            m.batch_rows, m.positions = len(batch.rows), positions
        try:
            yield BatchView(labels, lambda x: gather_batch(x, counts, order), self.world)
        finally:
            for m in self.dropouts:
                m.positions = None

    def _reduce_sums(self, sums: dict[str, float], bad: int) -> tuple[dict[str, float], int]:
        """Per-rank sums add up over ranks: the totals (each rank's objective counts its
        cross-entropy share ``world`` times) and the cross-entropy shares.  The gathered
        terms are the same on every rank.  ``bad``: the first non-finite step of any rank."""
        keys = [k for k in sums if k == "loss_total" or k.startswith("loss_ce_")]
        t = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
        first = torch.tensor([bad or np.iinfo(np.int64).max], dtype=torch.int64)
        if self.device.startswith("cuda"):
            t, first = t.to(self.device), first.to(self.device)
        dist = _dist()
        if keys:
            dist.all_reduce(t)
            sums.update(zip(keys, t.cpu().tolist(), strict=True))
            if "loss_total" in sums:
                sums["loss_total"] /= self.world
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
        step = int(first.item())
        return sums, 0 if step == np.iinfo(np.int64).max else step

    # ------------------------------------------------------- end of an epoch
    def _infer(self, mask: np.ndarray) -> dict[str, np.ndarray] | None:
        """Each rank infers the rows of its shards; rank 0 gets them all, in store order."""
        c = self.cfg
        mine = infer(
            self.model,
            self.source,
            mask & self.inference_rows,
            device=self.device,
            batch=c.infer_batch,
            amp=c.amp,
            prefetch=c.prefetch_shards,
        )
        parts: list[Any] | None = [None] * self.world if self.is_writer else None
        _dist().gather_object(mine, parts, dst=0)
        if parts is None:
            return None
        merged = {k: np.concatenate([p[k] for p in parts]) for k in mine}
        order = np.argsort(merged["rows"], kind="stable")
        return {k: v[order] for k, v in merged.items()}

    def _score_and_update(self, res: dict[str, np.ndarray] | None) -> dict[str, Any]:
        """Rank 0 scores and computes M-hat; every rank receives the record and the matrix."""
        record = super()._score_and_update(res) if self.is_writer else None
        record, matrix, updates = self._broadcast(
            (record, self.weights.matrix, self.weights.updates)
        )
        self.weights.matrix, self.weights.updates = matrix, updates
        return record

    def recluster(self, epoch: int) -> dict[str, Any]:
        """Features from all ranks, K-means and the new M-hat on rank 0, both broadcast to the others.

        The labels travel with the broadcast (not through the file), so ranks on
        other nodes need not see rank 0's run directory to continue.
        """
        res = self._infer(self.store.valid_rows(("audio", "video")))
        labels = self._cluster_next_round(epoch, res) if res is not None else None
        self.labels = self._broadcast(labels)
        self.label_rounds.append(self.labels.path)
        self.rows = self._row_sets()
        stats = self._reweight(res) if res is not None else None
        stats, matrix, updates = self._broadcast((stats, self.weights.matrix, self.weights.updates))
        self.weights.matrix, self.weights.updates = matrix, updates
        return {"label_round": self.labels.round, **stats}
