"""MAG-BERT: a Multimodal Adaptation Gate inside the BERT-family encoder (Rahman et al. 2020;
paper appendix C.3, baseline 10).

At every WordPiece t, with Z_t the encoder's hidden state at the gate's position and
A_t, V_t the acoustic/visual rows of the piece's word (``batch["word_index"]``; zeros on
[CLS]/[SEP]), MAG computes (eq. 1-6 of the MAG paper):

    g_v = ReLU(W_gv [V_t; Z_t] + b_v),   g_a = ReLU(W_ga [A_t; Z_t] + b_a)    gates
    H_t = g_v * (W_v V_t) + g_a * (W_a A_t) + b_H                          displacement
    alpha_t = min(beta * ||Z_t|| / ||H_t||, 1)                                norm rule
    Zbar_t = Dropout(LayerNorm(Z_t + alpha_t H_t))

so the added shift alpha_t H_t never exceeds beta times the norm of the embedding it
shifts. ||H_t|| is computed as sqrt(||H_t||^2 + eps^2) (eps = 1e-6), which keeps the rule
and a finite gradient when H_t = 0. The gate sits on the embedding output
(``model.mag.layer = 0``, the MAG code's choice) or after encoder layer k
(``model.mag.layer = k``). The encoder is fine-tuned (``train.lr_text``); the prediction is
Linear(Dropout(tanh(Linear([CLS] output)))), BERT's pooler and regression head (the pooler
is freshly initialised: the project's encoder loader drops the pretrained one).

With one nonverbal modality (a dataset without visual, say) only its gate is built.
Dropping the language modality replaces the words' WordPieces by [PAD] (attention kept, so
the nonverbal shifts still reach the encoder). Needs ``data.align=words``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.errors import ModelError
from m3sa.models.base import Batch, BaseModel, ModelOutput, count_parameters, check_inputs
from m3sa.models.baseline_parts import expand_to_tokens
from m3sa.models.text import load_encoder

log = logging.getLogger(__name__)

NORM_EPS = 1e-6


def scale_displacement(z: Tensor, h: Tensor, beta: float, eps: float = NORM_EPS) -> Tensor:
    """The norm rule: alpha * h with alpha = min(beta * ||z|| / ||h||, 1) per position.

    z, h: (..., H). Norms over the last axis, in float32; ||h|| is taken as
    sqrt(||h||^2 + eps^2), so ||alpha * h|| <= beta * ||z|| holds exactly and h = 0 gives a
    zero shift with a finite gradient. Returns (..., H) in h's dtype.
    """
    zn = torch.linalg.vector_norm(z.float(), dim=-1, keepdim=True)  # (..., 1)
    hn = torch.sqrt(h.float().pow(2).sum(-1, keepdim=True) + eps * eps)  # (..., 1)
    alpha = torch.clamp(beta * zn / hn, max=1.0)  # (..., 1)
    return (alpha * h.float()).to(h.dtype)


class MAG(nn.Module):
    """Multimodal Adaptation Gate over the nonverbal modalities ``dims`` (name -> width)."""

    def __init__(self, hidden: int, dims: dict[str, int], beta: float, dropout: float) -> None:
        super().__init__()
        self.beta = beta
        self.gates = nn.ModuleDict({m: nn.Linear(d + hidden, hidden) for m, d in dims.items()})  # W_gm, b_m
        self.proj = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})  # W_m (biases sum to b_H)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def displacement(self, z: Tensor, feats: dict[str, Tensor]) -> Tensor:
        """H = sum_m ReLU(W_gm [f_m; z]) * (W_m f_m): (B, T, H) from z (B, T, H), f_m (B, T, d_m)."""
        h = torch.zeros_like(z)
        for m, gate in self.gates.items():
            f = feats[m].to(z.dtype)
            h = h + torch.relu(gate(torch.cat([f, z], dim=-1))) * self.proj[m](f)  # (B, T, H)
        return h

    def forward(self, z: Tensor, feats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(Dropout(LayerNorm(z + shift)), shift) with shift = alpha * H (the norm rule)."""
        shift = scale_displacement(z, self.displacement(z, feats), self.beta)
        return self.dropout(self.norm(z + shift)), shift


def _layers(bert: nn.Module) -> nn.ModuleList | None:
    """The encoder's list of Transformer layers (BERT/RoBERTa: encoder.layer; DistilBERT: transformer.layer)."""
    for owner in ("encoder", "transformer"):
        layers = getattr(getattr(bert, owner, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    return None


class MAGBERT(BaseModel):
    """The BERT-family encoder with a MAG at ``model.mag.layer``, then pooler and regression head."""

    two_phase = False

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(tuple(modalities))
        check_inputs(dims, self.modalities, minimum=2)
        if "language" not in self.modalities:
            raise ModelError(f"model.name=mag_bert needs the language modality; the data has {list(modalities)}")
        self.cfg = cfg
        self.bert = load_encoder(cfg.text_encoder)
        layers = _layers(self.bert)
        if getattr(self.bert, "embeddings", None) is None or layers is None:
            raise ModelError(
                f"model.text_encoder '{cfg.text_encoder}' ({type(self.bert).__name__}) exposes no embeddings/layer "
                "list for the adaptation gate; use a BERT-family encoder"
            )
        if cfg.mag.layer > len(layers):
            raise ModelError(
                f"model.mag.layer = {cfg.mag.layer}, but the text encoder has {len(layers)} layers; "
                f"use 0 (embedding output) to {len(layers)}"
            )
        hidden = int(self.bert.config.hidden_size)
        self.nonverbal = tuple(m for m in self.modalities if m != "language")
        self.mag = MAG(hidden, {m: int(dims[m]) for m in self.nonverbal}, cfg.mag.beta, cfg.dropout)
        self.pooler = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(hidden, 1)
        self.pad_id = int(getattr(self.bert.config, "pad_token_id", None) or 0)
        log.info("MAG-BERT: gate at %s, %d parameters (%d in the text encoder)",
                 "the embedding output" if cfg.mag.layer == 0 else f"layer {cfg.mag.layer}",
                 count_parameters(self), count_parameters(self.bert))

    def gate_site(self) -> nn.Module:
        """The encoder module whose output the gate shifts."""
        if self.cfg.mag.layer == 0:
            return self.bert.embeddings
        layers = _layers(self.bert)
        assert layers is not None
        return layers[self.cfg.mag.layer - 1]

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:
        self.check_drop(drop)
        widx = batch["word_index"]  # (B, T_tok)
        feats = {}
        for m in self.nonverbal:
            f = expand_to_tokens(batch[m], batch[f"{m}_mask"], widx)  # (B, T_tok, d_m)
            feats[m] = torch.zeros_like(f) if m == drop else f
        ids = batch["input_ids"]
        if drop == "language":
            ids = ids.masked_fill(widx >= 0, self.pad_id)  # (B, T_tok): words -> [PAD]

        def shift_output(module: nn.Module, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self.mag(output[0], feats)[0], *output[1:])
            return self.mag(output, feats)[0]

        handle = self.gate_site().register_forward_hook(shift_output)
        try:
            kwargs = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
            hidden = self.bert(input_ids=ids, attention_mask=batch["attention_mask"].long(), **kwargs).last_hidden_state
        finally:
            handle.remove()
        pred = self.classifier(self.dropout(self.pooler(hidden[:, 0]))).squeeze(-1).float()  # [CLS] -> (B,)
        return ModelOutput(pred=pred, unimodal={}, filter_values={}, penalty=pred.new_zeros(()))

    def text_parameters(self) -> list[nn.Parameter]:
        return list(self.bert.parameters())


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = mag_bert``."""
    return MAGBERT(cfg, dims, modalities)
