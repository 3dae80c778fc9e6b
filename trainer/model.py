"""The DICCAE network over stored embeddings (paper section 2.2, Fig. 1).

Layer 1: one MLP encoder per modality turns the stored embedding into an encoded
feature, and a projection head maps it into the space where InfoNCE aligns audio
with video.  Layer 2: a fusion MLP over the concatenated encoded features gives
the fused feature ``z`` on which the confusion loss acts.  Classifier heads sit on
the audio, video and fused features so each modality's accuracy can be read on
its own (Table 1 reports A, V and A-V).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.config import ModelConfig

HEAD_PREFIXES = ("head_audio.", "head_video.", "head_fused.")


def mlp(in_dim: int, widths: Sequence[int], out_dim: int, *, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for w in widths:
        layers += [nn.Linear(d, w), nn.GELU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = w
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ModalityEncoder(nn.Module):
    """Stored embedding -> encoded feature (+ projection for InfoNCE)."""

    def __init__(self, in_dim: int, cfg: ModelConfig):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else nn.Identity()
        self.body = mlp(in_dim, cfg.encoder_widths, cfg.encoded_dim, dropout=cfg.dropout)
        self.projection = nn.Sequential(nn.GELU(), nn.Linear(cfg.encoded_dim, cfg.projection_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.norm(x))
        return h, self.projection(h)


class DiccaeModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.audio_dim < 1 or cfg.video_dim < 1:
            raise ValueError("ModelConfig.audio_dim / video_dim must be set from the store")
        self.cfg = cfg
        self.audio = ModalityEncoder(cfg.audio_dim, cfg)
        self.video = ModalityEncoder(cfg.video_dim, cfg)
        self.fusion = nn.Sequential(
            nn.GELU(),
            mlp(2 * cfg.encoded_dim, cfg.fusion_widths, cfg.fused_dim, dropout=cfg.dropout),
        )
        n = max(1, cfg.num_classes)
        self.head_audio = nn.Linear(cfg.encoded_dim, n)
        self.head_video = nn.Linear(cfg.encoded_dim, n)
        self.head_fused = nn.Linear(cfg.fused_dim, n)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
        ha, pa = self.audio(audio)
        hv, pv = self.video(video)
        z = self.fusion(torch.cat([ha, hv], dim=-1))
        return {
            "enc_audio": ha,
            "enc_video": hv,
            "proj_audio": pa,
            "proj_video": pv,
            "z": z,
            "logits_audio": self.head_audio(ha),
            "logits_video": self.head_video(hv),
            "logits_fused": self.head_fused(z),
        }

    def reset_heads(self, num_classes: int) -> None:
        """New classifier heads (fine-tuning on another label set)."""
        self.cfg.num_classes = num_classes
        dev = self.head_fused.weight.device
        self.head_audio = nn.Linear(self.cfg.encoded_dim, num_classes).to(dev)
        self.head_video = nn.Linear(self.cfg.encoded_dim, num_classes).to(dev)
        self.head_fused = nn.Linear(self.cfg.fused_dim, num_classes).to(dev)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Encoders, projections and fusion: what fine-tuning inherits."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
