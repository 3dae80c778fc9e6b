"""Pretrain -> finetune -> eval end to end, re-clustering, resume, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from trainer_synth import make_store

from featstore.errors import InputError, LabelFileError
from featstore.labels import cluster_store, read_label_file
from featstore.store.core import FeatureStore
from trainer.config import TrainConfig
from trainer.evaluate import evaluate
from trainer.phases import finetune, pretrain


def small_config(**over) -> TrainConfig:
    cfg = TrainConfig(
        epochs=4,
        lr=3e-3,
        progress=False,
        recluster_every=2,
        recluster_n_init=1,
        batch_size=16,
        shuffle_buffer=64,
        clips_per_class=4,
        threads=1,
        passes_per_epoch=1,
    )
    cfg.model.encoder_widths = (32,)
    cfg.model.encoded_dim = 16
    cfg.model.fusion_widths = (32,)
    cfg.model.fused_dim = 16
    cfg.model.projection_dim = 8
    return cfg.with_overrides(**over)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    store = make_store(root / "store.zarr")
    round0 = cluster_store(store, out=root / "round0.npy", k=6, n_init=2, plot=False)
    pre = pretrain(
        root / "store.zarr", labels_path=round0.path, out_dir=root / "pre", config=small_config()
    )
    fine = finetune(
        root / "store.zarr",
        init_checkpoint=root / "pre" / "checkpoint.pt",
        out_dir=root / "fine",
        config=small_config(epochs=0, min_steps=150),
    )  # auto epochs, early stopping
    result = evaluate(root / "fine", root / "store.zarr", split="test", device="cpu")
    return root, pre, fine, result


def test_audio_visual_beats_each_modality(pipeline):
    _, _, _, result = pipeline
    assert result["top1_av"] >= 0.9
    assert result["top1_av"] > result["top1_audio"] + 0.1
    assert result["top1_av"] > result["top1_video"] + 0.1
    assert result["confusion_fused"]["mean"] is not None


def test_run_outputs_exist_and_checkpoint_loads_weights_only(pipeline):
    root, pre, fine, _ = pipeline
    for run in (root / "pre", root / "fine"):
        for name in (
            "config.json",
            "metrics.jsonl",
            "metrics.csv",
            "training_curves.png",
            "checkpoint.pt",
        ):
            assert (run / name).is_file(), name
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        assert {
            "model",
            "optimizer",
            "scheduler",
            "rng",
            "pair_weights",
            "label_source",
            "epoch",
        } <= set(state)
    assert (root / "fine" / "eval.json").is_file() and (
        root / "fine" / "confusion_histogram.png"
    ).is_file()
    recs = [json.loads(x) for x in (root / "fine" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == list(range(1, len(recs) + 1))
    assert all("confusion_mean" in r and "top1_av" in r and "lr" in r for r in recs)
    assert recs[-1]["lr"] < recs[0]["lr"]  # learning-rate decay
    assert recs[-1]["stop_reason"] in ("early_stopping", "planned_epochs")
    assert (root / "fine" / "best.pt").is_file() and not (root / "pre" / "best.pt").exists()
    cfg = json.loads((root / "fine" / "config.json").read_text())
    assert cfg["model"]["num_classes"] == 4 and cfg["lr"] == 3e-3


def test_pretrain_reclusters_into_an_aligned_round(pipeline):
    root, pre, _, _ = pipeline
    assert (
        len(pre.label_rounds) == 2
    )  # round0 + one re-clustering at epoch 2 (none at the last epoch)
    labels, meta = read_label_file(
        pre.label_rounds[1], store=FeatureStore.open(root / "store.zarr")
    )
    assert meta.round == 1 and meta.k == 6 and str(root / "round0.npy") in str(meta.parent)
    assert meta.features == str(root / "pre" / "fused") and meta.aligned_to is not None
    assert meta.alignment["same_id_fraction"] >= meta.alignment["same_id_fraction_before"]
    store = FeatureStore.open(root / "store.zarr")
    assert not [
        a for a in store.array_names() if a.startswith("fused")
    ]  # nothing written into the store
    import zarr

    group = zarr.open_group(str(root / "pre" / "fused"), mode="r")
    assert group.attrs["epoch"] == 2 and group["features"].shape == (store.n_rows, 16)
    assert group.attrs["store_fingerprint"] == store.fingerprint
    assert [r["label_round"] for r in pre.metrics] == [0, 1, 1, 1]
    state = torch.load(root / "pre" / "checkpoint.pt", weights_only=True)
    assert state["label_source"]["round"] == 1


def test_resume_continues_exactly(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_per_class=30)
    cfg = small_config(epochs=4)
    straight = finetune(
        tmp_path / "s.zarr", init_checkpoint=None, out_dir=tmp_path / "a", config=cfg
    )
    finetune(
        tmp_path / "s.zarr", init_checkpoint=None, out_dir=tmp_path / "b", config=cfg, stop_after=2
    )
    resumed = finetune(
        tmp_path / "s.zarr", init_checkpoint=None, out_dir=tmp_path / "b", config=cfg, resume=True
    )
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=0, atol=0)
    torch.testing.assert_close(a["pair_weights"], b["pair_weights"], rtol=0, atol=0)
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4]
    assert [r["loss_total"] for r in resumed.metrics] == pytest.approx(
        [r["loss_total"] for r in straight.metrics], rel=1e-9
    )
    assert store.n_rows == 120


def test_refuses_label_file_of_another_store(tmp_path):
    make_store(tmp_path / "a.zarr")
    other = make_store(tmp_path / "b.zarr", n_per_class=20)
    labels = cluster_store(other, out=tmp_path / "other.npy", k=3, n_init=1, plot=False)
    with pytest.raises(LabelFileError):
        pretrain(
            tmp_path / "a.zarr",
            labels_path=labels.path,
            out_dir=tmp_path / "run",
            config=small_config(),
        )
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_refuses_to_overwrite_a_run(tmp_path):
    make_store(tmp_path / "s.zarr", n_per_class=20)
    finetune(
        tmp_path / "s.zarr",
        init_checkpoint=None,
        out_dir=tmp_path / "r",
        config=small_config(epochs=1),
    )
    with pytest.raises(InputError, match="already holds a run"):
        finetune(
            tmp_path / "s.zarr",
            init_checkpoint=None,
            out_dir=tmp_path / "r",
            config=small_config(epochs=1),
        )


def test_infonce_only_pretrain_needs_no_labels(tmp_path):
    make_store(tmp_path / "s.zarr", n_per_class=20)
    cfg = small_config(epochs=2, **{"loss.infonce_only": True})
    run = pretrain(tmp_path / "s.zarr", labels_path=None, out_dir=tmp_path / "r", config=cfg)
    assert set(k for k in run.final if k.startswith("loss_")) == {"loss_total", "loss_infonce"}
    assert np.isfinite(run.final["loss_total"])
