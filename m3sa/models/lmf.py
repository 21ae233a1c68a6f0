"""LMF: Low-rank Multimodal Fusion (Liu et al. 2018; paper appendix C.3, baseline 8).

The same modality subnetworks as TFN (:mod:`m3sa.models.tfn`), of width d = ``model.dim``.
Instead of forming the (d+1)^M tensor and multiplying it by a weight tensor W, LMF
decomposes W into r modality-specific factors per modality (eq. 5-6 of the LMF paper):

    h = sum_{i=1..r} lambda_i * prod_m ( W_m^(i) [z_m; 1] ) + b

with W_m^(i) of shape (d+1) x o, lambda the rank-combination weights (the LMF code's
``fusion_weights``) and b a bias. As in the LMF code for regression, the output width o is
1: h is the prediction itself. r = ``model.lmf.rank``.

Parameters of the fusion: r * sum_m (d_m + 1) * o + r + o.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel
from m3sa.models.baseline_parts import Baseline, Sequences
from m3sa.models.tfn import subnetworks

OUTPUT_DIM = 1


class LowRankFusion(nn.Module):
    """sum_i lambda_i prod_m (W_m^(i) [z_m; 1]) + b over M modalities of widths ``widths``."""

    def __init__(self, widths: list[int], rank: int, out: int = OUTPUT_DIM) -> None:
        super().__init__()
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(rank, w + 1, out)) for w in widths)
        self.fusion_weights = nn.Parameter(torch.empty(1, rank))  # lambda
        self.fusion_bias = nn.Parameter(torch.zeros(1, out))  # b
        for f in self.factors:
            nn.init.xavier_normal_(f)
        nn.init.xavier_normal_(self.fusion_weights)

    def forward(self, zs: list[Tensor]) -> Tensor:
        prod: Tensor | None = None
        for z, factor in zip(zs, self.factors):
            z1 = F.pad(z, (0, 1), value=1.0)  # (B, d_m + 1)
            f = torch.matmul(z1, factor)  # (B, d_m+1) @ (r, d_m+1, o) -> (r, B, o)
            prod = f if prod is None else prod * f
        assert prod is not None
        out = torch.matmul(self.fusion_weights, prod.permute(1, 0, 2))  # (1, r) @ (B, r, o) -> (B, 1, o)
        return out.squeeze(1) + self.fusion_bias  # (B, o)


class LMF(Baseline):
    """Subnetworks -> low-rank fusion (rank r) -> prediction."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(cfg, dims, modalities)
        self.subnets = subnetworks(cfg, self.widths, cfg.dim)
        self.fusion = LowRankFusion([cfg.dim] * len(self.modalities), cfg.lmf.rank)

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:
        zs = [self.subnets[m](*seqs[m]) for m in self.modalities]  # M x (B, d)
        return self.fusion(zs).squeeze(-1)  # (B, 1) -> (B,)


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = lmf``."""
    return LMF(cfg, dims, modalities)
