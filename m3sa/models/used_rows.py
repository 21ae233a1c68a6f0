"""Word embeddings whose trainable part is the rows the training split uses.

A token that never occurs in the training data never receives a gradient, so with no weight
decay its row of the table never moves and its Adam moments stay exactly zero (a zero
gradient gives a zero update). :class:`UsedRowsEmbedding` holds those rows as a constant
table and only the used ones as a parameter: the same values, while the gradient and both
optimizers' moments cover the used rows only. With MiniLM (30,522 rows of 384) the word
table is half of the encoder's weights, and a training split uses a few thousand rows of it.

Checkpoints are unchanged: the module's state dict is the full table under ``weight``, as
``nn.Embedding`` writes it, so ``best.pt`` loads into a plain model for prediction.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UsedRowsEmbedding", "restrict_word_embeddings", "fit_row_moments"]


class UsedRowsEmbedding(nn.Module):
    """An embedding table whose rows ``used`` are the parameter ``rows``; the others are constant."""

    def __init__(self, weight: Tensor, used: Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        used = torch.unique(used.to(device=weight.device, dtype=torch.long))  # sorted
        if padding_idx is not None:  # nn.Embedding never trains the padding row
            used = used[used != padding_idx]
        slot = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        slot[used] = torch.arange(len(used), device=weight.device)
        self.padding_idx = padding_idx
        self.register_buffer("table", weight.detach(), persistent=False)  # (V, H): every row's start value
        self.register_buffer("used", used, persistent=False)  # (n,)
        self.register_buffer("slot", slot, persistent=False)  # (V,): row of `rows`, or -1
        self.rows = nn.Parameter(weight.detach()[used].clone())  # (n, H)

    @property
    def weight(self) -> Tensor:
        """The full (V, H) table as it stands: the trained rows are written into ``table`` (whose
        used rows the forward never reads) and ``table`` itself is returned, no copy, like a
        parameter in a state dict."""
        with torch.no_grad():
            self.table[self.used] = self.rows
        return self.table

    def forward(self, ids: Tensor) -> Tensor:
        slot = self.slot[ids]  # (...,)
        trained = F.embedding(slot.clamp(min=0), self.rows)  # (..., H)
        return torch.where((slot >= 0).unsqueeze(-1), trained, F.embedding(ids, self.table))

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        value = state_dict[key]
        if value.shape != self.table.shape:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(value.shape)}, "
                              f"the model has {tuple(self.table.shape)}")
            return
        with torch.no_grad():
            self.table.copy_(value)
            self.rows.copy_(self.table[self.used])
        if strict:
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k != key
                                   and "." not in k[len(prefix):])


def restrict_word_embeddings(model: nn.Module, used: Tensor) -> int:
    """Replace the word table of every :class:`~m3sa.models.bert.Bert` in ``model`` by a
    :class:`UsedRowsEmbedding` over token ids ``used``; returns how many rows stay trainable.

    Exact only where nothing but a gradient moves a row: call it with the ids of every sample
    the optimizers will see and with weight decay 0 (L2 or decoupled decay moves every row).
    """
    from m3sa.models.bert import Bert

    kept = 0
    for bert in [m for m in model.modules() if isinstance(m, Bert)]:
        emb = bert.embeddings.word_embeddings
        if isinstance(emb, nn.Embedding):
            bert.embeddings.word_embeddings = UsedRowsEmbedding(emb.weight, used, emb.padding_idx)
            kept += len(bert.embeddings.word_embeddings.used)
    return kept


def fit_row_moments(saved: dict[str, Any], params: list[nn.Parameter], model: nn.Module) -> dict[str, Any]:
    """An optimizer state dict written for a full word table, fitted to ``UsedRowsEmbedding``:
    each per-row tensor keeps the used rows (the others' moments are zero: exact)."""
    tables = {id(m.rows): m for m in model.modules() if isinstance(m, UsedRowsEmbedding)}
    state = dict(saved.get("state", {}))
    for index, entry in state.items():
        module = tables.get(id(params[index])) if isinstance(index, int) and index < len(params) else None
        if module is None:
            continue
        state[index] = {k: v[module.used.to(v.device)] if isinstance(v, Tensor) and v.dim() and v.shape[0] == module.table.shape[0]
                        and v.shape != module.rows.shape else v for k, v in entry.items()}
    return {**saved, "state": state}
