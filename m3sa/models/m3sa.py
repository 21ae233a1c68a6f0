"""M3SA (paper section 3, eq. 4-9): unimodal networks, shared head, modality filter, fusion.

    x_m  = F_m(u_m)                         eq. 4   (encoders.py)
    y_m  = C(x_m)                           eq. 5   (head.py)
    x_m2 = MFM(x_1, ..., x_M; x_m)          eq. 7   (filter.py; identity when filter=none)
    x_M  = F_M(x_12, ..., x_M2)             eq. 8   (fusion.py)
    y_M  = C(x_M)                           eq. 9

Training runs two phases per batch (``two_phase`` is True; section 4.1): the unimodal
networks and C are updated with the unimodal losses, then the whole model with
l_M (+ weighted l_p). ``model.modulation`` only chooses the unimodal phase's weighting:
true uses the modulation loss (eq. 10-13), false (the W/O ML ablation) the plain losses
l_m. The ablation removes the modulation function, not the decoupled unimodal training
the paper builds on (section 3.2), so the only change is the weighting
(:func:`m3sa.losses.unimodal_objective`).

Any M >= 2 of language / acoustic / visual is supported (a dataset may lack one).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel, ModelOutput, check_inputs, count_parameters
from m3sa.models.encoders import build_encoders, text_parameters
from m3sa.models.filter import ModalityFilter
from m3sa.models.fusion import build_fusion
from m3sa.models.head import RegressionHead

log = logging.getLogger(__name__)


class M3SA(BaseModel):
    """The M3SA model; see the module docstring."""

    two_phase = True

    def __init__(
        self,
        cfg: ModelConfig,
        dims: dict[str, int],
        modalities: tuple[str, ...],
        text_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__(tuple(modalities))
        check_inputs(dims, self.modalities, minimum=2)
        self.cfg = cfg
        self.encoders = build_encoders(cfg, dims, self.modalities, text_encoder)  # F_m
        self.head = RegressionHead(cfg.dim, cfg.head_hidden, cfg.dropout)  # C
        self.filter = ModalityFilter(cfg, self.modalities) if cfg.filter != "none" else None  # MFM
        self.fusion = build_fusion(cfg.fusion, cfg.dim, len(self.modalities), cfg.head_hidden)  # F_M
        log.info("M3SA: %d parameters (%d in the text encoder)", count_parameters(self),
                 sum(p.numel() for p in self.text_parameters()))

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:
        """Predict; ``drop`` = a modality treated as absent: F_m is not run, x_m2 = b_m."""
        self.check_drop(drop)
        xs = {m: enc(batch) for m, enc in self.encoders.items() if m != drop}  # x_m, eq. 4: m -> (B, d)
        unimodal = {m: self.head(x).float() for m, x in xs.items()}  # y_m, eq. 5
        ref = next(iter(xs.values()))
        if self.filter is not None:
            out = self.filter(xs, drop)  # eq. 14-21
            x2, keep, penalty, l0 = out.x2, out.keep, out.penalty, out.expected_l0
        else:  # W/O MFM: x_m2 = x_m, a dropped modality is zeros
            x2 = dict(xs)
            if drop is not None:
                x2[drop] = torch.zeros_like(ref)
            keep = {}
            penalty = l0 = ref.new_zeros((), dtype=torch.float32)
        fused = self.fusion(torch.stack([x2[m] for m in self.modalities], dim=1))  # x_M, eq. 8: (B, M, d) -> (B, d)
        return ModelOutput(pred=self.head(fused).float(), unimodal=unimodal, filter_values=keep, penalty=penalty,
                           expected_l0=l0)

    def unimodal(self, batch: Batch) -> dict[str, torch.Tensor]:
        """y_m = C(F_m(u_m)) for every modality (eq. 4-5): no filter, fusion or fused head, so
        the unimodal phase draws no random numbers the paper's phase 1 does not draw."""
        return {m: self.head(enc(batch)).float() for m, enc in self.encoders.items()}  # m -> (B,)

    def unimodal_parameters(self) -> dict[str, list[nn.Parameter]]:
        """F_m's parameters per modality (the language network includes its text encoder)
        and the shared head C under ``head``."""
        groups = {m: list(enc.parameters()) for m, enc in self.encoders.items()}
        groups["head"] = list(self.head.parameters())
        return groups

    def text_parameters(self) -> list[nn.Parameter]:
        return text_parameters(self.encoders)

    def set_epoch(self, epoch: int) -> None:
        if self.filter is not None:
            self.filter.set_epoch(epoch)


def build(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Registry builder for ``model.name = m3sa``."""
    return M3SA(cfg, dims, modalities)
