"""How long a phase trains: step budget, warm-up + cosine, early stopping, best checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from test_phases import small_config
from trainer_synth import make_store

from trainer.build import lr_factor
from trainer.config import TrainConfig, paper_preset
from trainer.evaluate import evaluate
from trainer.loop import Run
from trainer.phases import finetune


def test_auto_epochs_guarantee_the_step_budget_at_every_size():
    for n_train in (20, 210, 1050, 10500, 2_000_000):
        cfg = TrainConfig()
        epochs, passes = cfg.planned_epochs(n_train), cfg.passes(n_train)
        per_pass = -(-n_train // cfg.batch_size)
        assert epochs * passes * per_pass >= cfg.min_steps or epochs == cfg.max_epochs
        assert passes * per_pass >= cfg.epoch_steps  # M-hat and scoring every >= 50 steps
        assert epochs >= cfg.min_epochs
    assert paper_preset().planned_epochs(100) == 30 and paper_preset().passes(100) == 1


def test_warmup_then_cosine_per_step():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-6, warmup=0.1)
    f = [lr_factor(cfg, s, total_steps=100, steps_per_epoch=10) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a >= b for a, b in zip(f[9:], f[10:], strict=False))  # then only down
    assert f[-1] < 0.01 and lr_factor(
        cfg, 100, total_steps=100, steps_per_epoch=10
    ) == pytest.approx(1e-3)
    assert (
        lr_factor(paper_preset(), 0, total_steps=100, steps_per_epoch=10) == 1.0
    )  # the paper: no warm-up


def _monitor_run(patience: int) -> SimpleNamespace:
    return SimpleNamespace(
        plan={"early_stopping": True},
        cfg=SimpleNamespace(patience=patience),
        stop_reason=None,
        best={"epoch": 0, "score": None, "since_strict": 0, "strict_score": None},
    )


def test_early_stopping_counts_epochs_without_a_strict_improvement():
    run = _monitor_run(patience=2)
    scores = [0.5, 0.7, 0.7, 0.6, 0.9]
    improved = []
    for epoch, s in enumerate(scores):
        improved.append(Run._monitor(run, epoch, {"top1_audio": s, "top1_video": s, "top1_av": s}))
        if run.stop_reason:
            break
    # the tie at epoch 3 becomes the best weights but does not reset patience: stop after epoch 4
    assert improved == [True, True, True, False] and run.stop_reason == "early_stopping"
    assert run.best["epoch"] == 3


def test_best_checkpoint_is_scored_by_default_and_the_run_says_why_it_stopped(tmp_path):
    make_store(tmp_path / "s.zarr", n_per_class=30)
    cfg = small_config(
        epochs=12, patience=3, lr=3e-2
    )  # a high lr overshoots: the best epoch is not the last
    run = finetune(tmp_path / "s.zarr", init_checkpoint=None, out_dir=tmp_path / "r", config=cfg)
    stop = run.stop
    assert stop["stop_reason"] in ("early_stopping", "planned_epochs")
    assert stop["stopped_epoch"] == len(run.metrics)
    best = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert best["epoch"] == stop["best_epoch"] and "optimizer" not in best
    r_best = evaluate(
        tmp_path / "r",
        tmp_path / "s.zarr",
        split="val",
        device="cpu",
        plot=False,
        probe=False,
        compare_inputs=False,
    )
    r_last = evaluate(
        tmp_path / "r",
        tmp_path / "s.zarr",
        split="val",
        device="cpu",
        plot=False,
        probe=False,
        compare_inputs=False,
        checkpoint="last",
    )
    assert (
        r_best["checkpoint"]["which"] == "best"
        and r_best["checkpoint"]["epoch"] == stop["best_epoch"]
    )
    assert (
        r_last["checkpoint"]["which"] == "last"
        and r_last["checkpoint"]["epoch"] == stop["stopped_epoch"]
    )
    assert r_best["checkpoint"]["stop_reason"] == stop["stop_reason"]
    # the best epoch's recorded eval score is what best.pt reproduces on the eval rows
    record = next(r for r in run.metrics if r["epoch"] == stop["best_epoch"])
    assert record["score"] == stop["best_score"]
    plan = json.loads((tmp_path / "r" / "config.json").read_text())["plan"]
    assert plan["early_stopping"] and plan["patience"] == 3
