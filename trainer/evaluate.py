"""``diccae eval``: top-1 per head and the confusion degree of the fused features.

Table 1 of the paper reports top-1 for audio (A), video (V) and audio-visual
(A-V); section 3.3 judges feature quality by the distribution of the
confusion degree (lower mean and variance = classes better apart).  Both are
computed on one split of the store with the labels the run was trained on, and
the histogram compares the fused features with the input embeddings (the
paper's Figure 2 compares with and without DICCAE).

Beside each head, a logistic-regression probe on the run's own inputs
(:mod:`trainer.probe`), fitted on the rows the run trained on.  By default the
best checkpoint (``best.pt``, the best eval epoch) is scored when the run kept
one, else the last; the result says which.  When the run's M-hat update set came
from the scored split (``--update-set test:F``), those rows are left out of the
score, since they steered training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from featstore.common.backend import resolve_device
from featstore.common.fileio import ensure_output_dir
from featstore.errors import CheckpointError, InputError
from featstore.store.core import FeatureStore
from featstore.store.features import l2_normalize
from trainer.config import TrainConfig
from trainer.data import StoreSource, iter_rows
from trainer.inference import infer, top1
from trainer.labels import LabelSource, ground_truth, load_label_file
from trainer.model import DiccaeModel
from trainer.probe import probe_scores
from trainer.rows import resolve_row_sets, split_mask, usable_mask
from trainer.run_io import BEST_CHECKPOINT, CHECKPOINT, atomic_write_json, load_checkpoint
from trainer.weighting import confusion_of_features, off_diagonal_stats

CHECKPOINT_CHOICES = ("best", "last")


def checkpoint_path(run_dir: str | Path, which: str = "best") -> tuple[Path, str]:
    """``(path, which)``: ``best.pt`` when asked for and kept, else the last ``checkpoint.pt``."""
    if which not in CHECKPOINT_CHOICES:
        raise InputError(f"--checkpoint must be one of {CHECKPOINT_CHOICES}, got {which!r}")
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir, "last" if run_dir.name == CHECKPOINT else "given"
    if which == "best" and (run_dir / BEST_CHECKPOINT).is_file():
        return run_dir / BEST_CHECKPOINT, "best"
    return run_dir / CHECKPOINT, "last"


def load_model(
    run_dir: str | Path, device: str = "cpu", *, checkpoint: str = "last"
) -> tuple[DiccaeModel, dict[str, Any]]:
    state = load_checkpoint(checkpoint_path(run_dir, checkpoint)[0])
    cfg = TrainConfig.from_dict(state["config"])
    model = DiccaeModel(cfg.model)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def _check_same_store(
    run_dir: Path, state: dict[str, Any], store: FeatureStore, labels_path
) -> None:
    """A run scores only the store it was trained on, unless --labels maps this one explicitly."""
    if labels_path is not None:
        return  # the label file is checked against this store's fingerprint when read
    theirs = state.get("store_fingerprint")
    if theirs is not None and theirs != store.fingerprint:
        raise CheckpointError(
            f"{run_dir} was trained on another store (fingerprint {theirs}, {store.path} has "
            f"{store.fingerprint}); its classes need not mean the same there -- pass --labels with a "
            "label file made for this store to score it anyway"
        )
    names = state.get("class_names")
    if names is not None and list(names) != store.class_names:
        raise CheckpointError(
            f"{run_dir} was trained with other class names than {store.path} has; pass --labels"
        )


def _labels_for(
    state: dict[str, Any], store: FeatureStore, labels_path: str | Path | None
) -> LabelSource:
    if labels_path is not None:
        return load_label_file(labels_path, store)
    src = state["label_source"]
    if src["kind"] == "file":
        return load_label_file(src["path"], store)
    if src["kind"] == "ground_truth":
        return ground_truth(store)
    raise InputError(
        "this run was trained without labels (InfoNCE only); pass --labels to score it"
    )


def _input_features(source: StoreSource, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, xs = [], []
    for r, a, v in iter_rows(source, mask, batch=1 << 16):
        xs.append(
            np.concatenate(
                [l2_normalize(a.astype(np.float32)), l2_normalize(v.astype(np.float32))], axis=1
            )
        )
        rows.append(r)
    return np.concatenate(rows), np.concatenate(xs)


def evaluate(
    run_dir: str | Path,
    store_path: str | Path | FeatureStore,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    labels_path: str | Path | None = None,
    device: str = "auto",
    compare_inputs: bool = True,
    plot: bool = True,
    checkpoint: str = "best",
    probe: bool = True,
) -> dict[str, Any]:
    """Score a run on ``split``; writes ``eval.json`` and ``confusion_histogram.png``."""
    run_dir = Path(run_dir)
    out_dir = (
        Path(out_dir) if out_dir is not None else (run_dir if run_dir.is_dir() else run_dir.parent)
    )
    device = resolve_device(device)
    store = store_path if isinstance(store_path, FeatureStore) else FeatureStore.open(store_path)
    path, which = checkpoint_path(run_dir, checkpoint)
    model, state = load_model(path, device)
    _check_same_store(run_dir, state, store, labels_path)
    labels = _labels_for(state, store, labels_path)
    if labels.num_classes > model.cfg.num_classes:
        raise InputError(
            f"labels have {labels.num_classes} classes but the run's heads have {model.cfg.num_classes}"
        )
    cfg = TrainConfig.from_dict(state["config"])
    run_rows = resolve_row_sets(
        store,
        labels.labels,
        split=cfg.split,
        update_set=cfg.update_set,
        eval_split=cfg.eval_split,
        seed=cfg.seed,
    )
    mask = usable_mask(store, labels.labels) & split_mask(store, split)
    excluded = int((mask & run_rows.update).sum()) if run_rows.leaks_test else 0
    if excluded:  # rows that steered training (M-hat) are not held out: never score them
        mask &= ~run_rows.update
    if not mask.any():
        raise InputError(
            f"{store.path}: no usable labelled rows in split {split!r}"
            + (f" once the {excluded} update-set rows are left out" if excluded else "")
        )
    source = StoreSource(store)
    with torch.no_grad():
        res = infer(model, source, mask, device=device)
    y = labels.labels[res["rows"]]
    scores = top1(res, labels.labels)
    fused = confusion_of_features(res["z"], y, model.cfg.num_classes)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "store": str(store.path),
        "split": split,
        "n_rows": int(len(y)),
        "num_classes": int(model.cfg.num_classes),
        "labels": labels.describe(),
        "phase": state.get("phase"),
        "epoch": int(state.get("epoch", 0)),
        "checkpoint": {
            "which": which,
            "path": str(path),
            "epoch": int(state.get("epoch", 0)),
            **_last_info(path, state),
        },
        "excluded_update_rows": excluded,
        **scores,
        "confusion_fused": _stats(fused),
        "per_class_top1_av": _per_class(res["pred_av"], y, model.cfg.num_classes),
    }
    if probe:  # the baseline: a linear probe on the inputs, fitted on the run's training rows
        result.update(probe_scores(source, labels.labels, run_rows.train, mask, seed=cfg.seed))
    items, names = [fused.M], ["DICCAE fused z"]
    if compare_inputs:
        _, x = _input_features(source, mask)
        inputs = confusion_of_features(x, y, model.cfg.num_classes)
        result["confusion_input"] = _stats(inputs)
        items, names = [inputs.M, fused.M], ["input audio+video embeddings", "DICCAE fused z"]
    ensure_output_dir(out_dir, what="output folder (run folder unless --out)")
    if plot:
        from featstore.confusion import plot_confusion_histogram

        png = plot_confusion_histogram(items, names, out_dir / "confusion_histogram.png")
        result["histogram_png"] = str(png)
    atomic_write_json(out_dir / "eval.json", result)
    return result


def _last_info(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Epoch and stop reason of the run's last checkpoint (the best one records only its own epoch)."""
    last = path.parent / CHECKPOINT
    if path.name != CHECKPOINT and last.is_file():
        state = load_checkpoint(last)
    return {"last_epoch": int(state.get("epoch", 0)), "stop_reason": state.get("stop_reason")}


def _stats(res) -> dict[str, Any]:
    base = off_diagonal_stats(res.M)
    full = res.stats()
    full.pop("histogram", None)
    return {**full, "mean": base["mean"], "var": base["var"]}


def _per_class(pred: np.ndarray, y: np.ndarray, c: int) -> list[float | None]:
    out: list[float | None] = []
    for k in range(c):
        m = y == k
        out.append(float((pred[m] == k).mean()) if m.any() else None)
    return out
