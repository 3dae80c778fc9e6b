"""`diccae train pretrain|finetune`, `diccae eval`, `diccae ablate` through the CLI entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_synth import make_store  # noqa: E402

from cli.main import main  # noqa: E402
from featstore.labels import cluster_store  # noqa: E402

SMALL = [
    "--encoder-widths",
    "32",
    "--fusion-widths",
    "32",
    "--encoded-dim",
    "16",
    "--fused-dim",
    "16",
    "--projection-dim",
    "8",
    "--batch-size",
    "16",
    "--shuffle-buffer",
    "64",
    "--lr",
    "3e-3",
    "--threads",
    "1",
    "--no-progress",
    "--recluster-n-init",
    "1",
]


@pytest.fixture(scope="module")
def store_and_labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    store = make_store(root / "store.zarr", n_per_class=40)
    labels = cluster_store(store, out=root / "round0.npy", k=5, n_init=1, plot=False)
    return root, labels.path


def test_pretrain_finetune_eval_json(store_and_labels, capsys):
    root, labels = store_and_labels
    store = str(root / "store.zarr")
    assert (
        main(
            [
                "train",
                "pretrain",
                store,
                "--labels",
                str(labels),
                "--out",
                str(root / "pre"),
                "--epochs",
                "2",
                "--recluster-every",
                "1",
                *SMALL,
            ]
        )
        == 0
    )
    assert (root / "pre" / "labels_round1.npy").is_file()
    assert (
        main(
            [
                "train",
                "finetune",
                store,
                "--init",
                str(root / "pre"),
                "--out",
                str(root / "fine"),
                "--epochs",
                "3",
                "--weighting",
                "static",
                "--static-weight",
                "0.5",
                *SMALL,
            ]
        )
        == 0
    )
    cfg = json.loads((root / "fine" / "config.json").read_text())
    assert cfg["loss"]["weighting"] == "static" and cfg["loss"]["static_weight"] == 0.5
    capsys.readouterr()
    assert (
        main(["eval", str(root / "fine"), store, "--split", "test", "--json", "--device", "cpu"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert {
        "top1_audio",
        "top1_video",
        "top1_av",
        "confusion_fused",
        "probe_audio",
        "probe_video",
        "probe_av",
    } <= set(result)
    assert result["checkpoint"]["which"] == "best" and result["checkpoint"]["epoch"] <= 3
    # the table shows the probe beside every head and says which checkpoint it scored
    assert (
        main(
            [
                "eval",
                str(root / "fine"),
                store,
                "--split",
                "test",
                "--device",
                "cpu",
                "--checkpoint",
                "last",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "probe" in text and "scored the last checkpoint: epoch 3 of 3" in text
    # resume of a finished run is a no-op that still succeeds; a second run into the same dir is refused
    assert (
        main(
            [
                "train",
                "finetune",
                store,
                "--out",
                str(root / "fine"),
                "--epochs",
                "3",
                "--resume",
                *SMALL,
            ]
        )
        == 0
    )
    assert (
        main(["train", "finetune", store, "--out", str(root / "fine"), "--epochs", "1", *SMALL])
        == 2
    )


def test_resume_without_epochs_keeps_the_planned_length(store_and_labels):
    root, _ = store_and_labels
    store, out = str(root / "store.zarr"), root / "fine3"
    # a 3-epoch run whose first epoch finished, then resumed with the same command minus --epochs
    from trainer.config import TrainConfig
    from trainer.phases import finetune

    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "epochs": 3})
    cfg.progress = False
    finetune(store, init_checkpoint=None, out_dir=out, config=cfg, stop_after=1)
    assert main(["train", "finetune", store, "--out", str(out), "--resume", *SMALL]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


def test_pretrain_resume_needs_no_labels_option(store_and_labels):
    root, labels = store_and_labels
    store, out = str(root / "store.zarr"), root / "pre2"
    from trainer.config import TrainConfig
    from trainer.phases import pretrain

    cfg = TrainConfig.from_dict({**TrainConfig().to_dict(), "epochs": 2, "recluster_every": 0})
    cfg.progress = False
    pretrain(store, labels_path=labels, out_dir=out, config=cfg, stop_after=1)
    assert main(["train", "pretrain", store, "--out", str(out), "--resume", *SMALL]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_bad_inputs_exit_codes(store_and_labels, tmp_path):
    root, labels = store_and_labels
    store = str(root / "store.zarr")
    garbage = tmp_path / "bad.npy"
    garbage.write_bytes(b"not a label file")
    assert (
        main(
            [
                "train",
                "pretrain",
                store,
                "--labels",
                str(garbage),
                "--out",
                str(tmp_path / "r"),
                *SMALL,
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "train",
                "pretrain",
                store,
                "--labels",
                str(labels),
                "--out",
                str(tmp_path / "r"),
                "--sampler",
                "nope",
                *SMALL,
            ]
        )
        == 2
    )
    assert main(["eval", str(tmp_path / "missing"), store]) == 3


def test_ablate_subset_writes_tables(store_and_labels):
    root, labels = store_and_labels
    out = root / "abl"
    assert (
        main(
            [
                "ablate",
                str(root / "store.zarr"),
                "--labels",
                str(labels),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--finetune-epochs",
                "2",
                "--recluster-every",
                "0",
                "--no-plots",
                "--variants",
                "full,no_confusion_loss",
                "--sweep-static-weight",
                "0.5",
                "--seeds",
                "2",
                *SMALL,
            ]
        )
        == 0
    )
    summary = json.loads((out / "ablation.json").read_text())
    table = summary["results"]
    assert set(table) == {"full", "no_confusion_loss", "static_w0.5"} and summary["n_seeds"] == 2
    assert (
        table["full"]["delta_top1_av"]["mean"] == 0.0
        and table["full"]["delta_top1_av"]["within_noise"]
    )
    runs, full = summary["per_seed"]["no_confusion_loss"], summary["per_seed"]["full"]
    assert [r["seed"] for r in runs] == [0, 1] and (
        out / "no_confusion_loss" / "seed1" / "eval" / "eval.json"
    ).is_file()
    d = table["no_confusion_loss"]["delta_top1_av"]
    diffs = [a["top1_av"] - b["top1_av"] for a, b in zip(runs, full, strict=True)]
    assert d["mean"] == pytest.approx(np.mean(diffs)) and d["low"] <= d["mean"] <= d["high"]
    assert d["within_noise"] == (d["low"] <= 0 <= d["high"])
    assert table["no_confusion_loss"]["top1_av_sd"] == pytest.approx(
        np.std([r["top1_av"] for r in runs], ddof=1)
    )
    md = (out / "ablation.md").read_text()
    assert "w/o L_CL" in md and "probe A-V" in md and (out / "static_weight_sweep.png").is_file()


def test_preset_paper_keeps_the_paper_settings_and_defaults_plan_a_step_budget(
    store_and_labels, capsys
):
    root, _ = store_and_labels
    store = str(root / "store.zarr")
    tiny = [
        "--encoder-widths",
        "32",
        "--fusion-widths",
        "32",
        "--encoded-dim",
        "16",
        "--fused-dim",
        "16",
        "--projection-dim",
        "8",
        "--threads",
        "1",
        "--no-progress",
        "--no-plots",
    ]
    assert (
        main(
            [
                "train",
                "finetune",
                store,
                "--preset",
                "paper",
                "--out",
                str(root / "paper"),
                "--epochs",
                "2",
                *tiny,
            ]
        )
        == 0
    )
    cfg = json.loads((root / "paper" / "config.json").read_text())
    assert (
        cfg["preset"],
        cfg["lr"],
        cfg["batch_size"],
        cfg["warmup"],
        cfg["patience"],
        cfg["passes_per_epoch"],
        cfg["clips_per_class"],
        cfg["recluster_every"],
    ) == ("paper", 1e-4, 32, 0.0, 0, 1, 4, 10)
    assert not (
        root / "paper" / "best.pt"
    ).exists()  # the paper trains its epochs; nothing is monitored
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "finetune",
                store,
                "--out",
                str(root / "auto"),
                "--epochs",
                "auto",
                "--min-steps",
                "60",
                *tiny,
            ]
        )
        == 0
    )
    assert "stopped after epoch" in capsys.readouterr().out
    cfg = json.loads((root / "auto" / "config.json").read_text())
    plan = cfg["plan"]
    assert (
        plan["epochs_requested"] == "auto"
        and plan["total_steps"] >= 60
        and cfg["epochs"] == plan["epochs"]
    )
    assert plan["steps_per_epoch"] >= 50 and cfg["lr"] == 1e-3 and cfg["preset"] == "default"
    metrics = [json.loads(x) for x in (root / "auto" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["stop_reason"] in ("early_stopping", "planned_epochs")
    assert metrics[-1]["stopped_epoch"] == len(metrics)
    if metrics[-1]["stop_reason"] == "planned_epochs":
        assert len(metrics) == plan["epochs"]
    else:
        assert len(metrics) - metrics[-1]["best_epoch"] >= plan["patience"]


@pytest.mark.parametrize("lr", ["1e30", "1e300"])  # 1e300: the update itself overflows float32
def test_a_diverging_run_exits_7_with_one_line(store_and_labels, tmp_path, capfd, lr):
    """A learning rate far too high: exit code 7 (TrainingDiverged), one line, no traceback."""
    root, _ = store_and_labels
    out = tmp_path / "diverged"
    args = ["train", "finetune", str(root / "store.zarr"), "--out", str(out), "--epochs", "2"]
    capfd.readouterr()
    assert main([*args, *SMALL, "--lr", lr, "--warmup", "0"]) == 7
    captured = capfd.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in captured.err + captured.out
    assert "finetune epoch 1, step" in err[0] and "non-finite" in err[0] and "--lr" in err[0]
    assert not (out / "checkpoint.pt").exists() and (out / "config.json").exists()
