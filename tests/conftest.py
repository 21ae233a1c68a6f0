"""Shared pytest fixtures."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
import torch

from m3sa.config import MODALITIES, ModelConfig

FAKE_DIMS = {"acoustic": 74, "visual": 47}

# A small M3SA on the random:tiny text encoder: builds and runs in milliseconds.
TINY_MODEL = ModelConfig(
    text_encoder="random:tiny",
    dim=16,
    transformer_heads=2,
    head_hidden=16,
    filter_hidden=8,
    dropout=0.0,
)


def fake_batch(
    batch_size: int = 4,
    modalities: tuple[str, ...] = MODALITIES,
    dims: dict[str, int] | None = None,
    max_words: int = 6,
    lengths: list[int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random batch shaped as docs/architecture.md's "Batch" (word-level alignment).

    Sample i has ``lengths[i]`` words (random in [1, max_words] by default): WordPieces
    [CLS] w_1 .. w_n [SEP] (one piece per word) and n acoustic/visual rows; the rest is padding.
    """
    dims = dict(FAKE_DIMS if dims is None else dims)
    g = torch.Generator().manual_seed(seed)
    if lengths is None:
        lengths = torch.randint(1, max_words + 1, (batch_size,), generator=g).tolist()
    assert len(lengths) == batch_size
    n_words = max(lengths)
    n_tok = n_words + 2
    input_ids = torch.zeros(batch_size, n_tok, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, n_tok, dtype=torch.long)
    word_index = torch.full((batch_size, n_tok), -1, dtype=torch.long)
    for i, n in enumerate(lengths):
        input_ids[i, 0] = 101  # [CLS]
        input_ids[i, 1 : n + 1] = torch.randint(1000, 29000, (n,), generator=g)
        input_ids[i, n + 1] = 102  # [SEP]
        attention_mask[i, : n + 2] = 1
        word_index[i, 1 : n + 1] = torch.arange(n)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "word_index": word_index}
    step_mask = torch.arange(n_words).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    for m in modalities:
        if m == "language":
            continue
        feats = torch.randn(batch_size, n_words, dims[m], generator=g)  # (B, T, d_m)
        batch[m] = feats * step_mask.unsqueeze(-1)
        batch[f"{m}_mask"] = step_mask.clone()
    batch["label"] = torch.rand(batch_size, generator=g) * 6 - 3
    return batch


@pytest.fixture
def make_batch() -> Callable[..., dict[str, torch.Tensor]]:
    """Factory of fake batches: ``make_batch(batch_size=4, modalities=..., lengths=..., seed=0)``."""
    return fake_batch


@pytest.fixture
def make_model_cfg() -> Callable[..., ModelConfig]:
    """Factory of tiny model configs: ``make_model_cfg(filter="hard", fusion="graph", ...)``."""

    def make(**overrides: Any) -> ModelConfig:
        return dataclasses.replace(TINY_MODEL, **overrides)

    return make


@pytest.fixture
def single_thread() -> Any:
    """Run a test on one torch thread (tiny tensors gain nothing from more, and a busy
    machine makes extra threads much slower); restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_text_encoder() -> tuple[Any, torch.nn.Module]:
    """``(tokenizer, model)`` of the random:tiny encoder (seeded, shared by the session: do not train it)."""
    from m3sa.models import load_text_encoder

    return load_text_encoder("random:tiny")


# ---------------------------------------------------------------- Prefect flows
# The flow tests' fixtures (tests/prefect_fixtures.py): one temporary Prefect API for the run
# and a toy DVC project. Importing it points PREFECT_HOME at a temp dir before Prefect loads.
from prefect_fixtures import prefect_api, toy_project, toy_template  # noqa: E402,F401
