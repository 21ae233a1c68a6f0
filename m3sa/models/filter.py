"""Modality filter module, MFM (paper section 3.4, eq. 14-21).

    x_cat    = [x_1; ...; x_M]                                  (B, M*d)
    x'       = Linear(M*d -> d)(x_cat)                          eq. 14
    shift_m  = ReLU(x' - x_m)
    s_m      = Filter(shift_m)                                  eq. 15
    x_m2     = s_m * x_m + (1 - s_m) * b_m                      eq. 16 / 20

The filter network FC (a ReLU MLP) is one network shared by all modalities, as the paper's
notation has it (eq. 15 and 17 index no parameters by m): what sets s_m apart is the shift of
x_m from the joint view x'. Its last layer starts with small weights (``filter_init_std``)
and zero bias, so the initial logits are near 0.

Soft filter (eq. 17-20): z_m = FC(shift_m) in R^2, s_m = softmax(lambda * z_m), share kept
s_m[0], penalty l_p (eq. 19). lambda may ramp linearly from 1 to ``soft_lambda`` over
``soft_lambda_warmup_epochs`` epochs (:meth:`ModalityFilter.set_epoch`); the current value
is a buffer, so checkpoints carry it.

Hard filter (eq. 21, Hard Concrete, Louizos et al. 2017): z_m = FC(shift_m) in R,
u ~ Uniform(0, 1) while training and u = 0.5 at evaluation,
s_hat = sigmoid((logit(u) + z_m) / beta), s_bar = s_hat (zeta - gamma) + gamma,
s_m = 1[s_bar > 0.5] with a straight-through gradient (that of clamp(s_bar, 0, 1)), which is
zero for draws where s_bar is clamped: about a third of them at z = 0 and more as |z| grows,
as in Louizos et al.'s estimator.

Baseline embeddings b_m: learned (zero-initialised) with ``baseline_embedding``, else a
zero buffer (W/O BE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.losses import soft_penalty


def soft_assign(z: Tensor, lam: float | Tensor) -> Tensor:
    """Soft filter assignment s = softmax(lambda * z) (eq. 18); z: (..., 2)."""
    return torch.softmax(lam * z, dim=-1)


def hard_concrete(
    z: Tensor,
    beta: float,
    gamma: float,
    zeta: float,
    training: bool,
    u: Tensor | None = None,
) -> Tensor:
    """Hard Concrete gate (eq. 21): values in {0, 1}, straight-through gradient.

    Forward: 1[s_bar > 0.5]. Backward: the gradient of clamp(s_bar, 0, 1).
    u is drawn from Uniform(0, 1) while ``training`` (unless given) and is 0.5 otherwise.
    """
    if u is None:
        u = torch.rand_like(z) if training else torch.full_like(z, 0.5)
    u = u.clamp(1e-6, 1.0 - 1e-6)
    s_hat = torch.sigmoid((torch.log(u) - torch.log1p(-u) + z) / beta)
    s_bar = (s_hat * (zeta - gamma) + gamma).clamp(0.0, 1.0)
    hard = (s_bar > 0.5).to(z.dtype)
    return hard + (s_bar - s_bar.detach())  # forward value exactly 0 or 1


def hard_keep_probability(z: float, beta: float, gamma: float, zeta: float) -> float:
    """P(s = 1) of the Hard Concrete gate for logit z while training.

    s_bar > 0.5  <=>  s_hat > t := (0.5 - gamma) / (zeta - gamma)
                 <=>  logit(u) > beta * logit(t) - z
    so P = sigmoid(z - beta * logit(t)); with gamma = -0.1, zeta = 1.1, t = 0.5 and P = sigmoid(z).
    """
    t = (0.5 - gamma) / (zeta - gamma)
    return 1.0 / (1.0 + math.exp(-(z - beta * math.log(t / (1.0 - t)))))


class ModalityFilter(nn.Module):
    """MFM over ``modalities`` (M >= 2): returns (x_m2 per modality, s_m per modality, penalty)."""

    def __init__(self, cfg: ModelConfig, modalities: tuple[str, ...]) -> None:
        super().__init__()
        if cfg.filter not in ("soft", "hard"):
            raise ValueError(f"ModalityFilter needs filter soft or hard, got {cfg.filter!r}")
        self.kind = cfg.filter
        self.modalities = tuple(modalities)
        d, n = cfg.dim, len(self.modalities)
        self.mix = nn.Linear(n * d, d)  # eq. 14
        out = 2 if self.kind == "soft" else 1
        self.fc = nn.Sequential(nn.Linear(d, cfg.filter_hidden), nn.ReLU(), nn.Linear(cfg.filter_hidden, out))
        nn.init.normal_(self.fc[-1].weight, std=cfg.filter_init_std)
        nn.init.zeros_(self.fc[-1].bias)
        if cfg.baseline_embedding:
            self.baseline = nn.Parameter(torch.zeros(n, d))
        else:
            self.register_buffer("baseline", torch.zeros(n, d), persistent=False)
        self.soft_lambda = cfg.soft_lambda
        self.warmup = cfg.soft_lambda_warmup_epochs
        self.register_buffer("lam", torch.tensor(self.lambda_at(0)))
        self.beta, self.gamma, self.zeta = cfg.hard_beta, cfg.hard_gamma, cfg.hard_zeta

    def lambda_at(self, epoch: int) -> float:
        """lambda for 0-based ``epoch``: 1 + (soft_lambda - 1) * min(epoch / warmup, 1)."""
        if self.warmup <= 0:
            return float(self.soft_lambda)
        return 1.0 + (self.soft_lambda - 1.0) * min(epoch / self.warmup, 1.0)

    def set_epoch(self, epoch: int) -> None:
        self.lam.fill_(self.lambda_at(epoch))

    def baseline_of(self, modality: str) -> Tensor:
        """b_m, shape (d,)."""
        return self.baseline[self.modalities.index(modality)]

    def forward(
        self, xs: dict[str, Tensor], drop: str | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """xs: modality -> (B, d). ``drop``: that modality's x_m is replaced by b_m before the
        filter (no information of it reaches the output) and its x_m2 is b_m (s_m = 0)."""
        ref = next(iter(xs.values()))  # (B, d)
        bsz = ref.shape[0]
        x = torch.stack(
            [self.baseline_of(m).expand(bsz, -1).to(ref.dtype) if m == drop else xs[m] for m in self.modalities]
        )  # (M, B, d)
        x_cat = x.permute(1, 0, 2).reshape(bsz, -1)  # (B, M*d)
        shift = F.relu(self.mix(x_cat).unsqueeze(0) - x)  # (M, B, d), eq. 14
        z = self.fc(shift).float()  # (M, B, 2) soft | (M, B, 1) hard
        if self.kind == "soft":
            s = soft_assign(z, self.lam)  # (M, B, 2), eq. 18
            keep = s[..., 0]  # (M, B)
            penalty = soft_penalty(s)  # eq. 19
        else:
            keep = hard_concrete(z, self.beta, self.gamma, self.zeta, self.training).squeeze(-1)  # (M, B)
            penalty = z.new_zeros(())
        if drop is not None:
            others = torch.arange(len(self.modalities), device=keep.device) != self.modalities.index(drop)  # (M,)
            keep = keep * others.unsqueeze(1)
        keep_x = keep.unsqueeze(-1).to(x.dtype)  # (M, B, 1)
        x2 = keep_x * x + (1.0 - keep_x) * self.baseline.unsqueeze(1).to(x.dtype)  # (M, B, d), eq. 16 / 20
        return (
            {m: x2[i] for i, m in enumerate(self.modalities)},
            {m: keep[i] for i, m in enumerate(self.modalities)},
            penalty,
        )
