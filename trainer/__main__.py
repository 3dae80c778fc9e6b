"""``python -m trainer pretrain|finetune ...``: the torchrun entry point.

``torchrun --nproc-per-node N -m trainer pretrain STORE --labels R0.npy --out RUN``
starts N processes; each runs the same ``diccae train`` command, joins the process
group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``)
and becomes one DistributedDataParallel rank (see :mod:`trainer.distributed`).
Without torchrun it is a plain single-process ``diccae train``.
"""

from __future__ import annotations

import sys

PHASES = ("pretrain", "finetune")


def run(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in PHASES + ("-h", "--help"):
        print(
            "usage: torchrun --nproc-per-node N -m trainer {pretrain|finetune} STORE [OPTIONS]\n"
            "       (the options of `diccae train pretrain|finetune --help`)",
            file=sys.stderr,
        )
        return 2
    from cli.main import main

    try:
        return main(["train", *argv])
    finally:
        from trainer.distributed import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(run())
