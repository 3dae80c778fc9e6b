"""Tests that fail when the method is broken (issue 10, item 7), not only when it crashes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_phases import small_config
from trainer_synth import make_store

from featstore.labels import cluster_store
from trainer.ablate import VARIANTS, variant_configs
from trainer.build import build_model_and_loss
from trainer.config import TrainConfig
from trainer.evaluate import evaluate
from trainer.loop import Run
from trainer.losses import InfoNCELoss
from trainer.phases import finetune, pretrain
from trainer.weighting import PairWeights


# ----------------------------------------------------------- M-hat timing
def test_mhat_measured_after_epoch_k_weighs_the_loss_of_epoch_k_plus_1(tmp_path, monkeypatch):
    """Spy on the loss: the pair weights it receives in epoch k+1 are the M-hat measured after epoch k,
    and after a re-clustering that M-hat was measured under the new labels."""
    store = make_store(tmp_path / "s.zarr", n_per_class=30)
    round0 = cluster_store(store, out=tmp_path / "r0.npy", k=5, n_init=1, plot=False)
    received: dict[int, list[np.ndarray]] = {}
    after_epoch: dict[int, np.ndarray] = {}
    update_labels: list[tuple[int, np.ndarray]] = []
    current = {"epoch": 0}

    real_train_epoch, real_end = Run.train_epoch, Run.end_of_epoch

    def train_epoch(self, epoch, progress):
        current["epoch"] = epoch
        real_forward = self.loss.forward

        def spy(out, labels, pair_weights, *batch):
            received.setdefault(epoch, []).append(pair_weights.detach().cpu().numpy().copy())
            return real_forward(out, labels, pair_weights, *batch)

        self.loss.forward = spy
        try:
            return real_train_epoch(self, epoch, progress)
        finally:
            del self.loss.forward

    def end_of_epoch(self, epoch):
        real_update = self.weights.update

        def update(z, y):
            update_labels.append((epoch, np.asarray(y).copy()))
            return real_update(z, y)

        self.weights.update = update
        try:
            record = real_end(self, epoch)
        finally:
            del self.weights.update
        after_epoch[epoch] = np.asarray(self.weights.matrix).copy()
        return record

    monkeypatch.setattr(Run, "train_epoch", train_epoch)
    monkeypatch.setattr(Run, "end_of_epoch", end_of_epoch)
    run = pretrain(
        tmp_path / "s.zarr",
        labels_path=round0.path,
        out_dir=tmp_path / "pre",
        config=small_config(epochs=4, recluster_every=2),
    )
    assert len(run.label_rounds) == 2
    for k in range(3):
        assert received[k + 1], k
        for w in received[k + 1]:
            np.testing.assert_array_equal(w, after_epoch[k])
    # the re-clustering epoch (index 1) updated M-hat twice; the second time under the round-1 labels
    from featstore.labels import read_label_file

    new_labels, _ = read_label_file(run.label_rounds[1])
    at_recluster = [y for e, y in update_labels if e == 1]
    assert len(at_recluster) == 2
    update_rows_labels = at_recluster[1]
    assert set(np.unique(update_rows_labels)) <= set(np.unique(new_labels[new_labels >= 0]))
    old_labels, _ = read_label_file(round0.path)
    assert not np.array_equal(at_recluster[0], at_recluster[1]) or np.array_equal(
        old_labels, new_labels
    )


# ------------------------------------------------------ ablation variants
EXPECTED = {
    "full": ({}, {}),
    "no_confusion_loss": ({"loss.lambda_cl": 0.0}, {"loss.lambda_cl": 0.0}),
    "static_weight": ({"loss.weighting": "static"}, {"loss.weighting": "static"}),
    "no_infonce": ({"loss.lambda_nce": 0.0}, {"loss.lambda_nce": 0.0}),
    "no_recluster": ({"recluster_every": 0}, {}),
    "no_cluster_guided": ({"loss.infonce_only": True}, {}),
}


def _flat(cfg: TrainConfig) -> dict:
    d = cfg.to_dict()
    out = {k: v for k, v in d.items() if not isinstance(v, dict)}
    for part in ("model", "loss"):
        out.update({f"{part}.{k}": v for k, v in d[part].items()})
    return out


def _diff(a: TrainConfig, b: TrainConfig) -> dict:
    fa, fb = _flat(a), _flat(b)
    return {k: fb[k] for k in fa if fa[k] != fb[k]}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_ablation_variant_changes_exactly_its_component(name):
    base = TrainConfig(seed=3)
    full_pre, full_fine = variant_configs("full", base, seed=3)
    pre, fine = variant_configs(name, base, seed=3)
    assert (_diff(full_pre, pre), _diff(full_fine, fine)) == EXPECTED[name]
    assert set(EXPECTED) == set(VARIANTS)


def test_variants_change_the_objective_they_name():
    """Not only the config: the built loss and pair weights of each phase differ as intended."""
    base = TrainConfig()
    base.model.audio_dim = base.model.video_dim = 6
    base.model.num_classes = 3
    for name, phase_index in (
        ("no_infonce", 0),
        ("no_infonce", 1),
        ("static_weight", 0),
        ("static_weight", 1),
    ):
        cfg = variant_configs(name, base)[phase_index]
        _, loss = build_model_and_loss(cfg, "cpu")
        weights = PairWeights(cfg.loss.weighting, 3, cfg.loss.static_weight)
        z, y = np.random.default_rng(0).normal(size=(30, 4)), np.repeat(np.arange(3), 10)
        weights.update(z, y)
        if name == "no_infonce":
            assert loss.weights["infonce"] == 0.0
        else:
            assert weights.kind == "static" and weights.updates == 0
            np.testing.assert_array_equal(weights.matrix, np.ones((3, 3), np.float32))
    _, full_loss = build_model_and_loss(variant_configs("full", base)[0], "cpu")
    assert full_loss.weights["infonce"] > 0
    full_weights = PairWeights("dynamic", 3)
    full_weights.update(np.random.default_rng(0).normal(size=(30, 4)), np.repeat(np.arange(3), 10))
    assert full_weights.updates == 1


def test_static_weight_scales_the_confusion_term():
    """Figure 3's w must change the loss: the confusion term enters the total as lambda_cl * w."""
    torch.manual_seed(0)
    out = {
        "logits_audio": torch.randn(12, 3),
        "logits_video": torch.randn(12, 3),
        "logits_fused": torch.randn(12, 3),
        "proj_audio": torch.randn(12, 5),
        "proj_video": torch.randn(12, 5),
        "z": torch.randn(12, 4),
    }
    y = torch.arange(12) % 3
    totals = {}
    for w in (0.25, 1.0, 8.0):
        cfg = TrainConfig().with_overrides(**{"loss.weighting": "static", "loss.static_weight": w})
        cfg.model.audio_dim = cfg.model.video_dim = 6
        cfg.model.num_classes = 3
        _, loss = build_model_and_loss(cfg, "cpu")
        pw = PairWeights("static", 3, w)
        total, terms = loss(out, y, torch.from_numpy(pw.matrix))
        totals[w] = (float(total.detach()), float(terms["confusion"]))
    conf = totals[1.0][1]
    assert totals[0.25][1] == pytest.approx(conf) and totals[8.0][1] == pytest.approx(conf)
    assert totals[8.0][0] - totals[0.25][0] == pytest.approx((8.0 - 0.25) * conf, rel=1e-5)


# --------------------------------------------------------------- InfoNCE
def test_infonce_with_different_audio_and_video_is_symmetric_cross_entropy():
    """Audio != video: both directions (a->v on rows, v->a on columns) count; dropping the transpose fails."""
    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g) * 3 + 1
    loss = InfoNCELoss(temperature=0.5)(a, v)
    an, vn = F.normalize(a, dim=-1), F.normalize(v, dim=-1)
    sim = (an @ vn.t()) / 0.5
    a_to_v = -torch.stack([sim[i, i] - torch.logsumexp(sim[i, :], 0) for i in range(6)]).mean()
    v_to_a = -torch.stack([sim[i, i] - torch.logsumexp(sim[:, i], 0) for i in range(6)]).mean()
    assert float(a_to_v) != pytest.approx(
        float(v_to_a), abs=1e-3
    )  # the case must tell the two apart
    assert float(loss) == pytest.approx(float(0.5 * (a_to_v + v_to_a)), rel=1e-5)


# ------------------------------------------------- test rows in the update set
def test_eval_leaves_out_update_rows_taken_from_test(tmp_path):
    store = make_store(tmp_path / "s.zarr", n_per_class=30)
    finetune(
        tmp_path / "s.zarr",
        init_checkpoint=None,
        out_dir=tmp_path / "leak",
        config=small_config(epochs=2, update_set="test:0.5"),
    )
    finetune(
        tmp_path / "s.zarr",
        init_checkpoint=None,
        out_dir=tmp_path / "clean",
        config=small_config(epochs=2),
    )
    leak = evaluate(
        tmp_path / "leak",
        store,
        split="test",
        device="cpu",
        plot=False,
        compare_inputs=False,
        probe=False,
    )
    clean = evaluate(
        tmp_path / "clean",
        store,
        split="test",
        device="cpu",
        plot=False,
        compare_inputs=False,
        probe=False,
    )
    from trainer.rows import resolve_row_sets, split_mask, usable_mask

    rows = resolve_row_sets(
        store,
        np.asarray(store.labels, np.int64),
        split="auto",
        update_set="test:0.5",
        eval_split="val",
        seed=0,
    )
    n_test = int(
        (usable_mask(store, np.asarray(store.labels, np.int64)) & split_mask(store, "test")).sum()
    )
    assert clean["n_rows"] == n_test and clean["excluded_update_rows"] == 0
    assert leak["excluded_update_rows"] == int(rows.update.sum()) > 0
    assert leak["n_rows"] == n_test - leak["excluded_update_rows"]


def test_paired_difference_is_a_t_interval_over_seeds():
    from trainer.ablate import format_delta, paired_difference

    d = paired_difference([0.5, 0.6, 0.7], [0.4, 0.4, 0.4])
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert d["mean"] == pytest.approx(0.2) and d["high"] - d["mean"] == pytest.approx(half)
    assert d["within_noise"] and "within noise" in format_delta(d)
    clear = paired_difference([0.50, 0.61, 0.70], [0.30, 0.40, 0.51])
    assert not clear["within_noise"] and "within noise" not in format_delta(clear)
    assert paired_difference([0.5], [0.4])["within_noise"] is None
