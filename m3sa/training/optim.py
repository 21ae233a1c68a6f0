"""Optimizers and the learning-rate schedule (paper section 4.1; schedule: docs/filter.md)."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from m3sa.config import TrainConfig
from m3sa.errors import TrainingError


def unique_trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    """The trainable parameters of ``params``, each once, in first-seen order."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def build_optimizer(cfg: TrainConfig, params: Iterable[nn.Parameter], text_params: list[nn.Parameter],
                    fused: bool = False, decay: bool = True) -> torch.optim.Optimizer:
    """Adam/AdamW over ``params``: the text encoder's at ``train.lr_text``, the rest at ``train.lr``.

    Groups are formed by owning module (``text_params`` comes from ``model.text_parameters()``),
    never by position in the parameter list. ``decay=False`` leaves out ``train.weight_decay``
    (the unimodal phase's optimizer: its parameters are decayed once per batch, by the other).
    """
    text_ids = {id(p) for p in text_params}
    groups: dict[str, list[nn.Parameter]] = {"rest": [], "text": []}
    for p in unique_trainable(params):
        groups["text" if id(p) in text_ids else "rest"].append(p)
    lrs = {"rest": cfg.lr, "text": cfg.lr_text}
    param_groups = [{"params": ps, "lr": lrs[name], "base_lr": lrs[name], "name": name}
                    for name, ps in groups.items() if ps]
    if not param_groups:
        raise TrainingError("the model has no trainable parameters")
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs: dict[str, Any] = {"weight_decay": cfg.weight_decay if decay else 0.0}
    if fused:
        kwargs["fused"] = True
    return cls(param_groups, **kwargs)


def lr_factor(step: int, total: int, schedule: str, warmup_ratio: float) -> float:
    """Share of the base learning rate at 0-based ``step`` of ``total``.

    ``constant``: 1. ``linear``: linear warm-up from 1/(warm-up steps) to 1 over the first
    ``warmup_ratio`` of the steps, then linear decay to 0 at ``total`` (as commonly used to
    fine-tune BERT-family encoders).
    """
    if schedule == "constant" or total <= 0:
        return 1.0
    warm = int(round(warmup_ratio * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def set_lr(optimizers: Iterable[torch.optim.Optimizer | None], factor: float) -> None:
    """Set every param group's lr to ``factor`` times its ``base_lr``."""
    for opt in optimizers:
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor
