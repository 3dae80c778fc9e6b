"""Everything a run writes: checkpoints, config.json, metrics (JSONL, CSV, PNG).

Checkpoints hold only tensors and JSON-able values so they load with
``torch.load(weights_only=True)``; they are written to a temp file and moved
into place with ``os.replace``, so a kill never leaves a half-written file.
:func:`write_epoch_outputs` is the one function a distributed run calls on rank 0.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featstore.common.fileio import atomic_write, remove_stale_temp_files
from featstore.errors import CheckpointError, torch_load_problem

CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"  # weights of the best eval epoch (no optimiser state)
CHECKPOINT_FORMAT = "diccae-trainer-checkpoint"
CHECKPOINT_VERSION = 1
#: the fused features of a run, inside its directory (the store is only read)
FUSED_DIR = "fused"


def atomic_write_bytes(path: Path, write) -> None:
    """Write ``path`` atomically (temp file, fsync, rename): a killed run never leaves half a file."""
    atomic_write(path, write)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode()))


def tensor_digest(state: Any) -> str:
    """SHA-256 over every tensor in ``state`` (key path, dtype, shape, bytes), in key order.

    Stored in the checkpoint and checked at load, so flipped bytes inside a tensor --
    which torch.load reads without complaint -- are caught.
    """
    h = hashlib.sha256()

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"{prefix}|{t.dtype}|{tuple(obj.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                if k != "tensor_sha256":
                    walk(f"{prefix}/{k}", obj[k])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)

    walk("", state)
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    state["tensor_sha256"] = tensor_digest(state)
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    remove_stale_temp_files(path.parent)  # e.g. half a checkpoint from a killed run (--resume)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling, zip and I/O errors alike
        raise CheckpointError(f"{path}: {torch_load_problem(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a diccae trainer checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is not supported")
    if "tensor_sha256" in state and tensor_digest(state) != state["tensor_sha256"]:
        raise CheckpointError(
            f"{path} is damaged: its tensors do not match the digest written with them"
        )
    return state


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------- metrics
def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_epoch_outputs(
    run_dir: Path,
    record: dict[str, Any],
    checkpoint_state: dict[str, Any] | None,
    *,
    plot: bool = True,
) -> None:
    """Append one epoch's metrics, refresh CSV + PNG, then write the checkpoint (when given).

    Metrics rows past the checkpoint's epoch (left by a run killed after logging)
    are dropped first, so a resumed run's metrics have no duplicates.
    """
    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir) if r["epoch"] < record["epoch"]]
    records.append(record)
    atomic_write_bytes(
        run_dir / "metrics.jsonl",
        lambda f: f.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()),
    )
    _write_csv(run_dir / "metrics.csv", records)
    if plot:  # matplotlib costs ~0.3 s; the loop plots at the end and every few epochs
        plot_curves(records, run_dir / "training_curves.png")
    if checkpoint_state is not None:
        save_checkpoint(run_dir / CHECKPOINT, checkpoint_state)


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys and not isinstance(r[k], (dict, list))]

    def write(f):
        import io

        text = io.StringIO()
        w = csv.DictWriter(text, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow(r)
        f.write(text.getvalue().encode())

    atomic_write_bytes(path, write)


def plot_curves(records: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in sorted({k for r in records for k in r if k.startswith("loss")}):
        axes[0].plot(epochs, [r.get(key, np.nan) for r in records], label=key, marker=".")
    axes[0].set_title("training losses")
    axes[0].set_yscale("log")
    for key in ("top1_audio", "top1_video", "top1_av"):
        if any(key in r for r in records):
            axes[1].plot(epochs, [r.get(key, np.nan) for r in records], label=key, marker=".")
    axes[1].set_title("top-1 on the eval rows")
    for key in ("confusion_mean", "confusion_var"):
        if any(key in r for r in records):
            axes[2].plot(epochs, [r.get(key, np.nan) for r in records], label=key, marker=".")
    axes[2].set_title("confusion degree of fused features (update set)")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write_bytes(Path(path), lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return Path(path)


def write_fused_features(
    store: Any, res: dict[str, np.ndarray], run_dir: Path, attrs: dict[str, Any]
) -> Path:
    """Write inference results ``res`` (``rows``, ``z``) as ``RUN_DIR/fused``; return its path.

    The one writer of a run's fused features, used by re-clustering and the demo.
    Rows without features stay NaN; the array carries the store's fingerprint and
    row ids, so ``diccae cluster`` and ``diccae confusion`` read it with
    ``--features RUN_DIR/fused`` and refuse it against another store.
    """
    from featstore.store.features import write_run_features

    fused = np.full((store.n_rows, res["z"].shape[1]), np.nan, np.float32)
    fused[res["rows"]] = res["z"]
    return write_run_features(Path(run_dir) / FUSED_DIR, store, fused, attrs=attrs)
