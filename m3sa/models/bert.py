"""A BERT encoder (Devlin et al. 2019) in plain PyTorch: the text network's default backbone.

It computes exactly what ``transformers.BertModel`` (SDPA attention, no pooler) computes, op
for op and in the same order, dropout draws included, and its parameters carry the same
names, so checkpoints written with either load into the other. It exists for memory:
importing transformers' model code pulls in ``torch._dynamo``, sympy and scipy (about
120 MiB resident), which a training run does not otherwise need. Encoders this module does
not cover (other architectures, relative positions, decoders) keep using transformers; see
:func:`m3sa.models.text.load_encoder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.errors import ModelError

__all__ = ["Bert", "BertConfig", "BertOutput", "read_config", "load_bert"]


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder: the fields of a Hugging Face ``config.json`` it uses."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ModelError(f"text encoder config: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")


class BertOutput(NamedTuple):
    """What the language network reads (named like transformers' output)."""

    last_hidden_state: Tensor  # (B, T, hidden)


def read_config(folder: Path) -> BertConfig | None:
    """The :class:`BertConfig` of the model in ``folder``, or None when this module cannot
    compute it exactly (not a BERT encoder, or options it does not implement)."""
    try:
        raw: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    plain = (raw.get("model_type") == "bert" and raw.get("hidden_act", "gelu") == "gelu"
             and raw.get("position_embedding_type", "absolute") == "absolute"
             and not raw.get("is_decoder", False) and not raw.get("add_cross_attention", False)
             and not raw.get("chunk_size_feed_forward", 0)
             and raw.get("attn_implementation", raw.get("_attn_implementation")) in (None, "sdpa")
             and raw.get("dtype", raw.get("torch_dtype")) in (None, "float32"))
    if not plain or "vocab_size" not in raw:
        return None
    return BertConfig(**{f.name: raw[f.name] for f in fields(BertConfig) if raw.get(f.name) is not None})


class Embeddings(nn.Module):
    """Word + token type + absolute position embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1)),
                             persistent=False)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None) -> Tensor:
        position_ids = self.position_ids[:, : input_ids.shape[1]]  # (1, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (SDPA; attention dropout inside it)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.head_size = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        shape = (*x.shape[:-1], -1, self.head_size)  # (B, T, heads, head_size)
        q = self.query(x).view(shape).transpose(1, 2)  # (B, heads, T, head_size)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0,
                                             scale=self.head_size**-0.5, is_causal=False)
        return out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()  # (B, T, H)


class AddNorm(nn.Module):
    """dense -> dropout -> LayerNorm(. + residual): the output block of both sub-layers."""

    def __init__(self, d_in: int, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AddNorm(cfg.hidden_size, cfg)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    """One post-norm Transformer layer: attention, then the GELU feed-forward block."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = AddNorm(cfg.intermediate_size, cfg)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))


class Bert(nn.Module):
    """The BERT encoder: ``bert(input_ids, attention_mask, token_type_ids).last_hidden_state``."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> BertOutput:
        """``attention_mask``: (B, T) with 1/True at real tokens, or a ready (B, 1, T, T) bool mask."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        mask = attention_bias(attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return BertOutput(last_hidden_state=x)

    @staticmethod
    def from_state(cfg: BertConfig, state: Iterable[tuple[str, Tensor]]) -> Bert:
        """The network holding the weights ``state`` yields (name, tensor), one at a time, each
        copied into place (so a file's tensors need not all be in memory at once). Names may
        carry a ``bert.`` prefix or the old ``LayerNorm.gamma/beta``; others are skipped.
        Leaves the global random generator as it was. ModelError for missing or misshaped weights."""
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation draws
            model = Bert(cfg)
        wanted = model.state_dict()  # views of the parameters
        filled: set[str] = set()
        for key, value in state:
            key = key.removeprefix("bert.").replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
            if key not in wanted:
                continue
            if value.shape != wanted[key].shape:
                raise ModelError(f"weight {key} has shape {tuple(value.shape)}, the config implies {tuple(wanted[key].shape)}")
            with torch.no_grad():
                wanted[key].copy_(value)
            filled.add(key)
        missing = sorted(set(wanted) - filled)
        if missing:
            raise ModelError(f"{len(missing)} BERT weights are missing (first: {missing[0]})")
        return model


def attention_bias(mask: Tensor | None) -> Tensor | None:
    """SDPA's mask for a padding mask, as transformers builds it: None when nothing is padded
    (SDPA's unmasked kernel), else (B, 1, T, T) bool. A 4-D mask is used as given; deciding on
    a 2-D one reads it on the host (callers on an accelerator pass the 4-D form)."""
    if mask is None or mask.dim() == 4:
        return mask
    mask = mask.bool()
    if bool(mask.all()):
        return None
    return square_mask(mask).contiguous()


def square_mask(mask: Tensor) -> Tensor:
    """(B, T) bool padding mask -> (B, 1, T, T) bool: query t may attend key s where mask[b, s]
    (a view, no copy)."""
    return mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)


def load_bert(folder: Path, cfg: BertConfig) -> Bert:
    """A :class:`Bert` with the weights of ``folder`` (``model.safetensors`` or
    ``pytorch_model.bin``, read without running code). ModelError for a bad weights file."""
    try:
        return Bert.from_state(cfg, _read_weights(folder))
    except ModelError as err:
        raise ModelError(f"model.text_encoder: {folder}: {err}") from None


def _read_weights(folder: Path) -> Iterator[tuple[str, Tensor]]:
    """The (name, tensor) pairs of ``folder``'s weights file, one tensor at a time."""
    if (folder / "model.safetensors").is_file():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelError(f"model.safetensors is not readable: {err}") from None
        return
    if (folder / "pytorch_model.bin").is_file():
        try:
            state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise ModelError(f"pytorch_model.bin is not a weights file: {type(err).__name__}") from None
        if not (isinstance(state, dict) and all(isinstance(v, Tensor) for v in state.values())):
            raise ModelError("pytorch_model.bin holds no tensor dictionary")
        yield from state.items()
        return
    raise ModelError("it has no model.safetensors or pytorch_model.bin")
