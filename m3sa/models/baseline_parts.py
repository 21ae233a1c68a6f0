"""Building blocks shared by the comparison systems of the paper's Table 1 (docs/baselines.md).

Text features. EF-LSTM, LF-LSTM, TFN, LMF and MulT read the language modality the way the
MMSA framework feeds them: the WordPiece-level outputs (last hidden states) of a frozen
BERT-family encoder (:class:`FrozenText`). Their original papers used GloVe vectors; MMSA
replaced those by BERT features, and this project uses the configured ``model.text_encoder``
so that every system sees the same text representation. Only MAG-BERT fine-tunes the
encoder (its paper's point).

Word-level inputs. Acoustic and visual rows are one per word (``data.align=words``).
Token-level systems (EF-LSTM, MAG-BERT) expand each word's row to its WordPieces through
``batch["word_index"]`` (:func:`expand_to_tokens`); [CLS], [SEP] and padding get zeros.

Dropping a modality (``forward(batch, drop=m)``, the missing-modality evaluation): these
systems have no baseline embedding, so the dropped modality's features are replaced by
zeros (for standardised acoustic/visual features: the train mean).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch, BaseModel, ModelOutput, check_inputs
from m3sa.models.encoders import last_valid_step, sinusoidal_positions
from m3sa.models.text import load_encoder

Sequences = dict[str, tuple[Tensor, Tensor]]  # modality -> ((B, T, d_m) features, (B, T) bool mask)


def expand_to_tokens(rows: Tensor, row_mask: Tensor, word_index: Tensor) -> Tensor:
    """Word-level rows expanded to WordPieces: out[b, t] = rows[b, word_index[b, t]].

    rows: (B, T_w, d); row_mask: (B, T_w) bool; word_index: (B, T_tok) long, -1 for
    [CLS]/[SEP]/padding. Positions whose word index is -1, beyond the rows or on a padded
    row get zeros. Returns (B, T_tok, d).
    """
    b, t_tok = word_index.shape
    if rows.shape[1] == 0:
        return rows.new_zeros(b, t_tok, rows.shape[2])
    idx = word_index.clamp(0, rows.shape[1] - 1)  # (B, T_tok)
    picked = rows.gather(1, idx.unsqueeze(-1).expand(-1, -1, rows.shape[2]))  # (B, T_tok, d)
    valid = (word_index >= 0) & (word_index < rows.shape[1]) & row_mask.bool().gather(1, idx)  # (B, T_tok)
    return picked * valid.unsqueeze(-1).to(picked.dtype)


def masked_mean(seq: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid steps: (B, T, d), (B, T) -> (B, d); zeros for a row with none."""
    w = mask.to(seq.dtype).unsqueeze(-1)  # (B, T, 1)
    return (seq * w).sum(1) / w.sum(1).clamp_min(1.0)


def attend_mask(mask: Tensor) -> Tensor:
    """Key mask safe for attention: a row without any valid step may attend to its first
    (zero) step, so that softmax does not produce NaN. (B, T) bool -> (B, T) bool."""
    first = torch.zeros_like(mask)
    if mask.shape[1]:
        first[:, 0] = True
    return mask | (first & ~mask.any(dim=1, keepdim=True))


class FrozenText(nn.Module):
    """WordPiece-level outputs of a frozen BERT-family encoder (MMSA's "BERT features").

    The encoder's parameters do not require gradients and it always runs in eval mode (no
    dropout), so its outputs are fixed features, as precomputed features are in MMSA.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.bert = encoder
        for p in self.bert.parameters():
            p.requires_grad_(False)
        self.bert.eval()

    @property
    def width(self) -> int:
        return int(self.bert.config.hidden_size)

    def train(self, mode: bool = True) -> "FrozenText":
        super().train(mode)
        self.bert.eval()
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(B, T_tok, H) last hidden states and the (B, T_tok) bool attention mask."""
        mask = batch["attention_mask"].bool()
        kwargs = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        with torch.no_grad():
            hidden = self.bert(input_ids=batch["input_ids"], attention_mask=mask.long(), **kwargs).last_hidden_state
        return hidden, mask


class LastStepLSTM(nn.Module):
    """LSTM over a right-padded sequence; the output at each row's last valid step.

    For a unidirectional LSTM and right padding this equals the final hidden state of the
    packed sequence (the usual ``h_n[-1]``), without packing. Padded steps are zeroed first.
    """

    def __init__(self, d_in: int, hidden: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)

    def forward(self, seq: Tensor, mask: Tensor) -> Tensor:
        if seq.shape[1] == 0:
            return seq.new_zeros(seq.shape[0], self.lstm.hidden_size)
        out, _ = self.lstm(seq * mask.unsqueeze(-1).to(seq.dtype))  # (B, T, hidden)
        return last_valid_step(out, mask)  # (B, hidden)


class TextSubNet(nn.Module):
    """TFN/LMF text subnetwork: LSTM -> last valid step -> dropout -> Linear(hidden -> out)."""

    def __init__(self, d_in: int, hidden: int, out: int, dropout: float) -> None:
        super().__init__()
        self.rnn = LastStepLSTM(d_in, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, out)

    def forward(self, seq: Tensor, mask: Tensor) -> Tensor:
        return self.linear(self.dropout(self.rnn(seq, mask)))  # (B, out)


class SubNet(nn.Module):
    """TFN/LMF acoustic/visual subnetwork on the time-averaged features:
    dropout -> 3 x (Linear, ReLU), widths d_in -> hidden -> hidden -> hidden.

    The original's BatchNorm on the input is left out: the features are already
    standardised with train statistics (and BatchNorm fails on a batch of one).
    """

    def __init__(self, d_in: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(d_in, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )

    def forward(self, seq: Tensor, mask: Tensor) -> Tensor:
        return self.net(masked_mean(seq, mask))  # (B, T, d_in) -> (B, d_in) -> (B, hidden)


class CrossModalLayer(nn.Module):
    """One pre-norm Transformer layer whose queries come from one sequence and keys/values
    from another (MulT's cross-modal attention, Tsai et al. 2019, eq. 4-6); with ``kv``
    None it is ordinary self-attention. One LayerNorm normalises queries and keys (as in
    MulT's code); feed-forward width 4d."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv: Tensor, kv_mask: Tensor) -> Tensor:
        q = self.norm_attn(x)  # (B, T_q, d)
        k = self.norm_attn(kv)  # (B, T_k, d)
        a, _ = self.attn(q, k, k, key_padding_mask=~attend_mask(kv_mask), need_weights=False)  # (B, T_q, d)
        x = x + self.dropout(a)
        return x + self.dropout(self.ff(self.norm_ff(x)))


class CrossModalTransformer(nn.Module):
    """MulT's Transformer: scaled embeddings + sinusoidal positions (queries and keys),
    ``layers`` :class:`CrossModalLayer` and a final LayerNorm. ``kv=None``: self-attention."""

    def __init__(self, dim: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(CrossModalLayer(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: Tensor) -> Tensor:
        return self.dropout(self.scale * x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype))

    def forward(self, x: Tensor, x_mask: Tensor, kv: Tensor | None = None, kv_mask: Tensor | None = None) -> Tensor:
        self_attn = kv is None
        x = self._embed(x)  # (B, T_q, d)
        kv_e = None if self_attn else self._embed(kv)  # (B, T_k, d)
        for layer in self.layers:
            x = layer(x, x if self_attn else kv_e, x_mask if self_attn else kv_mask)
        return self.norm(x)


class Baseline(BaseModel):
    """Common part of the Table 1 systems: single-phase training, no unimodal outputs, no
    filter, zero penalty; the language modality read through :class:`FrozenText`.

    Subclasses implement :meth:`predict` from the per-modality sequences.
    """

    two_phase = False

    def __init__(self, cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...],
                 minimum: int = 2) -> None:
        super().__init__(tuple(modalities))
        check_inputs(dims, self.modalities, minimum=minimum)
        self.cfg = cfg
        self.text = FrozenText(load_encoder(cfg.text_encoder)) if "language" in self.modalities else None
        self.widths = {m: (self.text.width if m == "language" and self.text is not None else int(dims.get(m, 0)))
                       for m in self.modalities}

    def sequences(self, batch: Batch, drop: str | None = None) -> Sequences:
        """Each modality's (B, T_m, d_m) features and (B, T_m) bool mask; zeros for ``drop``."""
        out: Sequences = {}
        for m in self.modalities:
            if m == "language":
                assert self.text is not None
                seq, mask = self.text(batch)  # (B, T_tok, H)
            else:
                seq, mask = batch[m], batch[f"{m}_mask"].bool()  # (B, T_m, d_m)
            out[m] = (torch.zeros_like(seq) if m == drop else seq, mask)
        return out

    def predict(self, seqs: Sequences, batch: Batch) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:
        self.check_drop(drop)
        pred = self.predict(self.sequences(batch, drop), batch).float()  # (B,)
        return ModelOutput(pred=pred, unimodal={}, filter_values={}, penalty=pred.new_zeros(()))

    def text_parameters(self) -> list[nn.Parameter]:
        """The frozen encoder's parameters (they take no optimiser step)."""
        return list(self.text.parameters()) if self.text is not None else []
