"""``python -m trainer pretrain|finetune ...``: the torchrun entry point.

``torchrun --nproc-per-node N -m trainer pretrain STORE --labels R0.npy --out RUN``
starts N processes; each parses the options of ``diccae train pretrain|finetune``
(the same table, :mod:`trainer.options`), joins the process group torchrun
describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``) and runs the
phase as one DistributedDataParallel rank (see :mod:`trainer.distributed`).
Without torchrun it is a plain single-process run.  It calls the phases directly,
not the CLI: rank 0 prints one line per epoch and where the run was written; an
error is one line on stderr and the exit code of its type (featstore.errors).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from featstore.errors import DiccaeError
from featstore.progress import ProgressUpdate
from trainer.options import CONFIG_HELP, NPROC_HELP, PRESET_HELP, TRAIN_OPTIONS

PHASES = ("pretrain", "finetune")
USAGE = (
    "usage: torchrun --nproc-per-node N -m trainer {pretrain|finetune} STORE [OPTIONS]\n"
    "       (the options of `diccae train pretrain|finetune --help`)"
)


def parser(phase: str) -> argparse.ArgumentParser:
    """The options of ``diccae train <phase>``, for argparse."""
    p = argparse.ArgumentParser(prog=f"python -m trainer {phase}")
    p.add_argument("store", type=Path, help="feature store directory")
    p.add_argument("--out", type=Path, default=Path(f"runs/{phase}"), help="run directory")
    p.add_argument("--labels", type=Path, default=None, help="label file")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    if phase == "pretrain":
        p.add_argument("--infonce-only", action="store_true", help="InfoNCE alignment only")
    else:
        p.add_argument("--init", type=Path, default=None, help="pretrain checkpoint")
    p.add_argument("--nproc", type=int, default=1, help=NPROC_HELP)
    for name, _key, typ, help_ in TRAIN_OPTIONS:
        flag = f"--{name.replace('_', '-')}"
        if typ is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, help=help_)
        else:
            p.add_argument(flag, dest=name, type=typ, default=None, help=help_)
    p.add_argument("--preset", default="default", help=PRESET_HELP)
    p.add_argument("--config", dest="config_file", type=Path, default=None, help=CONFIG_HELP)
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress lines"
    )
    return p


class EpochLines:
    """A plain progress callback: one line on stderr per finished epoch (no terminal
    control, so it reads well in a torchrun log)."""

    def __init__(self) -> None:
        self.name, self.done, self.total = "epochs", 0.0, 0.0

    def __call__(self, update: ProgressUpdate) -> None:
        if update.task != "epochs":
            return
        self.name = update.description or self.name
        self.total = update.total if update.total is not None else self.total
        self.done = update.completed if update.completed is not None else self.done
        if update.advance:
            self.done += update.advance
            print(f"{self.name}: {self.done:g}/{self.total:g}", file=sys.stderr, flush=True)


def train(phase: str, argv: list[str]) -> None:
    """Parse ``argv`` as ``diccae train <phase>`` does and run the phase in this process."""
    from trainer import distributed
    from trainer.launch import launch_local
    from trainer.options import build_config, keep_saved_epochs

    args = parser(phase).parse_args(argv)
    names = {n for n, *_ in TRAIN_OPTIONS} | {"config_file", "progress", "preset"}
    options: dict[str, Any] = {k: v for k, v in vars(args).items() if k in names}
    cfg = keep_saved_epochs(build_config(options), options, args.out, args.resume)
    kwargs: dict[str, Any] = {"store_path": args.store, "labels_path": args.labels}
    if phase == "pretrain":
        cfg.loss.infonce_only = args.infonce_only or cfg.loss.infonce_only
    else:
        kwargs["init_checkpoint"] = args.init
    summary = launch_local(
        phase,
        args.nproc,
        out_dir=args.out,
        config=cfg,
        resume=args.resume,
        progress=EpochLines() if cfg.progress and distributed.is_rank_zero() else None,
        **kwargs,
    )
    if distributed.is_rank_zero():
        stop = summary.stop
        print(
            f"{phase}: stopped after epoch {stop.get('stopped_epoch')} of {summary.epochs} "
            f"({stop.get('stop_reason')}); run written to {summary.run_dir}"
        )


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in PHASES + ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        train(argv[0], argv[1:])
        return 0
    except DiccaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        from trainer.distributed import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(run())
