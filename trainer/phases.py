"""The two phases of DICCAE training (paper section 2.3 and 3.1).

* :func:`pretrain`: cluster-guided self-supervision.  Classifier heads learn the
  K-means pseudo-labels of a label file; every ``recluster_every`` epochs the
  fused features of the whole store are written into the run directory
  (``RUN/fused``, never into the store, which is only read) and re-clustered
  (same K, aligned to the previous round) into the next label round; M-hat is
  recomputed at once under the new labels.  ``loss.infonce_only`` trains the
  InfoNCE alignment alone, without labels.
* :func:`finetune`: supervised training on ground-truth labels (or a label file),
  encoders and fusion initialised from a pretrain checkpoint, new heads.

Each opens the store read-only, checks the run directory and runs
:class:`trainer.loop.Run` -- or, in a process that is one rank of several (torchrun,
``--nproc``), :class:`trainer.distributed.DistributedRun`, so both keep one
signature.  Long work reports :class:`~featstore.progress.ProgressUpdate` values
to ``progress`` (tasks ``epochs``, ``steps`` and the re-clustering's); the CLI draws them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from featstore.common.fileio import refuse_inside_store
from featstore.errors import InputError
from featstore.progress import ProgressFn
from featstore.store.core import FeatureStore
from trainer import distributed
from trainer.config import ModelConfig, TrainConfig
from trainer.labels import ground_truth, load_label_file, no_labels
from trainer.loop import Run, RunSummary
from trainer.run_io import CHECKPOINT, load_checkpoint

PHASES = ("pretrain", "finetune")


def _open(store_path: Any, mode: str = "r") -> FeatureStore:
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
    store_path: Any,
    *,
    labels_path: str | Path | None,
    out_dir: str | Path,
    config: TrainConfig,
    resume: bool = False,
    stop_after: int | None = None,
    progress: ProgressFn | None = None,
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
    run = _run_class(cfg)(store, cfg, out_dir, "pretrain", labels, resume=resume, progress=progress)
    return run.fit(stop_after)


def finetune(
    store_path: Any,
    *,
    init_checkpoint: str | Path | None,
    out_dir: str | Path,
    config: TrainConfig,
    labels_path: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: ProgressFn | None = None,
) -> RunSummary:
    """Supervised fine-tuning: new heads, backbone from ``init_checkpoint`` (None = from scratch).

    Pretraining on another store is legitimate (the paper pretrains on a merged
    corpus); only the embedding dims have to agree, checked when loading.
    """
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
    labels = load_label_file(labels_path, store) if labels_path is not None else ground_truth(store)
    _check_out_dir(out_dir, resume, store)
    run = _run_class(cfg)(
        store,
        cfg,
        out_dir,
        "finetune",
        labels,
        init_state=init_state,
        resume=resume,
        progress=progress,
    )
    return run.fit(stop_after)


def run_phase(phase: str, **kwargs: Any) -> RunSummary:
    """:func:`pretrain` or :func:`finetune` by name (the launchers' entry)."""
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    return pretrain(**kwargs) if phase == "pretrain" else finetune(**kwargs)


def _run_class(cfg: TrainConfig) -> type[Run]:
    """:class:`Run`, or the DDP run when this process is one rank of several.

    A process started by ``torchrun`` (or ``diccae train ... --nproc N``) has
    ``WORLD_SIZE`` > 1 in its environment and joins the group here; without it
    nothing distributed is touched.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and distributed.world_size() <= 1:
        return Run
    return distributed.DistributedRun if distributed.ensure_process_group(cfg.device) else Run


def _check_out_dir(out_dir: Path, resume: bool, store: FeatureStore | None = None) -> None:
    if store is not None:
        refuse_inside_store(out_dir, store)  # the store is only read; runs live beside it
    if not resume and (out_dir / CHECKPOINT).exists():
        raise InputError(
            f"{out_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
