"""MulT: Multimodal Transformer (Tsai et al. 2019; paper appendix C.3, baseline 5), compact.

1. Temporal convolution per modality to the common width d = ``model.dim`` (kernels
   ``model.kernel_language/acoustic/visual``; language reads the frozen encoder's
   WordPiece outputs). Sequences keep their own lengths: MulT needs no alignment.
2. For each target modality m and each other modality n, a cross-modal transformer
   CM_{n->m} (queries from m, keys/values from n; eq. 4-6 of the MulT paper) of
   ``model.mult.layers`` layers; the M-1 outputs are concatenated, (B, T_m, (M-1) d).
3. A self-attention transformer of width (M-1) d over that sequence (MulT's
   ``trans_*_mem``), and its output at m's last valid step.
4. The M targets' vectors are concatenated (M (M-1) d), passed through a residual block
   (Linear, ReLU, dropout, Linear, + input) and Linear -> 1.

Heads: ``model.transformer_heads``; dropout: ``model.dropout`` everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel
from m3sa.models.baseline_parts import Baseline, CrossModalTransformer, Sequences
from m3sa.models.encoders import TemporalConv, last_valid_step


class MulT(Baseline):
    """Cross-modal transformers into every target modality, compact (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(cfg, dims, modalities)
        d, heads, layers, p = cfg.dim, cfg.transformer_heads, cfg.mult.layers, cfg.dropout
        kernels = {"language": cfg.kernel_language, "acoustic": cfg.kernel_acoustic, "visual": cfg.kernel_visual}
        self.proj = nn.ModuleDict({m: TemporalConv(self.widths[m], d, kernels[m]) for m in self.modalities})
        self.input_dropout = nn.Dropout(p)
        self.cross = nn.ModuleDict({
            f"{n}_to_{m}": CrossModalTransformer(d, heads, layers, p)
            for m in self.modalities for n in self.modalities if n != m
        })
        width = (len(self.modalities) - 1) * d
        self.memory = nn.ModuleDict({m: CrossModalTransformer(width, heads, layers, p) for m in self.modalities})
        combined = len(self.modalities) * width
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.dropout = nn.Dropout(p)
        self.out = nn.Linear(combined, 1)

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:
        xs = {m: (self.input_dropout(self.proj[m](seq, mask)), mask) for m, (seq, mask) in seqs.items()}  # (B, T_m, d)
        last = []
        for m in self.modalities:
            x, mask = xs[m]
            h = torch.cat([self.cross[f"{n}_to_{m}"](x, mask, *xs[n]) for n in self.modalities if n != m],
                          dim=-1)  # (B, T_m, (M-1) d)
            h = self.memory[m](h, mask)  # (B, T_m, (M-1) d)
            last.append(last_valid_step(h, mask))  # (B, (M-1) d)
        z = torch.cat(last, dim=-1)  # (B, M (M-1) d)
        z = z + self.proj2(self.dropout(F.relu(self.proj1(z))))
        return self.out(z).squeeze(-1)  # (B,)


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = mult``."""
    return MulT(cfg, dims, modalities)
