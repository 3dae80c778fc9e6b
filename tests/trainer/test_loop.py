"""The training loop: a non-finite loss stops the run with TrainingDiverged, earlier
checkpoints stay; progress is reported as data (ProgressUpdate), never drawn."""

from __future__ import annotations

import pytest
import torch
from test_phases import small_config

from featstore.errors import TrainingDiverged
from featstore.progress import ProgressUpdate
from trainer.loop import Run
from trainer.losses import DiccaeLoss
from trainer.phases import finetune
from trainer.run_io import load_checkpoint, read_metrics


def _poison(monkeypatch, *, epoch: int, step: int) -> None:
    """Make the loss NaN from optimiser step ``step`` of ``epoch`` (1-based) on."""
    calls = {"n": 0}
    real = DiccaeLoss.forward
    seen_epoch = {"e": 0}
    real_train_epoch = Run.train_epoch

    def train_epoch(self, e, progress):
        seen_epoch["e"], calls["n"] = e + 1, 0
        return real_train_epoch(self, e, progress)

    def forward(self, out, labels, pair_weights, batch=None):
        total, terms = real(self, out, labels, pair_weights, batch)
        calls["n"] += 1
        if seen_epoch["e"] == epoch and calls["n"] >= step:
            total = total * float("nan")
        return total, terms

    monkeypatch.setattr(Run, "train_epoch", train_epoch)
    monkeypatch.setattr(DiccaeLoss, "forward", forward)


def test_non_finite_loss_raises_training_diverged_and_keeps_earlier_checkpoints(
    tmp_path, small_store, monkeypatch
):
    monkeypatch.setattr(Run, "checkpoint_seconds", 0.0)  # a checkpoint after every epoch
    _poison(monkeypatch, epoch=2, step=3)
    out = tmp_path / "fine"
    with pytest.raises(TrainingDiverged) as info:
        finetune(small_store.path, init_checkpoint=None, out_dir=out, config=small_config(epochs=3))
    msg = str(info.value)
    assert "finetune epoch 2, step 3" in msg and "non-finite" in msg and "--lr" in msg
    assert info.value.exit_code == 7
    assert [r["epoch"] for r in read_metrics(out)] == [1]  # epoch 2 was not recorded
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_written(
    tmp_path, small_store, monkeypatch
):
    _poison(monkeypatch, epoch=1, step=1)
    with pytest.raises(TrainingDiverged, match="epoch 1, step 1.*no checkpoint was written yet"):
        finetune(
            small_store.path, init_checkpoint=None, out_dir=tmp_path / "f", config=small_config()
        )


def test_progress_is_reported_as_data(tmp_path, small_store):
    updates: list[ProgressUpdate] = []
    summary = finetune(
        small_store.path,
        init_checkpoint=None,
        out_dir=tmp_path / "f",
        config=small_config(epochs=2),
        progress=updates.append,
    )
    assert all(isinstance(u, ProgressUpdate) for u in updates)
    epochs = [u for u in updates if u.task == "epochs"]
    assert epochs[0].total == 2 and epochs[0].description == "finetune epochs"
    assert sum(u.advance for u in epochs) == 2 and epochs[-1].done
    steps = [u for u in updates if u.task == "steps"]
    starts = [u for u in steps if u.completed == 0 and u.description and "epoch" in u.description]
    assert [u.description for u in starts] == ["epoch 1", "epoch 2"]
    assert sum(u.advance for u in steps) == sum(r["steps"] for r in summary.metrics)
    assert steps[-1].done


def test_no_progress_callback_reports_nothing_and_draws_nothing(tmp_path, small_store, capfd):
    finetune(
        small_store.path,
        init_checkpoint=None,
        out_dir=tmp_path / "f",
        config=small_config(epochs=1),
    )
    out, err = capfd.readouterr()
    assert out == "" and err == ""
