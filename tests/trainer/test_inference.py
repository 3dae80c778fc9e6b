"""Inference over store rows: fused features and predictions in store order."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from test_phases import small_config
from trainer_synth import synthetic_features

from trainer.data import ArraySource
from trainer.inference import autocast, infer, to_tensor, top1
from trainer.model import DiccaeModel


def _model() -> DiccaeModel:
    cfg = small_config().model
    cfg.audio_dim, cfg.video_dim, cfg.num_classes = 12, 10, 4
    torch.manual_seed(0)
    return DiccaeModel(cfg)


def test_infer_returns_the_masked_rows_in_store_order_as_one_forward_pass_would():
    a, v, y = synthetic_features(30)
    source = ArraySource(a, v, shard_rows=16)
    mask = np.zeros(len(y), bool)
    mask[[3, 17, 18, 40, 99, 119]] = True
    model = _model().train()
    res = infer(model, source, mask, device="cpu", batch=4, prefetch=1)
    assert model.training  # left as it was
    np.testing.assert_array_equal(res["rows"], np.flatnonzero(mask))
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(a[mask]), torch.from_numpy(v[mask]))
    np.testing.assert_allclose(res["z"], out["z"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res["pred_av"], out["logits_fused"].argmax(1).numpy())
    scores = top1(res, y.astype(np.int64))
    assert scores["top1_av"] == float((res["pred_av"] == y[mask]).mean())


def test_infer_with_an_empty_mask_returns_empty_arrays():
    a, v, _ = synthetic_features(5)
    res = infer(_model(), ArraySource(a, v), np.zeros(len(a), bool), device="cpu")
    assert res["z"].shape == (0, 16) and len(res["rows"]) == 0 and top1(res, np.zeros(0)) == {}


def test_cpu_runs_stay_float32():
    assert isinstance(autocast("cpu", "on"), contextlib.nullcontext)
    assert isinstance(autocast("cuda:0", "auto"), contextlib.nullcontext)  # auto = float32
    t = to_tensor(np.arange(6, dtype=np.float16).reshape(2, 3), "cpu")
    assert t.dtype == torch.float32 and t.shape == (2, 3)
