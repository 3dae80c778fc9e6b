"""``launch_local``: N spawned DDP ranks behave like one process towards the caller --
rank 0's progress arrives through the callback, a divergence raises the same typed
error (exit code 7) as in one process.  Each test spawns 2 gloo ranks (~15-30 s)."""

from __future__ import annotations

import pytest
from test_distributed import needs_gloo, small_config

from featstore.errors import InputError, TrainingDiverged
from featstore.progress import ProgressUpdate
from trainer.launch import launch_local


@needs_gloo
def test_rank_zero_progress_reaches_the_caller(tmp_path, small_store, monkeypatch):
    monkeypatch.setenv("DICCAE_DIST_TIMEOUT_S", "180")
    updates: list[ProgressUpdate] = []
    summary = launch_local(
        "finetune",
        2,
        store_path=small_store.path,
        init_checkpoint=None,
        out_dir=tmp_path / "two",
        config=small_config(epochs=2),
        progress=updates.append,
    )
    epochs = [u for u in updates if u.task == "epochs"]
    steps = [u for u in updates if u.task == "steps"]
    assert epochs and epochs[0].total == 2 and sum(u.advance for u in epochs) == 2
    # one rank reports: the steps add up once, not once per rank
    assert sum(u.advance for u in steps) == sum(r["steps"] for r in summary.metrics)


@needs_gloo
def test_a_diverging_ddp_run_raises_training_diverged(tmp_path, small_store, monkeypatch):
    monkeypatch.setenv("DICCAE_DIST_TIMEOUT_S", "180")  # a rank left waiting fails the test
    with pytest.raises(
        TrainingDiverged, match=r"finetune epoch 1, step \d+: the loss or the weight update became"
    ):
        launch_local(
            "finetune",
            2,
            store_path=small_store.path,
            init_checkpoint=None,
            out_dir=tmp_path / "two",
            config=small_config(lr=1e30, warmup=0.0),
        )
    assert not (tmp_path / "two" / "checkpoint.pt").exists()


def test_nproc_inside_a_torchrun_job_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(InputError, match="torchrun"):
        launch_local("finetune", 2, store_path=tmp_path, out_dir=tmp_path / "x", config=None)
