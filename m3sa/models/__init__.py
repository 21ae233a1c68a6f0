"""Models: M3SA and the baselines, behind one builder.

:data:`REGISTRY` maps ``model.name`` to its builder as ``"module:function"`` (imported on
use); a builder has the signature ``(cfg: ModelConfig, dims, modalities) -> BaseModel``.
Adding a system is one module plus one line here.
"""

from __future__ import annotations

import importlib
from typing import Callable

from m3sa.config import ModelConfig
from m3sa.errors import ModelError
from m3sa.models.base import BaseModel, ModelOutput
from m3sa.models.text import load_encoder, load_text_encoder, load_tokenizer

REGISTRY: dict[str, str] = {
    "m3sa": "m3sa.models.m3sa:build",
    "late_fusion": "m3sa.models.late_fusion:build_late_fusion",
    "text_only": "m3sa.models.late_fusion:build_text_only",
    "ef_lstm": "m3sa.models.ef_lstm:build",
    "lf_lstm": "m3sa.models.lf_lstm:build",
    "tfn": "m3sa.models.tfn:build",
    "lmf": "m3sa.models.lmf:build",
    "mult": "m3sa.models.mult:build",
    "mag_bert": "m3sa.models.mag_bert:build",
}

Builder = Callable[[ModelConfig, dict[str, int], tuple[str, ...]], BaseModel]


def get_builder(name: str) -> Builder:
    """The builder registered for ``model.name = name``."""
    if name not in REGISTRY:
        raise ModelError(f"model.name = {name!r} is not implemented; available: {', '.join(sorted(REGISTRY))}")
    module, function = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), function)


def build_model(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...]) -> BaseModel:
    """Build ``cfg.name`` for data with ``modalities`` and feature widths ``dims`` (meta.json)."""
    return get_builder(cfg.name)(cfg, dict(dims), tuple(modalities))


__all__ = [
    "REGISTRY",
    "BaseModel",
    "ModelOutput",
    "build_model",
    "get_builder",
    "load_encoder",
    "load_text_encoder",
    "load_tokenizer",
]
