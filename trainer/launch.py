"""Starting a phase as N local DDP processes: ``diccae train ... --nproc N``.

The same as ``torchrun --nproc-per-node N -m trainer <phase> ...`` without
torchrun: the ranks are spawned here and meet through a file in a temporary
directory (no port to pick).  Rank 0's progress updates travel back to this
process through a queue, so the caller draws them as for one process.  A
:class:`~featstore.errors.DiccaeError` in any rank is raised again here with its
type, so the exit code is the same as without ``--nproc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from featstore import errors
from featstore.errors import BackendUnavailable, DiccaeError, InputError
from featstore.progress import ProgressFn
from trainer import distributed
from trainer.loop import RunSummary
from trainer.phases import PHASES, run_phase
from trainer.run_io import CHECKPOINT, load_checkpoint, read_metrics


def launch_local(
    phase: str, nproc: int, *, progress: ProgressFn | None = None, **kwargs: Any
) -> RunSummary:
    """Run ``trainer.phases.<phase>(**kwargs)`` as ``nproc`` local DDP processes (spawned).

    ``nproc`` 1 runs it in this process -- which may be one rank of a torchrun job.
    """
    if phase not in PHASES:
        raise InputError(f"phase must be one of {PHASES}, got {phase!r}")
    if nproc < 1:
        raise InputError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and (distributed.world_size() > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        raise InputError(
            "--nproc inside a torchrun job: let torchrun start the processes (drop --nproc)"
        )
    if hasattr(kwargs.get("store_path"), "fingerprint"):
        kwargs["store_path"] = kwargs["store_path"].path  # an open store does not cross processes
    if nproc == 1:
        return run_phase(phase, progress=progress, **kwargs)
    if not distributed.is_available():
        raise BackendUnavailable("this torch build has no torch.distributed; run without --nproc")
    config = kwargs["config"]
    cuda = distributed.rank_device(config.device).startswith("cuda")
    if cuda and nproc > torch.cuda.device_count():
        raise BackendUnavailable(
            f"--nproc {nproc} but {torch.cuda.device_count()} GPUs are visible "
            "(one process per GPU; or --device cpu)"
        )
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not cuda and not dist.is_gloo_available():
        raise BackendUnavailable(
            "CPU distributed training needs the gloo backend, missing in this torch build"
        )
    updates = mp.get_context("spawn").SimpleQueue() if progress is not None else None
    with tempfile.TemporaryDirectory(prefix="diccae-ddp-") as tmp:
        init = f"file://{Path(tmp) / 'rendezvous'}"
        try:
            procs = mp.start_processes(
                _spawned_rank,
                args=(nproc, init, tmp, phase, kwargs, updates),
                nprocs=nproc,
                join=False,
                start_method="spawn",
            )
            assert procs is not None  # join=False returns the context
            while not procs.join(timeout=0.2):
                _forward(updates, progress)
            _forward(updates, progress)
        except Exception as exc:
            raise_rank_error(Path(tmp), exc)
    out_dir = Path(kwargs["out_dir"])
    state = load_checkpoint(out_dir / CHECKPOINT)
    return RunSummary(
        out_dir,
        phase,
        int(config.epochs),
        read_metrics(out_dir),
        list(state.get("label_rounds", [])),
    )


def _forward(updates: Any, progress: ProgressFn | None) -> None:
    """Hand rank 0's queued progress updates to this process's callback."""
    if updates is None or progress is None:
        return
    while not updates.empty():
        progress(updates.get())


def _spawned_rank(
    index: int,
    nproc: int,
    init: str,
    tmp: str,
    phase: str,
    kwargs: dict[str, Any],
    updates: Any = None,
) -> None:
    os.environ.update(
        {
            "RANK": str(index),
            "LOCAL_RANK": str(index),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            distributed.INIT_ENV: init,
        }
    )
    progress = updates.put if updates is not None and index == 0 else None
    try:
        run_phase(phase, progress=progress, **kwargs)
    except DiccaeError as exc:
        (Path(tmp) / f"error_rank{index}.json").write_text(
            json.dumps({"type": type(exc).__name__, "message": str(exc)})
        )
        raise
    finally:
        with contextlib.suppress(Exception):
            distributed.shutdown()


def raise_rank_error(tmp: Path, exc: Exception) -> None:
    """Raise the typed error a rank recorded in ``tmp`` (else a generic one) from ``exc``."""
    for path in sorted(tmp.glob("error_rank*.json")):
        info = json.loads(path.read_text())
        cls = getattr(errors, info["type"], None)
        if isinstance(cls, type) and issubclass(cls, DiccaeError):
            raise cls(info["message"]) from exc
    raise DiccaeError(f"a training process failed: {exc}") from exc
