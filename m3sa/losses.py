"""Losses of M3SA (paper section 3.3 and 3.4.1).

Per-sample unimodal losses l_m = |y_m - y| (eq. 5) are stacked as an (M, B) tensor, M >= 2
modalities in the model's order. The modulation weights (eq. 11-12) generalise to any M:

    alpha = M / sum_k 1 / (l_k + eps)        (harmonic mean, eps keeps 1/l finite)
    w_m   = alpha * prod_{k != m} l_k
    l_m2  = w_m * l_m                        (eq. 13), w_m without gradient

Because w_m carries no gradient, l_m2 only reaches the parameters l_m depends on: F_m and
the shared head C.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

from m3sa.config import ModelConfig


def unimodal_losses(unimodal: dict[str, Tensor], label: Tensor, modalities: tuple[str, ...] | None = None) -> Tensor:
    """Stack l_m = |y_m - y| (eq. 5) into an (M, B) tensor, in ``modalities`` order (default: dict order)."""
    names = tuple(unimodal) if modalities is None else modalities
    label = label.to(torch.float32)
    return torch.stack([(unimodal[m].to(torch.float32) - label).abs() for m in names])  # (M, B)


def modulation_weights(losses: Tensor, eps: float = 1e-6) -> Tensor:
    """Modulation weights w (eq. 11-12) for per-sample losses of shape (M, B); no gradient.

    Zero losses give finite weights: the harmonic mean uses 1 / (l + eps) and the products
    are of the raw losses.
    """
    if losses.dim() != 2 or losses.shape[0] < 2:
        raise ValueError(f"modulation_weights needs losses of shape (M, B) with M >= 2, got {tuple(losses.shape)}")
    with torch.no_grad():
        l = losses.detach()
        n = l.shape[0]
        alpha = n / (1.0 / (l + eps)).sum(dim=0)  # (B,)
        idx = torch.arange(n, device=l.device)
        others = torch.stack([l[idx != m].prod(dim=0) for m in range(n)])  # (M, B)
        return alpha.unsqueeze(0) * others  # (M, B)


def modulated_loss(
    losses: Tensor,
    norm: Literal["none", "batch_mean"] = "none",
    eps: float = 1e-6,
    reduction: Literal["sum", "none"] = "sum",
    batch_mean: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Batch-averaged modulated losses l_m2 = w_m * l_m (eq. 13), weights detached.

    norm: ``none`` is the paper's form; ``batch_mean`` divides each modality's weights by
        their batch mean (so unimodal updates keep their size as the losses shrink).
    reduction: ``none`` returns the (M,) per-modality losses, ``sum`` their sum (the
        unimodal phase's objective).
    batch_mean: maps the (M, B) weights to their (M,) mean over the whole batch; the default
        is the local mean, a distributed run passes the mean over every process's share.
    """
    w = modulation_weights(losses, eps)  # (M, B)
    if norm == "batch_mean":
        mean = w.mean(dim=1) if batch_mean is None else batch_mean(w)  # (M,)
        w = w / (mean.unsqueeze(1) + eps)
    elif norm != "none":
        raise ValueError(f"unknown modulation norm {norm!r}; use 'none' or 'batch_mean'")
    per_modality = (w * losses).mean(dim=1)  # (M,)
    return per_modality.sum() if reduction == "sum" else per_modality


def unimodal_objective(losses: Tensor, cfg: ModelConfig,
                       batch_mean: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Loss of the unimodal phase: modulated (model.modulation) or the plain sum of mean l_m (W/O ML).

    ``batch_mean``: as in :func:`modulated_loss`.
    """
    if cfg.modulation:
        return modulated_loss(losses, cfg.modulation_norm, cfg.modulation_eps, batch_mean=batch_mean)
    return losses.mean(dim=1).sum()


def soft_penalty(s: Tensor) -> Tensor:
    """Soft-filter penalty l_p = 1 - (s_1 - s_0)^2 (eq. 19), averaged; ``s`` has shape (..., 2)."""
    return (1.0 - (s[..., 1] - s[..., 0]) ** 2).mean()


def multimodal_loss(pred: Tensor, label: Tensor) -> Tensor:
    """l_M = |y - y_M| (eq. 9), averaged over the batch (MAE)."""
    return (pred.to(torch.float32) - label.to(torch.float32)).abs().mean()
