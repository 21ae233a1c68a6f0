"""Plain baselines sharing M3SA's encoders.

- ``late_fusion``: the same unimodal networks F_m, fusion F_M (``model.fusion``) and head C,
  trained end to end with l_M only: no modulation loss, no filter, no unimodal phase.
- ``text_only``: the language network F_l and a head, trained with l_M only (a fine-tuned
  text regressor).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from m3sa.config import ModelConfig
from m3sa.errors import ModelError
from m3sa.models.base import Batch, BaseModel, ModelOutput, check_inputs, count_parameters
from m3sa.models.encoders import LanguageNetwork, build_encoders, text_parameters
from m3sa.models.fusion import build_fusion
from m3sa.models.head import RegressionHead
from m3sa.models.text import load_encoder

log = logging.getLogger(__name__)


class LateFusion(BaseModel):
    """y = C(F_M(F_1(u_1), ..., F_M(u_M))): M3SA's unimodal networks, fusion and head, without
    the modality filter, the unimodal phase and unimodal outputs.

    ``drop`` = a modality treated as absent: F_m is not run and its embedding is zeros.
    """

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(tuple(modalities))
        check_inputs(dims, self.modalities, minimum=2)
        self.cfg = cfg
        self.encoders = build_encoders(cfg, dims, self.modalities)  # F_m
        self.head = RegressionHead(cfg.dim, cfg.head_hidden, cfg.dropout)  # C
        self.fusion = build_fusion(cfg.fusion, cfg.dim, len(self.modalities), cfg.head_hidden)  # F_M
        log.info("LateFusion: %d parameters (%d in the text encoder)", count_parameters(self),
                 sum(p.numel() for p in self.text_parameters()))

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:
        self.check_drop(drop)
        xs = {m: enc(batch) for m, enc in self.encoders.items() if m != drop}  # m -> (B, d)
        ref = next(iter(xs.values()))
        x = torch.stack([xs[m] if m in xs else torch.zeros_like(ref) for m in self.modalities], dim=1)  # (B, M, d)
        return ModelOutput(pred=self.head(self.fusion(x)).float(), penalty=ref.new_zeros((), dtype=torch.float32))

    def text_parameters(self) -> list[nn.Parameter]:
        return text_parameters(self.encoders)


class TextOnly(BaseModel):
    """y = C(F_l(u_l)). ``modalities`` lists what the data holds; only language is read.

    ``drop="language"`` predicts from a zero embedding; dropping another modality changes nothing.
    """

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> None:
        super().__init__(tuple(modalities))
        check_inputs(dims, self.modalities, minimum=1)
        if "language" not in self.modalities:
            raise ModelError(f"model.name=text_only needs the language modality; the data has {list(modalities)}")
        self.cfg = cfg
        self.encoders = nn.ModuleDict({"language": LanguageNetwork(load_encoder(cfg.text_encoder), cfg)})
        self.head = RegressionHead(cfg.dim, cfg.head_hidden, cfg.dropout)

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:
        self.check_drop(drop)
        x = self.encoders["language"](batch)  # (B, d)
        if drop == "language":
            x = torch.zeros_like(x)
        return ModelOutput(pred=self.head(x).float(), penalty=x.new_zeros((), dtype=torch.float32))

    def text_parameters(self) -> list[nn.Parameter]:
        return text_parameters(self.encoders)


def build_late_fusion(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = late_fusion``."""
    return LateFusion(cfg, dims, modalities)


def build_text_only(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = text_only``."""
    return TextOnly(cfg, dims, modalities)
