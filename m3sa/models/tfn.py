"""TFN: Tensor Fusion Network (Zadeh et al. 2017; paper appendix C.3, baseline 7).

Modality embedding subnetworks (section 3.1 of the TFN paper):

- language: LSTM (width ``model.dim``) over the frozen encoder's WordPiece outputs, state at
  the last valid step -> dropout -> Linear(dim -> h);
- acoustic / visual: the features averaged over the segment's words -> dropout ->
  3 x (Linear, ReLU) of width h.

Tensor fusion (eq. 1 of the TFN paper): z^m' = [z^m; 1] for each modality and the M-fold
outer product z^l' (x) z^a' (x) z^v', flattened to (h+1)^M values; the 1s keep the
unimodal and bimodal terms. Sentiment inference: dropout -> Linear((h+1)^M -> dim) -> ReLU
-> Linear(dim -> dim) -> ReLU -> Linear(dim -> 1), and the regression output is squashed
to the label range as in the TFN code: y = 6 * sigmoid(o) - 3.

h = ``model.tfn.hidden``. Parameters of the fusion layer: ((h+1)^M + 1) * dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel
from m3sa.models.baseline_parts import Baseline, Sequences, SubNet, TextSubNet

LABEL_MIN, LABEL_RANGE = -3.0, 6.0


def subnetworks(cfg: ModelConfig, widths: dict[str, int], hidden: int) -> nn.ModuleDict:
    """The TFN/LMF modality embedding subnetworks, each with output width ``hidden``."""
    return nn.ModuleDict({
        m: TextSubNet(widths[m], cfg.dim, hidden, cfg.dropout) if m == "language" else SubNet(widths[m], hidden, cfg.dropout)
        for m in widths
    })


def outer_product_fusion(zs: list[Tensor]) -> Tensor:
    """Flattened outer product of [z_m; 1] over the modalities: M x (B, h_m) -> (B, prod(h_m + 1))."""
    prod = F.pad(zs[0], (0, 1), value=1.0)  # (B, h_1 + 1)
    for z in zs[1:]:
        z1 = F.pad(z, (0, 1), value=1.0)  # (B, h_m + 1)
        prod = (prod.unsqueeze(-1) * z1.unsqueeze(1)).flatten(1)  # (B, P, 1) * (B, 1, h_m + 1) -> (B, P * (h_m + 1))
    return prod


class TFN(Baseline):
    """Subnetworks -> tensor fusion -> post-fusion MLP -> 6 sigmoid - 3."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(cfg, dims, modalities)
        h = cfg.tfn.hidden
        self.subnets = subnetworks(cfg, self.widths, h)
        self.post_fusion = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear((h + 1) ** len(self.modalities), cfg.dim), nn.ReLU(),
            nn.Linear(cfg.dim, cfg.dim), nn.ReLU(),
            nn.Linear(cfg.dim, 1),
        )

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:
        zs = [self.subnets[m](*seqs[m]) for m in self.modalities]  # M x (B, h)
        out = self.post_fusion(outer_product_fusion(zs)).squeeze(-1)  # (B, (h+1)^M) -> (B,)
        return LABEL_RANGE * torch.sigmoid(out) + LABEL_MIN


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = tfn``."""
    return TFN(cfg, dims, modalities)
