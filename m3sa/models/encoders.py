"""Unimodal networks F_m (paper appendix A, eq. 22-23).

Each network maps its own sequence to one d-wide embedding: the output at the last valid
(non-padding) time step. Word-level inputs need no token-level alignment: the language
network pools its last valid WordPiece ([SEP]) and the acoustic/visual networks pool their
last valid word row.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from m3sa.config import ModelConfig
from m3sa.models.base import Batch
from m3sa.models.bert import Bert, square_mask
from m3sa.models.text import load_encoder


def last_valid_step(seq: Tensor, mask: Tensor) -> Tensor:
    """Embedding at the last position where ``mask`` is True (eq. 22-23: X_{T_m}).

    seq: (B, T, d); mask: (B, T) bool. Rows without any valid step give zeros.
    Works for any padding side (the index is the largest valid position).
    """
    if seq.shape[1] == 0:
        return seq.new_zeros(seq.shape[0], seq.shape[2])
    steps = torch.arange(seq.shape[1], device=seq.device)  # (T,)
    last = (steps * mask).amax(dim=1)  # (B,)
    picked = seq.gather(1, last.view(-1, 1, 1).expand(-1, 1, seq.shape[2])).squeeze(1)  # (B, d)
    return torch.where(mask.any(dim=1, keepdim=True), picked, torch.zeros_like(picked))


class TemporalConv(nn.Module):
    """Conv1D over time, "same" padding, zeros at padded steps (eq. 22-23).

    Padded steps are zeroed before the convolution, so the output at a valid step does not
    depend on how much padding the batch carries.
    """

    def __init__(self, d_in: int, d_out: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(d_in, d_out, kernel_size=kernel, padding="same")

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x * mask.unsqueeze(-1).to(x.dtype)  # (B, T, d_in)
        return self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, d_in, T) -> (B, T, d_out)


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Sinusoidal position encodings (Vaswani et al. 2017), shape (length, dim)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table.to(dtype)


def encoder_mask(encoder: nn.Module, mask: Tensor) -> Tensor:
    """The attention mask to hand the text encoder for a (B, T) bool padding ``mask``.

    On an accelerator under SDPA attention (:class:`~m3sa.models.bert.Bert`, and transformers'
    default): the (B, 1, T, T) boolean mask built from the 2-D one, given ready-made. Built
    from the 2-D mask, it first tests ``mask.all()`` on the host to skip the mask of an unpadded batch, a device
    synchronisation in every forward. On the CPU that test costs nothing and the skipped mask
    lets SDPA take its faster unmasked kernel (about 4 % of a step here), so the CPU, and any
    other attention implementation, gets the 2-D mask. Both give the same values.
    """
    sdpa = isinstance(encoder, Bert) or getattr(getattr(encoder, "config", None), "_attn_implementation", None) == "sdpa"
    if sdpa and host_reads_sync(mask.device):
        return square_mask(mask)
    return mask.long()


def host_reads_sync(device: torch.device) -> bool:
    """Whether reading a tensor's value on the host waits for ``device`` (every device but the CPU)."""
    return device.type != "cpu"


class LanguageNetwork(nn.Module):
    """F_l (eq. 22): BERT encoder -> Conv1D(hidden -> d, K_l) -> last valid step.

    The last valid step of the WordPiece sequence is its [SEP] token. Dropout is applied to
    the encoder's outputs before the convolution.
    """

    def __init__(self, encoder: nn.Module, cfg: ModelConfig) -> None:
        super().__init__()
        self.bert = encoder
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv = TemporalConv(encoder.config.hidden_size, cfg.dim, cfg.kernel_language)

    def forward(self, batch: Batch) -> Tensor:
        mask = batch["attention_mask"].bool()  # (B, T_tok)
        kwargs = {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}
        hidden = self.bert(input_ids=batch["input_ids"], attention_mask=encoder_mask(self.bert, mask),
                           **kwargs).last_hidden_state
        seq = self.conv(self.dropout(hidden), mask)  # (B, T_tok, d)
        return last_valid_step(seq, mask)  # (B, d)


class SequenceNetwork(nn.Module):
    """F_a / F_v (eq. 23): Conv1D(d_m -> d, K_m) -> Transformer encoder -> last valid step.

    The Transformer is the standard post-norm encoder (feed-forward width 4d) with sinusoidal
    position encodings and a key padding mask. A row with no valid step (an empty segment)
    yields a zero embedding.
    """

    def __init__(self, modality: str, d_in: int, kernel: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.modality = modality
        self.conv = TemporalConv(d_in, cfg.dim, kernel)
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformer: nn.TransformerEncoder | None = None
        if cfg.transformer_layers > 0:
            layer = nn.TransformerEncoderLayer(
                cfg.dim, cfg.transformer_heads, dim_feedforward=4 * cfg.dim, dropout=cfg.dropout, batch_first=True
            )
            self.transformer = nn.TransformerEncoder(layer, cfg.transformer_layers, enable_nested_tensor=False)

    def forward(self, batch: Batch) -> Tensor:
        x = batch[self.modality]  # (B, T_m, d_m)
        mask = batch[f"{self.modality}_mask"].bool()  # (B, T_m)
        if x.shape[1] == 0:  # every row of the batch is empty
            return x.new_zeros(x.shape[0], self.conv.conv.out_channels)
        h = self.conv(x, mask)  # (B, T_m, d)
        if self.transformer is not None:
            h = self.dropout(h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype))
            # An all-padding row would make attention NaN: let it attend to its (zero) first
            # step; its output is replaced by zeros in last_valid_step anyway.
            first = torch.zeros_like(mask)
            first[:, 0] = True
            attend = mask | (first & ~mask.any(dim=1, keepdim=True))  # (B, T_m)
            h = self.transformer(h, src_key_padding_mask=~attend)  # (B, T_m, d)
        return last_valid_step(h, mask)  # (B, d)


def build_encoders(cfg: ModelConfig, dims: dict[str, int], modalities: tuple[str, ...],
                   text_encoder: nn.Module | None = None) -> nn.ModuleDict:
    """F_m for each of ``modalities`` (eq. 22-23), in that order: the language network around
    ``text_encoder`` (default: ``model.text_encoder`` loaded), a sequence network for the others."""
    kernels = {"acoustic": cfg.kernel_acoustic, "visual": cfg.kernel_visual}
    encoders: dict[str, nn.Module] = {}
    for m in modalities:
        if m == "language":
            encoders[m] = LanguageNetwork(text_encoder if text_encoder is not None else load_encoder(cfg.text_encoder), cfg)
        else:
            encoders[m] = SequenceNetwork(m, int(dims[m]), kernels[m], cfg)
    return nn.ModuleDict(encoders)


def text_parameters(encoders: nn.ModuleDict) -> list[nn.Parameter]:
    """The pretrained text encoder's parameters inside F_l (none without a language network)."""
    return list(encoders["language"].bert.parameters()) if "language" in encoders else []
