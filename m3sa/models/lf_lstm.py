"""LF-LSTM: late fusion of unimodal decisions (paper appendix C.3, baseline 2).

Each modality has its own LSTM (width ``model.dim``) over its own sequence (language: the
frozen encoder's WordPiece outputs; acoustic/visual: their word-level rows); the state at
its last valid step gives a unimodal decision y_m = Linear(dropout(h_m)). The decisions
are combined by a learned weighted vote, y = sum_m w_m y_m + b, with w initialised to the
plain average 1/M and b to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel
from m3sa.models.baseline_parts import Baseline, LastStepLSTM, Sequences


class LFLSTM(Baseline):
    """One LSTM and one decision per modality; learned weighted vote."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(cfg, dims, modalities)
        self.rnns = nn.ModuleDict({m: LastStepLSTM(self.widths[m], cfg.dim) for m in self.modalities})
        self.dropout = nn.Dropout(cfg.dropout)
        self.decisions = nn.ModuleDict({m: nn.Linear(cfg.dim, 1) for m in self.modalities})
        self.vote = nn.Linear(len(self.modalities), 1)
        with torch.no_grad():
            self.vote.weight.fill_(1.0 / len(self.modalities))
            self.vote.bias.zero_()

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:
        ys = [self.decisions[m](self.dropout(self.rnns[m](*seqs[m]))) for m in self.modalities]  # M x (B, 1)
        return self.vote(torch.cat(ys, dim=-1)).squeeze(-1)  # (B, M) -> (B,)


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = lf_lstm``."""
    return LFLSTM(cfg, dims, modalities)
