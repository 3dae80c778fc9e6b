"""Running a trained model over store rows: fused features and per-head predictions.

Shared by the training loop (eval rows, M-hat update, re-clustering), ``diccae eval``
and the demo.  :func:`autocast` and :func:`to_tensor` are the one place that decides
the precision and moves a NumPy block onto the device, for training steps as well.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from trainer.data import iter_rows
from trainer.model import DiccaeModel


def autocast(device: str, amp: str) -> Any:
    """bfloat16 autocast on CUDA when ``amp == "on"``; a no-op context otherwise.

    auto = float32: on an H200 bf16 autocast ran this small MLP at 0.80-0.94x the
    float32 steps/s (launch-bound; casts cost more than they save), see
    docs/gpu-and-scale.md.  AMP here means CUDA mixed precision; CPU runs stay float32.
    """
    if amp == "on" and device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_tensor(x: np.ndarray, device: str) -> torch.Tensor:
    """A float32 tensor of ``x`` on ``device`` (pinned, non-blocking copy to a GPU)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if device != "cpu":
        t = t.pin_memory().to(device, non_blocking=True)
    return t.float()


@torch.no_grad()
def infer(
    model: DiccaeModel,
    source: Any,
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
    rows: list[np.ndarray] = []
    zs: list[np.ndarray] = []
    preds: dict[str, list[np.ndarray]] = {"audio": [], "video": [], "av": []}
    for r, a, v in iter_rows(source, mask, batch=batch, prefetch=prefetch):
        with autocast(device, amp):
            out = model(to_tensor(a, device), to_tensor(v, device))
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
    """Top-1 of the audio, video and audio-visual heads on the rows of ``result``."""
    if len(result["rows"]) == 0:
        return {}
    y = labels[result["rows"]]
    return {f"top1_{k}": float((result[f"pred_{k}"] == y).mean()) for k in ("audio", "video", "av")}
