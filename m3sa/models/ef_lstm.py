"""EF-LSTM: word-level early fusion (the baseline of Zadeh et al. 2017 / Tsai et al. 2019;
paper appendix C.3, baseline 1).

At every WordPiece t the modalities' features are concatenated,

    u_t = [l_t; a_{w(t)}; v_{w(t)}]          (H + d_a + d_v)

where l_t is the frozen encoder's output for the piece and a_{w(t)}, v_{w(t)} the rows of
the word the piece belongs to (``batch["word_index"]``; zeros on [CLS]/[SEP]). One LSTM
reads u_1..u_T; its state at the last valid step goes through the MMSA output block:
dropout -> Linear(d, d) -> ReLU -> dropout -> Linear(d, 1).

Without the language modality the acoustic and visual word rows are concatenated directly
(they share the word time axis). Needs ``data.align=words``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel
from m3sa.models.baseline_parts import Baseline, LastStepLSTM, Sequences, expand_to_tokens


class EFLSTM(Baseline):
    """Concatenate per step, one LSTM (width ``model.dim``), MLP head."""

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(cfg, dims, modalities)
        d_in = sum(self.widths.values())
        self.rnn = LastStepLSTM(d_in, cfg.dim)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.dim, cfg.dim), nn.ReLU(),
                                  nn.Dropout(cfg.dropout), nn.Linear(cfg.dim, 1))

    def fused_sequence(self, seqs: Sequences, batch: Batch) -> tuple[Tensor, Tensor]:
        """(B, T, sum d_m) step-wise concatenation and its (B, T) mask."""
        if "language" in seqs:
            text, mask = seqs["language"]  # (B, T_tok, H)
            parts = [text]
            for m in self.modalities:
                if m != "language":
                    parts.append(expand_to_tokens(*seqs[m], batch["word_index"]))  # (B, T_tok, d_m)
            return torch.cat(parts, dim=-1), mask  # (B, T_tok, H + sum d_m)
        t = max(seq.shape[1] for seq, _ in seqs.values())
        parts, masks = [], []
        for m in self.modalities:
            seq, mask = seqs[m]
            pad = t - seq.shape[1]
            parts.append(F.pad(seq * mask.unsqueeze(-1).to(seq.dtype), (0, 0, 0, pad)))  # (B, T, d_m)
            masks.append(F.pad(mask, (0, pad)))  # (B, T)
        return torch.cat(parts, dim=-1), torch.stack(masks).any(0)

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:
        seq, mask = self.fused_sequence(seqs, batch)
        return self.head(self.rnn(seq, mask)).squeeze(-1)  # (B, d) -> (B,)


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = ef_lstm``."""
    return EFLSTM(cfg, dims, modalities)
