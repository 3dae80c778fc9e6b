"""The loss terms of DICCAE, each a small ``nn.Module`` with explicit arguments.

* :class:`InfoNCELoss`: layer 1 of the framework (paper section 2.2) aligns the
  audio and video projections of the same clip, symmetric in both directions.
* :class:`ClassificationLoss`: cross-entropy of one classifier head.
* :class:`ConfusionLoss`: the pairwise confusion loss of Eq. 1 weighted per class
  pair by the scaled confusion degree M-hat (Eq. 3, Eq. 4).  The similarity F_p
  is ``sigmoid(s * cos(z_i, z_j) + b)`` with learnable ``s`` and ``b`` so the
  model can choose where on the cosine axis "same class" starts.  Same-class
  pairs always weigh 1 (pulling them together is never a mistake); a
  different-class pair weighs M-hat[y_i, y_j], so confusable classes are pushed
  apart hardest.  The sum is divided by the total weight (Eq. 4 with a
  normaliser) so the loss scale does not depend on the batch composition.
* :class:`DiccaeLoss`: the weighted total, returning every term for logging.

One path for one process and N DistributedDataParallel ranks (as open_clip's
``ClipLoss``): the loss takes a :class:`BatchView` saying where this process's
rows sit in the optimiser step's global batch.  In one process it is the whole
batch (``gather`` is the identity); under DDP ``gather`` is an all-gather with
gradient (:func:`trainer.distributed.gather_batch`).  Cross-entropy is per row,
so each process sums its own rows and divides by the *global* labelled count;
InfoNCE and the confusion loss compare every pair, so they run on the gathered
batch.  ``total`` is scaled so that DDP's gradient average over ``world``
processes equals the gradient of the single-process loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


def identity(x: torch.Tensor) -> torch.Tensor:
    """The gather of a single process: its rows are the whole batch."""
    return x


class BatchView:
    """This process's rows within the optimiser step's global batch.

    ``labels`` are the labels of the whole batch in single-process order;
    ``gather`` turns a per-row tensor of this process's rows into the whole batch
    in that order, with gradient; ``world`` is the number of processes whose
    gradients are averaged.  A plain class (not a dataclass) so DDP passes it
    through ``forward`` untouched.
    """

    __slots__ = ("labels", "gather", "world")

    def __init__(
        self,
        labels: torch.Tensor,
        gather: Callable[[torch.Tensor], torch.Tensor] = identity,
        world: int = 1,
    ):
        self.labels, self.gather, self.world = labels, gather, world

    @property
    def n_labelled(self) -> int:
        """Rows of the global batch with a label (the cross-entropy denominator)."""
        return int((self.labels >= 0).sum())


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE between two views; row i of each is the same clip."""

    def __init__(
        self, *, temperature: float = 0.07, learnable: bool = False, max_scale: float = 100.0
    ):
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self.max_scale = max_scale

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        if audio.shape[0] < 2:
            return audio.sum() * 0.0  # no negatives: nothing to contrast
        a = F.normalize(audio.float(), dim=-1)
        v = F.normalize(video.float(), dim=-1)
        scale = self.logit_scale.exp().clamp(max=self.max_scale)
        logits = scale * a @ v.t()
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class ClassificationLoss(nn.Module):
    """Cross-entropy of one head; rows with label < 0 are ignored.

    ``n_total`` is the labelled count of the global batch when ``labels`` are only
    this process's share of it (DDP): the result is then this share's
    contribution, ``sum / n_total``, and the shares add up to the batch mean.
    Computed as ``mean * (n / n_total)`` so a single process (factor 1.0) gets
    exactly ``F.cross_entropy``'s mean.
    """

    def __init__(self, *, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, n_total: int | None = None
    ) -> torch.Tensor:
        keep = labels >= 0
        n = int(keep.sum())
        if n == 0:
            return logits.sum() * 0.0
        mean = F.cross_entropy(
            logits[keep].float(), labels[keep], label_smoothing=self.label_smoothing
        )
        if n_total is None or n_total == n:
            return mean
        return mean * (n / n_total)


class ConfusionLoss(nn.Module):
    """Pairwise confusion loss (Eq. 1) weighted by the class-pair matrix (Eq. 4)."""

    def __init__(
        self, *, scale_init: float = 10.0, bias_init: float = -5.0, learnable: bool = True
    ):
        super().__init__()
        s = torch.tensor(float(scale_init))
        b = torch.tensor(float(bias_init))
        if learnable:
            self.scale, self.bias = nn.Parameter(s), nn.Parameter(b)
        else:
            self.register_buffer("scale", s)
            self.register_buffer("bias", b)

    def pair_logits(self, z: torch.Tensor) -> torch.Tensor:
        zn = F.normalize(z.float(), dim=-1)
        return self.scale * (zn @ zn.t()) + self.bias

    def forward(self, z: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``z`` (B, D) fused features, ``labels`` (B,), ``weights`` (C, C) M-hat.

        Returns 0 (connected to the graph) when the batch has no valid pair.
        """
        keep = labels >= 0
        z, labels = z[keep], labels[keep]
        n = z.shape[0]
        if n < 2:
            return z.sum() * 0.0 + self.scale * 0.0
        logits = self.pair_logits(z)
        same = labels[:, None] == labels[None, :]
        w = weights.to(device=z.device, dtype=torch.float32)[labels[:, None], labels[None, :]]
        w = torch.where(same, torch.ones_like(w), w)
        off_diag = ~torch.eye(n, dtype=torch.bool, device=z.device)
        w = w * off_diag
        bce = F.binary_cross_entropy_with_logits(logits, same.float(), reduction="none")
        total = w.sum()
        if float(total) <= 0.0:
            return (bce * 0.0).sum()
        return (w * bce).sum() / total


CE_HEADS = (
    ("ce_audio", "logits_audio"),
    ("ce_video", "logits_video"),
    ("ce_fused", "logits_fused"),
)


class DiccaeLoss(nn.Module):
    """CE_a + CE_v + CE_z + lambda_nce * InfoNCE + lambda_cl * L_DICCAE.

    ``forward`` returns the total to back-propagate and every term for logging.
    With a :class:`BatchView` of several processes the cross-entropy terms are this
    process's contribution (sum them over processes) and the pairwise terms are
    the global batch's (the same on every process).
    """

    def __init__(
        self,
        *,
        ce_audio: float = 1.0,
        ce_video: float = 1.0,
        ce_fused: float = 1.0,
        lambda_nce: float = 1.0,
        lambda_cl: float = 1.0,
        temperature: float = 0.07,
        learn_temperature: bool = False,
        confusion_scale_init: float = 10.0,
        confusion_bias_init: float = -5.0,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.weights = {
            "ce_audio": ce_audio,
            "ce_video": ce_video,
            "ce_fused": ce_fused,
            "infonce": lambda_nce,
            "confusion": lambda_cl,
        }
        self.infonce = InfoNCELoss(temperature=temperature, learnable=learn_temperature)
        self.classification = ClassificationLoss(label_smoothing=label_smoothing)
        self.confusion = ConfusionLoss(
            scale_init=confusion_scale_init, bias_init=confusion_bias_init
        )

    def forward(
        self,
        out: dict[str, torch.Tensor],
        labels: torch.Tensor,
        pair_weights: torch.Tensor,
        batch: BatchView | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``out`` and ``labels`` are this process's rows; ``batch`` (default: they are
        the whole batch) places them in the global batch."""
        view = batch if batch is not None else BatchView(labels)
        n_total = None if batch is None else view.n_labelled
        terms: dict[str, torch.Tensor] = {}
        scaled: dict[str, torch.Tensor] = {}
        w = self.weights
        for key, head in CE_HEADS:
            if w[key]:
                terms[key] = self.classification(out[head], labels, n_total)
                # DDP averages gradients over ranks: a per-rank share counts ``world`` times
                scaled[key] = terms[key] * view.world if view.world != 1 else terms[key]
        if w["infonce"]:
            pa, pv = view.gather(out["proj_audio"].float()), view.gather(out["proj_video"].float())
            terms["infonce"] = scaled["infonce"] = self.infonce(pa, pv)
        if w["confusion"]:
            z = view.gather(out["z"].float())
            terms["confusion"] = scaled["confusion"] = self.confusion(z, view.labels, pair_weights)
        if not terms:
            return out["z"].sum() * 0.0, {}
        total = cast(torch.Tensor, sum(w[k] * v for k, v in scaled.items()))
        return total, {k: v.detach() for k, v in terms.items()}
