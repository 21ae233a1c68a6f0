"""The BERT-family text encoder network named by ``model.text_encoder``.

The accepted specs (``packaged:all-MiniLM-L6-v2``, a local folder, a cached hub id,
``random:tiny`` / ``random:bert-base``) are resolved by :mod:`m3sa.tokenization`, which also
loads their tokenizers. A plain BERT encoder (``model_type`` bert, absolute positions, GELU)
is built by :mod:`m3sa.models.bert` without importing transformers' model code; any other
encoder is a ``transformers`` model. A ``random:`` encoder has the weights of a
``transformers.BertModel`` built with a fixed seed (without touching the global random state),
so the same spec always gives the same weights. Nothing is cached between calls.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from m3sa.errors import ModelError
from m3sa.models.bert import Bert, BertConfig, load_bert, read_config
from m3sa.tokenization import RANDOM_SEED, RANDOM_SHAPES, load_tokenizer, not_cached, resolve_spec

__all__ = ["RANDOM_SEED", "RANDOM_SHAPES", "load_encoder", "load_text_encoder", "load_tokenizer"]

log = logging.getLogger(__name__)


def load_encoder(spec: str) -> torch.nn.Module:
    """The encoder network named by ``spec``, pooler removed: a :class:`~m3sa.models.bert.Bert`
    for a plain BERT, else a ``transformers.PreTrainedModel``."""
    kind, where = resolve_spec(spec)
    if kind == "path" and (cfg := read_config(where)) is not None:
        bert = load_bert(where, cfg)
        log.info("text encoder %s: BERT, hidden %d", spec, cfg.hidden_size)
        return bert
    if kind == "random":
        return _random_bert(where)
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError) as err:
        if kind == "hub":
            raise not_cached(spec, err) from None
        raise ModelError(f"model.text_encoder: cannot load a model from {where}: {err}") from None
    # The pooler is unused (eq. 22 reads the token sequence): drop it so that every
    # parameter receives a gradient.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    if not hasattr(model.config, "hidden_size"):
        raise ModelError(f"model.text_encoder: '{spec}' has no hidden_size in its config; use a BERT-family encoder")
    log.info("text encoder %s: %s, hidden %d", spec, type(model).__name__, model.config.hidden_size)
    return model


def _random_bert(shape: str) -> Bert:
    """``random:<shape>``: the weights a seeded ``transformers.BertModel`` of that shape starts from."""
    from transformers import BertConfig as HFConfig
    from transformers import BertModel

    vocab = load_tokenizer("packaged:all-MiniLM-L6-v2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        reference = BertModel(HFConfig(vocab_size=len(vocab), **RANDOM_SHAPES[shape]), add_pooling_layer=False)
    bert = Bert.from_state(BertConfig(vocab_size=len(vocab), **RANDOM_SHAPES[shape]), reference.state_dict().items())
    log.info("text encoder random:%s: BERT, hidden %d", shape, bert.config.hidden_size)
    return bert


def load_text_encoder(spec: str) -> tuple[Any, torch.nn.Module]:
    """``(tokenizer, model)`` for ``model.text_encoder = spec`` (see the module docstring)."""
    return load_tokenizer(spec), load_encoder(spec)
