"""Modality filter module, MFM (paper section 3.4, eq. 14-21).

    x_cat    = [x_1; ...; x_M]                                  (B, M*d)
    x'       = Linear(M*d -> d)(x_cat)                          eq. 14
    shift_m  = ReLU(x' - x_m)
    s_m      = Filter(shift_m)                                  eq. 15
    x_m2     = s_m * x_m + (1 - s_m) * b_m                      eq. 16 / 20

The filter network FC (a ReLU MLP) is one network shared by all modalities with
``filter_shared`` (the paper's recipe: eq. 15 and 17 index no parameters by m), or one network
per modality (the default recipe). Its last layer starts with small weights
(``filter_init_std``) and a bias that makes the initial share kept ``filter_init_keep``
(0.5, logits near 0, in the paper's recipe; 0.9, gates open, in the default one). A small
``filter_init_std`` does not keep the soft gate away from saturation at lambda = 1000: the
ReLU inputs of the last layer are >= 0, so lambda * z has a common component that reaches
+-4 at step 0 (docs/filter.md). Logits, softmax and gates are computed in float32, also
under bf16 autocast (lambda * z in bf16 quantises the soft gate).

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

Expected L0 (Louizos et al. 2017, eq. 12 there; the default recipe's sparsity prior): the
mean over modalities and samples of the probability that a gate keeps x_m (soft: s_m[0];
hard: P(s_m = 1), :func:`hard_keep_probability`), weighted by ``train.sparsity_weight`` in
the multimodal loss, so that closing a modality the model does not need is rewarded.

Baseline embeddings b_m: learned (zero-initialised) with ``baseline_embedding``, else a
zero buffer (W/O BE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _hard_threshold_logit(beta: float, gamma: float, zeta: float) -> float:
    """beta * logit(t), t = (0.5 - gamma) / (zeta - gamma): P(s = 1) = sigmoid(z - this)."""
    t = (0.5 - gamma) / (zeta - gamma)
    return beta * math.log(t / (1.0 - t))


def hard_keep_probability(z: float, beta: float, gamma: float, zeta: float) -> float:
    """P(s = 1) of the Hard Concrete gate for logit z while training.

    s_bar > 0.5  <=>  s_hat > t := (0.5 - gamma) / (zeta - gamma)
                 <=>  logit(u) > beta * logit(t) - z
    so P = sigmoid(z - beta * logit(t)); with gamma = -0.1, zeta = 1.1, t = 0.5 and P = sigmoid(z).
    """
    return 1.0 / (1.0 + math.exp(-(z - _hard_threshold_logit(beta, gamma, zeta))))


def initial_bias(kind: str, keep: float, lam: float, beta: float, gamma: float, zeta: float) -> list[float]:
    """Last-layer bias that makes a zero-input gate keep the share ``keep`` at the start.

    soft: [logit(keep) / lambda, 0], so softmax(lambda * z)[0] = keep;
    hard: [logit(keep) + beta * logit(t)], so P(s = 1) = keep while training.
    """
    logit = math.log(keep / (1.0 - keep))
    if kind == "soft":
        return [logit / lam if lam > 0 else 0.0, 0.0]
    return [logit + _hard_threshold_logit(beta, gamma, zeta)]


class FilterNetwork(nn.Module):
    """FC of eq. 17 / 21 (d -> hidden -> ReLU -> out), shared or one per modality; float32 logits."""

    def __init__(self, d: int, hidden: int, out: int, n: int, shared: bool, init_std: float,
                 init_bias: list[float]) -> None:
        super().__init__()
        self.shared = shared
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, out)) for _ in range(1 if shared else n))
        for net in self.nets:
            nn.init.normal_(net[-1].weight, std=init_std)
            with torch.no_grad():
                net[-1].bias.copy_(torch.tensor(init_bias))

    def forward(self, shift: Tensor) -> Tensor:
        """shift: (M, B, d) -> logits z: (M, B, out), float32 (autocast off)."""
        with torch.autocast(device_type=shift.device.type, enabled=False):
            shift = shift.float()
            if self.shared:
                return self.nets[0](shift)
            return torch.stack([net(x) for net, x in zip(self.nets, shift)])


@dataclass
class FilterOutput:
    """x2: modality -> x_m2 (B, d); keep: modality -> s_m (B,); penalty: l_p (eq. 19, 0 for
    hard); expected_l0: mean probability that a gate keeps its modality (sparsity prior)."""

    x2: dict[str, Tensor]
    keep: dict[str, Tensor]
    penalty: Tensor
    expected_l0: Tensor


class ModalityFilter(nn.Module):
    """MFM over ``modalities`` (M >= 2): returns :class:`FilterOutput`."""

    def __init__(self, cfg: ModelConfig, modalities: tuple[str, ...]) -> None:
        super().__init__()
        if cfg.filter not in ("soft", "hard"):
            raise ValueError(f"ModalityFilter needs filter soft or hard, got {cfg.filter!r}")
        self.kind = cfg.filter
        self.modalities = tuple(modalities)
        d, n = cfg.dim, len(self.modalities)
        self.mix = nn.Linear(n * d, d)  # eq. 14
        out = 2 if self.kind == "soft" else 1
        self.soft_lambda = cfg.soft_lambda
        self.warmup = cfg.soft_lambda_warmup_epochs
        # the gates keep filter_init_keep at the first step, at lambda's initial value
        bias = initial_bias(self.kind, cfg.filter_init_keep, self.lambda_at(0), cfg.hard_beta, cfg.hard_gamma,
                            cfg.hard_zeta)
        self.fc = FilterNetwork(d, cfg.filter_hidden, out, n, cfg.filter_shared, cfg.filter_init_std, bias)
        if cfg.baseline_embedding:
            self.baseline = nn.Parameter(torch.zeros(n, d))
        else:
            self.register_buffer("baseline", torch.zeros(n, d), persistent=False)
        self.register_buffer("lam", torch.tensor(self.lambda_at(0)))
        self.beta, self.gamma, self.zeta = cfg.hard_beta, cfg.hard_gamma, cfg.hard_zeta
        self.threshold = _hard_threshold_logit(self.beta, self.gamma, self.zeta)

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

    def forward(self, xs: dict[str, Tensor], drop: str | None = None) -> FilterOutput:
        """xs: modality -> (B, d). ``drop``: that modality's x_m is replaced by b_m before the
        filter (no information of it reaches the output) and its x_m2 is b_m (s_m = 0)."""
        ref = next(iter(xs.values()))  # (B, d)
        bsz = ref.shape[0]
        x = torch.stack(
            [self.baseline_of(m).expand(bsz, -1).to(ref.dtype) if m == drop else xs[m] for m in self.modalities]
        )  # (M, B, d)
        x_cat = x.permute(1, 0, 2).reshape(bsz, -1)  # (B, M*d)
        shift = F.relu(self.mix(x_cat).unsqueeze(0) - x)  # (M, B, d), eq. 14
        z = self.fc(shift)  # (M, B, 2) soft | (M, B, 1) hard, float32
        if self.kind == "soft":
            s = soft_assign(z, self.lam)  # (M, B, 2), eq. 18
            keep = s[..., 0]  # (M, B)
            penalty = soft_penalty(s)  # eq. 19
            keep_prob = keep
        else:
            keep = hard_concrete(z, self.beta, self.gamma, self.zeta, self.training).squeeze(-1)  # (M, B)
            penalty = z.new_zeros(())
            keep_prob = torch.sigmoid(z.squeeze(-1) - self.threshold)  # P(s_m = 1)
        if drop is not None:
            others = torch.arange(len(self.modalities), device=keep.device) != self.modalities.index(drop)  # (M,)
            keep = keep * others.unsqueeze(1)
        keep_x = keep.unsqueeze(-1).to(x.dtype)  # (M, B, 1)
        x2 = keep_x * x + (1.0 - keep_x) * self.baseline.unsqueeze(1).to(x.dtype)  # (M, B, d), eq. 16 / 20
        present = [i for i, m in enumerate(self.modalities) if m != drop]
        return FilterOutput(
            x2={m: x2[i] for i, m in enumerate(self.modalities)},
            keep={m: keep[i] for i, m in enumerate(self.modalities)},
            penalty=penalty,
            expected_l0=keep_prob[present].mean(),
        )
