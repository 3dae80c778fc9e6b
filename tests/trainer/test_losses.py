"""Loss modules against hand-computed values, gradients and edge batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.losses import BatchView, ClassificationLoss, ConfusionLoss, DiccaeLoss, InfoNCELoss


def _bce_pos(logit):  # -log sigmoid(logit)
    return math.log1p(math.exp(-logit))


def _bce_neg(logit):  # -log(1 - sigmoid(logit))
    return math.log1p(math.exp(logit))


def test_infonce_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = InfoNCELoss(temperature=1.0)(a, a.clone())
    # logits [[1, 0], [0, 1]]: each row's CE is log(1 + e^-1), both directions alike
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_infonce_temperature_and_learnable_gradient():
    torch.manual_seed(0)
    a, v = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5)
    sharp = InfoNCELoss(temperature=0.05)(a, v)
    loss_mod = InfoNCELoss(temperature=0.5, learnable=True)
    loss = loss_mod(a, v)
    loss.backward()
    assert sharp.item() != pytest.approx(loss.item())
    assert loss_mod.logit_scale.grad is not None and torch.isfinite(loss_mod.logit_scale.grad)
    assert torch.isfinite(a.grad).all()


def test_infonce_single_sample_is_zero_and_differentiable():
    a = torch.randn(1, 4, requires_grad=True)
    loss = InfoNCELoss()(a, torch.randn(1, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(a.grad).all()


def test_classification_ignores_unlabelled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    y = torch.tensor([0, 1, -1])
    expected = F.cross_entropy(logits[:2], y[:2])
    assert ClassificationLoss()(logits, y).item() == pytest.approx(expected.item())
    assert ClassificationLoss()(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def _three_points():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    return z, y


def test_confusion_loss_hand_computed_dynamic_weights():
    z, y = _three_points()
    m_hat = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    loss = ConfusionLoss(scale_init=10.0, bias_init=-5.0)(z, y, m_hat)
    same = _bce_pos(10 * 1.0 - 5)  # pairs (0,1), (1,0): cos 1, target 1, weight 1
    diff = _bce_neg(
        10 * math.sqrt(0.5) - 5
    )  # 4 ordered pairs with class 1: cos 1/sqrt2, weight 0.5
    expected = (2 * same + 4 * 0.5 * diff) / (2 * 1 + 4 * 0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_confusion_loss_weight_changes_emphasis():
    z, y = _three_points()
    loss = ConfusionLoss()(z, y, torch.tensor([[0.0, 2.0], [2.0, 0.0]]))
    same, diff = _bce_pos(5.0), _bce_neg(10 * math.sqrt(0.5) - 5)
    assert loss.item() == pytest.approx((2 * same + 8 * diff) / (2 + 8), rel=1e-5)


def test_confusion_loss_gradients_finite_including_s_and_b():
    z, y = _three_points()
    mod = ConfusionLoss()
    mod(z, y, torch.ones(2, 2)).backward()
    for g in (z.grad, mod.scale.grad, mod.bias.grad):
        assert g is not None and torch.isfinite(g).all()
    assert mod.scale.grad.abs() > 0


def test_confusion_loss_no_positive_pairs():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss = ConfusionLoss()(z, y, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert loss.item() == pytest.approx(_bce_neg(-5.0), rel=1e-5)
    # all different-class weights zero: no weight at all, the loss is 0 and still differentiable
    zero = ConfusionLoss()(z, y, torch.zeros(2, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(z.grad).all()


def test_confusion_loss_no_negative_pairs():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    y = torch.tensor([3, 3])
    loss = ConfusionLoss()(z, y, torch.zeros(4, 4))  # M-hat irrelevant: same-class pairs weigh 1
    assert loss.item() == pytest.approx(_bce_pos(-5.0), rel=1e-5)


def test_confusion_loss_single_sample_and_unlabelled():
    z = torch.randn(1, 3, requires_grad=True)
    loss = ConfusionLoss()(z, torch.tensor([0]), torch.ones(1, 1))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()
    z2 = torch.randn(3, 3)
    assert ConfusionLoss()(z2, torch.tensor([-1, -1, 0]), torch.ones(1, 1)).item() == 0.0


def test_diccae_total_is_the_weighted_sum():
    torch.manual_seed(1)
    out = {
        "logits_audio": torch.randn(6, 3),
        "logits_video": torch.randn(6, 3),
        "logits_fused": torch.randn(6, 3),
        "proj_audio": torch.randn(6, 4),
        "proj_video": torch.randn(6, 4),
        "z": torch.randn(6, 5),
    }
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    w = torch.ones(3, 3)
    loss = DiccaeLoss(ce_audio=1.0, ce_video=0.5, ce_fused=2.0, lambda_nce=0.3, lambda_cl=0.7)
    total, terms = loss(out, y, w)
    expected = (
        terms["ce_audio"]
        + 0.5 * terms["ce_video"]
        + 2.0 * terms["ce_fused"]
        + 0.3 * terms["infonce"]
        + 0.7 * terms["confusion"]
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    off = DiccaeLoss(lambda_cl=0.0, lambda_nce=0.0)
    _, terms_off = off(out, y, w)
    assert "confusion" not in terms_off and "infonce" not in terms_off


def _split_batch_losses(out, y, w, parts, loss):
    """Evaluate ``loss`` as ``len(parts)`` ranks would: each holds the rows ``parts[r]``,
    its gather returns the whole batch (with gradient to its own rows)."""
    results = []
    for rows in parts:
        mine = {k: v[rows] for k, v in out.items()}

        def gather(x, rows=rows):
            for key in ("proj_audio", "proj_video", "z"):
                if x.shape == out[key][rows].shape and torch.equal(x, out[key][rows]):
                    whole = out[key].detach().clone()
                    whole[rows] = x  # this rank's rows carry the gradient
                    return whole
            raise AssertionError("unexpected tensor gathered")

        view = BatchView(y, gather, world=len(parts))
        results.append(loss(mine, y[rows], w, view))
    return results


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_ranks_shares_add_up_to_the_single_process_loss(label_smoothing):
    """Cross-entropy over the GLOBAL labelled count: shares sum to the batch mean even when
    ranks hold different numbers of labelled rows; pairwise terms use the gathered batch."""
    torch.manual_seed(3)
    n = 9
    out = {
        "logits_audio": torch.randn(n, 3),
        "logits_video": torch.randn(n, 3),
        "logits_fused": torch.randn(n, 3),
        "proj_audio": torch.randn(n, 4),
        "proj_video": torch.randn(n, 4),
        "z": torch.randn(n, 5),
    }
    y = torch.tensor([0, 0, 1, -1, 2, 2, 1, -1, 0])  # unlabelled rows in both shares
    w = torch.rand(3, 3)
    loss = DiccaeLoss(ce_audio=1.0, ce_video=0.5, ce_fused=2.0, lambda_nce=0.3, lambda_cl=0.7,
                      label_smoothing=label_smoothing)  # fmt: skip
    total, terms = loss(out, y, w)
    parts = [torch.tensor([0, 3, 4, 8]), torch.tensor([1, 2, 5, 6, 7])]  # 3 and 4 labelled rows
    ranks = _split_batch_losses(out, y, w, parts, loss)
    for key in ("ce_audio", "ce_video", "ce_fused"):
        got = sum(t[key] for _, t in ranks)
        assert got.item() == pytest.approx(terms[key].item(), rel=1e-6), key
    for key in ("infonce", "confusion"):
        for _, t in ranks:
            assert t[key].item() == pytest.approx(terms[key].item(), rel=1e-6), key
    # DDP averages the ranks' gradients: the mean of their totals is the single-process total
    mean_total = sum(t for t, _ in ranks) / len(ranks)
    assert mean_total.item() == pytest.approx(total.item(), rel=1e-6)


def test_the_default_view_is_the_whole_batch_exactly():
    torch.manual_seed(4)
    logits, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, -1, 1, 0])
    ce = ClassificationLoss(label_smoothing=0.1)
    keep = y >= 0
    expected = F.cross_entropy(logits[keep], y[keep], label_smoothing=0.1)
    assert torch.equal(ce(logits, y), expected)  # bit for bit: single-process numbers unchanged
    assert torch.equal(ce(logits, y, n_total=6), expected)
    assert ce(logits, y, n_total=12).item() == pytest.approx(expected.item() / 2, rel=1e-6)
