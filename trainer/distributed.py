"""DistributedDataParallel training: one global batch, computed by N processes.

The guarantee: a run on N ranks takes the same optimiser steps as a
single-process run with the same seed and (global) ``batch_size``, up to
floating-point summation order.  How:

* **Same batches.**  Every rank replays the single-process shuffle buffer and
  sampler on row indices and labels only (:func:`trainer.data.iter_global_batches`),
  so all ranks know each global batch.  Shards are split by rank
  (:func:`trainer.data.shard_order`): each shard is read by one rank, which
  computes the forward pass of that batch's rows from its shards (about B/N).
* **Same objective.**  Cross-entropy terms are per-row: each rank sums its rows
  and divides by the global count.  InfoNCE and the pairwise confusion loss
  depend on the whole batch, so projections and fused features are gathered
  from all ranks with gradient (:func:`gather_batch`) and every rank evaluates
  the full-batch loss; gradients flow back to the rank that owns each row.
  Model and loss modules (InfoNCE temperature, confusion s/b) sit in one DDP
  module, so every learnable parameter is averaged over ranks.
* **Same dropout.**  Dropout masks are drawn for the global batch from the CPU
  generator (identical on every rank, saved in checkpoints) and each rank keeps
  its rows' part (:class:`GlobalBatchDropout`).
* **Once per epoch on rank 0.**  Update/eval-set features are inferred by all
  ranks on their shards, gathered to rank 0, which scores them and computes the
  confusion matrix M-hat; it is broadcast.  Re-clustering (pretrain) runs on rank
  0; the new label file's path is broadcast and the other ranks read it.  Only
  rank 0 writes checkpoints, metrics and plots.

Because the batches do not depend on the number of ranks, a run may be resumed
with another ``--nproc`` and continues the same trajectory.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featstore.common.backend import resolve_device
from featstore.errors import BackendUnavailable, DiccaeError, InputError
from trainer.data import iter_global_batches, shard_index_of_rows
from trainer.engine import Run, RunSummary, _autocast, _to_tensor, infer
from trainer.run_io import CHECKPOINT, atomic_write_json, load_checkpoint, read_metrics

TIMEOUT_ENV = (
    "DICCAE_DIST_TIMEOUT_S"  # seconds a rank waits in a collective (rank 0 re-clustering!)
)
INIT_ENV = "DICCAE_DIST_INIT"  # init_method override (the --nproc launcher uses file://)
DEFAULT_TIMEOUT_S = 7200
CE_HEADS = (
    ("ce_audio", "logits_audio"),
    ("ce_video", "logits_video"),
    ("ce_fused", "logits_fused"),
)


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


# ----------------------------------------------------------------- objective
class DistributedObjective(nn.Module):
    """Model + loss as one module, so DDP synchronises every learnable parameter.

    ``forward`` returns this rank's share of the objective, scaled so that DDP's
    gradient average equals the gradient of the single-process loss, and the
    global value of each term (cross-entropy terms as this rank's contribution,
    to be summed over ranks).
    """

    def __init__(self, model: nn.Module, loss: nn.Module, *, world: int, device: str, amp: str):
        super().__init__()
        self.model, self.loss = model, loss
        self.world, self.device, self.amp = world, device, amp

    def forward(
        self,
        audio: torch.Tensor,
        video: torch.Tensor,
        y_local: torch.Tensor,
        y_all: torch.Tensor,
        n_labelled: int,
        counts: list[int],
        order: torch.Tensor,
        pair_weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with _autocast(self.device, self.amp):
            out = self.model(audio, video)
        w = self.loss.weights
        terms: dict[str, torch.Tensor] = {}
        total = out["z"].sum() * 0.0
        for key, head in CE_HEADS:
            if w[key]:
                terms[key] = self._ce_sum(out[head], y_local) / max(1, n_labelled)
                total = total + self.world * w[key] * terms[key]
        if w["infonce"]:
            pa = gather_batch(out["proj_audio"].float(), counts, order)
            pv = gather_batch(out["proj_video"].float(), counts, order)
            terms["infonce"] = self.loss.infonce(pa, pv)
            total = total + w["infonce"] * terms["infonce"]
        if w["confusion"]:
            z = gather_batch(out["z"].float(), counts, order)
            terms["confusion"] = self.loss.confusion(z, y_all, pair_weights)
            total = total + w["confusion"] * terms["confusion"]
        return total, {k: v.detach() for k, v in terms.items()}

    def _ce_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        keep = labels >= 0
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits[keep].float(),
            labels[keep],
            reduction="sum",
            label_smoothing=self.loss.classification.label_smoothing,
        )


# ---------------------------------------------------------------------- run
class DistributedRun(Run):
    """One rank of a DDP run; the process group must exist (see :func:`ensure_process_group`)."""

    def __init__(
        self, store, cfg, out_dir, phase, labels, *, init_state=None, resume=False, device=None
    ):
        dist = _dist()
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0
        super().__init__(
            store,
            cfg,
            out_dir,
            phase,
            labels,
            init_state=init_state,
            resume=resume,
            device=device or rank_device(cfg.device),
        )
        self.dropouts = use_global_batch_dropout(self.model)
        self.objective = DistributedObjective(
            self.model, self.loss, world=self.world, device=self.device, amp=cfg.amp
        )
        from torch.nn.parallel import DistributedDataParallel

        # a zero-weighted term leaves its parameters (a head, s/b, projections) out of the graph
        unused = not all(self.loss.weights.values())
        cuda = self.device.startswith("cuda")
        self.ddp = DistributedDataParallel(
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
    def _run_batches(
        self, epoch: int, labels, picker, pair_w: torch.Tensor, advance
    ) -> tuple[int, dict[str, float]]:
        """Every rank steps through the same global batches; loss terms are summed over ranks."""
        cfg = self.cfg
        sums: dict[str, float] = {}
        steps = 0
        for pass_ in self.passes(epoch):
            for batch in iter_global_batches(
                self.source,
                self.rows.train,
                labels,
                picker,
                seed=cfg.seed,
                epoch=pass_,
                buffer_rows=cfg.shuffle_buffer,
                prefetch=cfg.prefetch_shards,
                rank=self.rank,
                world_size=self.world,
            ):
                for k, val in self.step_global(batch, pair_w).items():
                    sums[k] = sums.get(k, 0.0) + val
                steps += 1
                advance()
        sums = self._reduce_terms(sums)
        w = self.loss.weights
        losses = {f"loss_{k}": v / max(1, steps) for k, v in sums.items()}
        if sums:
            losses["loss_total"] = sum(w[k] * v for k, v in sums.items()) / max(1, steps)
        return steps, losses

    def _reduce_terms(self, sums: dict[str, float]) -> dict[str, float]:
        """Cross-entropy sums are per-rank contributions: add them up over ranks."""
        keys = [k for k, _ in CE_HEADS if k in sums]
        if keys:
            t = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
            if self.device.startswith("cuda"):
                t = t.to(self.device)
            _dist().all_reduce(t)
            sums.update(zip(keys, t.cpu().tolist(), strict=True))
        return sums

    def step_global(self, batch, pair_w: torch.Tensor) -> dict[str, float]:
        """One optimiser step on the global batch; this rank computes its rows."""
        dev = self.device
        a_t, v_t = _to_tensor(batch.audio, dev), _to_tensor(batch.video, dev)
        counts = np.bincount(batch.owner, minlength=self.world).tolist()
        rank_major = np.concatenate([np.flatnonzero(batch.owner == r) for r in range(self.world)])
        order = torch.from_numpy(np.argsort(rank_major, kind="stable")).to(dev)
        y_all = torch.from_numpy(batch.labels).to(dev)
        y_local = torch.from_numpy(batch.labels[batch.local]).to(dev)
        positions = torch.from_numpy(batch.local)
        for m in self.dropouts:
            m.batch_rows, m.positions = len(batch.rows), positions
        try:
            total, terms = self.ddp(
                a_t, v_t, y_local, y_all, int((batch.labels >= 0).sum()), counts, order, pair_w
            )
        finally:
            for m in self.dropouts:
                m.positions = None
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.scheduler.step()  # per optimiser step, as in the single-process run
        return {k: float(v) for k, v in terms.items()}

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
        parts: list | None = [None] * self.world if self.is_writer else None
        _dist().gather_object(mine, parts, dst=0)
        if not self.is_writer:
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
        labels = self._cluster_next_round(epoch, res) if self.is_writer else None
        self.labels = self._broadcast(labels)
        self.label_rounds.append(self.labels.path)
        self.rows = self._row_sets()
        stats = self._reweight(res) if self.is_writer else None
        stats, matrix, updates = self._broadcast((stats, self.weights.matrix, self.weights.updates))
        self.weights.matrix, self.weights.updates = matrix, updates
        return {"label_round": self.labels.round, **stats}


# ------------------------------------------------------------ local launcher
PHASES = ("pretrain", "finetune")


def launch_local(phase: str, nproc: int, **kwargs: Any) -> RunSummary:
    """Run ``trainer.engine.<phase>(**kwargs)`` as ``nproc`` local DDP processes (spawned).

    The same as ``torchrun --nproc-per-node nproc -m trainer <phase> ...`` without
    torchrun; the ranks meet through a file in a temporary directory (no port to
    pick).  A :class:`DiccaeError` in any rank is raised again here with its type.
    """
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    from trainer import engine

    if hasattr(kwargs.get("store_path"), "fingerprint"):
        kwargs["store_path"] = kwargs[
            "store_path"
        ].path  # an open FeatureStore does not cross processes
    if nproc == 1:
        return getattr(engine, phase)(**kwargs)
    if not is_available():
        raise BackendUnavailable("this torch build has no torch.distributed; run without --nproc")
    config = kwargs["config"]
    if rank_device(config.device).startswith("cuda") and nproc > torch.cuda.device_count():
        raise BackendUnavailable(
            f"--nproc {nproc} but {torch.cuda.device_count()} GPUs are visible "
            "(one process per GPU; or --device cpu)"
        )
    if not rank_device(config.device).startswith("cuda") and not _dist().is_gloo_available():
        raise BackendUnavailable(
            "CPU distributed training needs the gloo backend, missing in this torch build"
        )
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="diccae-ddp-") as tmp:
        init = f"file://{Path(tmp) / 'rendezvous'}"
        try:
            mp.start_processes(
                _spawned_rank,
                args=(nproc, init, tmp, phase, kwargs),
                nprocs=nproc,
                join=True,
                start_method="spawn",
            )
        except Exception as exc:
            _raise_rank_error(Path(tmp), exc)
    out_dir = Path(kwargs["out_dir"])
    state = load_checkpoint(out_dir / CHECKPOINT)
    return RunSummary(
        out_dir,
        phase,
        int(config.epochs),
        read_metrics(out_dir),
        list(state.get("label_rounds", [])),
    )


def _spawned_rank(
    index: int, nproc: int, init: str, tmp: str, phase: str, kwargs: dict[str, Any]
) -> None:
    os.environ.update(
        {
            "RANK": str(index),
            "LOCAL_RANK": str(index),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            INIT_ENV: init,
        }
    )
    from trainer import engine

    try:
        getattr(engine, phase)(**kwargs)
    except DiccaeError as exc:
        (Path(tmp) / f"error_rank{index}.json").write_text(
            json.dumps({"type": type(exc).__name__, "message": str(exc)})
        )
        raise
    finally:
        with contextlib.suppress(Exception):
            shutdown()


def _raise_rank_error(tmp: Path, exc: Exception) -> None:
    from featstore import errors

    for path in sorted(tmp.glob("error_rank*.json")):
        info = json.loads(path.read_text())
        cls = getattr(errors, info["type"], None)
        if isinstance(cls, type) and issubclass(cls, DiccaeError):
            raise cls(info["message"]) from exc
    raise DiccaeError(f"a training process failed: {exc}") from exc
