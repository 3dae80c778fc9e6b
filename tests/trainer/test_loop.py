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


def test_step_bar_totals_follow_the_rows_a_reclustering_labels(tmp_path):
    """Pretraining from labels that cover only part of the rows: the first re-clustering
    labels every row, so later epochs have more batches than the plan made at the start;
    each epoch's bar total must still be the number of steps it then takes."""
    import numpy as np
    from trainer_synth import make_store

    from featstore.labels import cluster_store, read_label_file, write_label_file
    from trainer.phases import pretrain

    store = make_store(tmp_path / "s.zarr")
    first = cluster_store(store, out=tmp_path / "r0.npy", k=6, n_init=2, plot=False)
    labels, meta = read_label_file(first.path)
    labels = labels.copy()
    labels[::2] = -1  # half the rows start without a pseudo-label
    write_label_file(tmp_path / "half.npy", labels, meta)
    updates: list[ProgressUpdate] = []
    summary = pretrain(
        tmp_path / "s.zarr",
        labels_path=tmp_path / "half.npy",
        out_dir=tmp_path / "pre",
        config=small_config(epochs=3, recluster_every=1),
        progress=updates.append,
    )
    steps = [u for u in updates if u.task == "steps"]
    starts = [i for i, u in enumerate(steps) if u.completed == 0 and u.total is not None]
    per_epoch = []
    for n, i in enumerate(starts):
        epoch = steps[i : (starts + [len(steps)])[n + 1]]
        last_total = [u.total for u in epoch if u.total is not None][-1]
        per_epoch.append((last_total, sum(u.advance for u in epoch)))
    assert [r["steps"] for r in summary.metrics] == [done for _, done in per_epoch]
    assert all(total == done for total, done in per_epoch), per_epoch
    assert len({done for _, done in per_epoch}) > 1  # the row count did change
    assert np.isfinite(summary.metrics[-1]["loss_total"])
