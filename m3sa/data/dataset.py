"""Parquet features -> pre-collated tensors -> padded batches.

A split is read once from ``<features_dir>/<split>.parquet`` (schema in
docs/architecture.md), its words are tokenised once with the text encoder's fast tokenizer
(``is_split_into_words``; ``word_ids()`` gives each WordPiece's word, the ``word_index``
the batch contract asks for), and every variable-length field is stored flat with offsets.
A batch is then one vectorised gather per field: no Python loop over samples, no worker
processes. :class:`BucketBatchSampler` groups samples of similar length so that padding
stays small; under ``torchrun`` it splits each global batch between the ranks.
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from m3sa.config import MODALITIES
from m3sa.data.features import read_meta  # noqa: F401  (re-exported: training and evaluation read it here)
from m3sa.errors import DataError, ModelError
from m3sa.tokenization import WordTokenizer, load_tokenizer, load_word_tokenizer  # noqa: F401  (re-exported beside load_split)

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
FRAME_MODALITIES = ("acoustic", "visual")


# ---------------------------------------------------------------- ragged storage


@dataclass
class Ragged:
    """Variable-length rows stored flat: row ``i`` is ``values[offsets[i]:offsets[i+1]]``.

    ``values`` ends with one extra padding row (index ``len(values) - 1``) that padded batch
    positions point to, so a batch is a single gather.
    """

    values: Tensor  # (N_total + 1, *feature_shape)
    offsets: Tensor  # (n + 1,) long

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def pad(self, idx: Tensor, min_len: int = 1, buckets: bool = False) -> tuple[Tensor, Tensor]:
        """Rows ``idx`` padded to the longest of them (``buckets``: to the :func:`bucket_length`
        that holds it): (B, T, ...) values and (B, T) mask."""
        starts = self.offsets[idx]  # (B,)
        lens = self.offsets[idx + 1] - starts  # (B,)
        t = max(int(lens.max()) if len(idx) else 0, min_len)
        t = bucket_length(t) if buckets else t
        pos = torch.arange(t)
        mask = pos[None, :] < lens[:, None]  # (B, T)
        flat = torch.where(mask, starts[:, None] + pos[None, :], self.values.shape[0] - 1)  # (B, T)
        return self.values[flat], mask  # (B, T, ...), (B, T)


def bucket_length(n: int) -> int:
    """The padded length of a batch whose longest row has ``n`` steps under bucketed padding:
    the smallest of 8, 12, 16, 24, 32, 48, 64, 96, 128, ... (2^k and 1.5 * 2^k) that is >= n.

    A few fixed lengths (two per doubling), at most 50 % padding: each (batch size, token length,
    frame length) is one static shape, so a CUDA graph or a compiled graph per shape is
    reused across the epoch instead of built for every new length.
    """
    size = 8
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _ragged(values: Tensor, offsets: np.ndarray, pad_row: Tensor) -> Ragged:
    return Ragged(torch.cat([values, pad_row[None]], 0), torch.as_tensor(offsets, dtype=torch.long))


# ---------------------------------------------------------------- split


@dataclass
class SplitData:
    """One split, tokenised and stored as flat tensors; :meth:`collate` builds batches."""

    name: str
    modalities: tuple[str, ...]
    labels: Tensor  # (n,) float32
    segment_ids: list[str]
    video_ids: list[str]
    fields: dict[str, Ragged]
    pad_token_id: int = 0
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)  # m -> (n,) float (nan = unknown)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """Per-sample cost key for bucketing: the longest of the sample's sequences."""
        lens = [r.lengths.numpy() for r in self.fields.values()]
        return np.max(np.stack(lens), axis=0) if lens else np.ones(len(self), dtype=np.int64)

    def collate(self, indices: Sequence[int] | Tensor, buckets: bool = False) -> dict[str, Tensor]:
        """The batch dict of docs/architecture.md for rows ``indices``, padded to the batch max
        (``buckets``: to its :func:`bucket_length`; padded steps are masked, so the model
        computes the same values up to float rounding)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch: dict[str, Tensor] = {"label": self.labels[idx], "index": idx}
        if "input_ids" in self.fields:
            ids, mask = self.fields["input_ids"].pad(idx, min_len=2, buckets=buckets)
            batch["input_ids"] = ids.masked_fill(~mask, self.pad_token_id)  # (B, T_tok)
            batch["attention_mask"] = mask.long()  # (B, T_tok)
            batch["word_index"] = self.fields["word_index"].pad(idx, min_len=2, buckets=buckets)[0]  # -1 = none
        for m in FRAME_MODALITIES:
            if m in self.fields:
                batch[m], batch[f"{m}_mask"] = self.fields[m].pad(idx, buckets=buckets)  # (B, T_m, d_m), (B, T_m)
        return batch


def _schema_error(path: Path, what: str) -> DataError:
    return DataError(f"{path}: {what}; rerun `python -m stages.extract` (schema in docs/architecture.md)")


def _require(path: Path, name: str, names: list[str]) -> None:
    """DataError unless the file's columns ``names`` include ``name``."""
    if name not in names:
        raise _schema_error(path, f"column '{name}' is missing (columns: {', '.join(names)})")


def _column(table: pa.Table, path: Path, name: str, names: list[str]) -> pa.ChunkedArray:
    """Column ``name`` of ``table`` (read from a file whose columns are ``names``), without nulls."""
    _require(path, name, names)
    col = table.column(name)
    if col.null_count:
        raise _schema_error(path, f"column '{name}' has {col.null_count} null value(s)")
    return col


def _read(parquet: pq.ParquetFile, path: Path, columns: list[str], row_group: int | None = None) -> pa.Table:
    """``columns`` of the whole file or of one row group; an unreadable file is a DataError."""
    try:
        if row_group is None:
            return parquet.read(columns=columns)
        return parquet.read_row_group(row_group, columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None


def _numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow array as numpy, read from its buffer: ``Array.to_numpy`` imports pandas
    on first use (about 45 MiB resident in a training process that has no other use for it).
    Arrays with nulls (or of other types) still go through ``to_numpy`` (nulls become NaN)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count or not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
        return arr.to_numpy(zero_copy_only=False)
    dtype = np.dtype(arr.type.to_pandas_dtype())
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def _frames(parquet: pq.ParquetFile, path: Path, m: str, dim: int, segment_ids: list[str]) -> Ragged:
    """``m``'s frame rows as one (N_rows + 1, d_m) tensor, the last row Ragged's zero padding row.

    Read one row group at a time: Arrow's decoded copy of the whole column, several times the
    data, never exists; the peak is the rows twice (Arrow's per group and the tensor).
    """
    typ = parquet.schema_arrow.field(m).type
    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)) or not (
        pa.types.is_list(typ.value_type) or pa.types.is_large_list(typ.value_type)
    ) or not pa.types.is_floating(typ.value_type.value_type):
        raise _schema_error(path, f"column '{m}' has type {typ}, expected list<list<float32>>")
    lens_col = f"{m}_len"
    has_lens = lens_col in parquet.schema_arrow.names
    rows: list[np.ndarray] = []  # per row group: (n_rows, d_m) float32, views of Arrow's buffers
    counts: list[np.ndarray] = []  # per row group: frame rows per segment
    stated: list[np.ndarray] = []  # per row group: the lens column
    nulls = 0
    for g in range(parquet.num_row_groups):
        group = _read(parquet, path, [m, lens_col] if has_lens else [m], g)
        outer = group.column(m).combine_chunks().cast(pa.list_(pa.list_(pa.float32())))
        nulls += outer.null_count
        if nulls:
            continue
        offsets = _numpy(outer.offsets).astype(np.int64)
        inner = outer.flatten()
        widths = np.diff(_numpy(inner.offsets))
        if inner.null_count or (widths != dim).any():
            bad = int(np.argmax(widths != dim)) if (widths != dim).any() else 0
            row = sum(map(len, counts)) + int(np.searchsorted(offsets - offsets[0], bad, side="right") - 1)
            raise DataError(
                f"{path}: segment {segment_ids[row]!r}: '{m}' rows have width {int(widths[bad])}, but meta.json "
                f"says dims.{m} = {dim}; rerun `python -m stages.extract`"
            )
        counts.append(np.diff(offsets))
        rows.append(_numpy(inner.flatten()).reshape(-1, dim))
        if has_lens:
            stated.append(_numpy(group.column(lens_col)))
    if nulls:
        raise _schema_error(path, f"column '{m}' has {nulls} null value(s)")
    per_segment = np.concatenate(counts) if counts else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_segment)]).astype(np.int64)
    values = torch.zeros(int(offsets[-1]) + 1, dim)  # (N_rows + 1, d_m)
    if rows:
        np.concatenate(rows, out=values[:-1].numpy())  # the one copy out of Arrow's buffers
    del rows
    flat = values[:-1].numpy().reshape(-1)
    finite = np.isfinite(flat)
    if not finite.all():
        bad = int(np.argmin(finite)) // dim  # first frame row holding a NaN/inf
        row = int(np.searchsorted(offsets, bad, side="right") - 1)
        raise DataError(
            f"{path}: segment {segment_ids[row]!r}: '{m}' holds {int(flat.size - finite.sum())} NaN/inf "
            f"value(s); rerun `python -m stages.extract` (it replaces them with data.nonfinite_value)"
        )
    if has_lens:
        lens = np.concatenate(stated) if stated else np.zeros(0, np.int64)
        if not np.array_equal(lens, per_segment):
            row = int(np.argmax(lens != per_segment))
            raise DataError(f"{path}: segment {segment_ids[row]!r}: '{lens_col}' = {int(lens[row])} but '{m}' "
                            f"has {int(per_segment[row])} rows")
    return Ragged(values, torch.as_tensor(offsets, dtype=torch.long))


def _tokenise(words: list[list[str]], tokenizer: Any, max_tokens: int) -> tuple[Ragged, Ragged]:
    """input_ids and word_index (-1 for special tokens) per sample, truncated to max_tokens."""
    try:
        tokenizer = WordTokenizer.wrap(tokenizer)
    except ModelError as err:
        raise DataError(str(err)) from None
    ids: list[int] = []
    widx: list[int] = []
    offsets = [0]
    chunk = 4096
    for lo in range(0, len(words), chunk):
        for row, word_ids in tokenizer.encode(words[lo:lo + chunk], max_tokens):
            ids.extend(row)
            widx.extend(-1 if w is None else w for w in word_ids)
            offsets.append(len(ids))
    off = np.asarray(offsets, dtype=np.int64)
    return (_ragged(torch.tensor(ids, dtype=torch.long), off, torch.tensor(0)),
            _ragged(torch.tensor(widx, dtype=torch.long), off, torch.tensor(-1)))


@contextmanager
def system_memory_pool() -> Iterator[None]:
    """Arrow allocates from the C library's malloc while the block runs. Its default pool
    (mimalloc) keeps the pages of decoded row groups after they are freed: reading the
    default data's train and valid splits left about 40 MiB more resident in a training
    process that holds only the tensors made from them (docs/benchmarks.md)."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def load_split(features_dir: str | Path, split: str, tokenizer: Any, max_tokens: int,
               meta: dict[str, Any] | None = None) -> SplitData:
    """Read ``<features_dir>/<split>.parquet`` into a :class:`SplitData`.

    Raises :class:`DataError` naming the file (and segment) when the schema or a feature
    width disagrees with ``meta.json``.
    """
    meta = meta if meta is not None else read_meta(features_dir)
    path = Path(features_dir) / f"{split}.parquet"
    if not path.exists():
        raise DataError(f"{path}: not found; run `python -m stages.extract` first")
    with system_memory_pool():
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        with parquet:
            split_data = _split_data(parquet, path, split, tokenizer, max_tokens, meta)
    log.debug("%s: %d segments, modalities %s", path, len(split_data), ",".join(split_data.modalities))
    return split_data


def _split_data(parquet: pq.ParquetFile, path: Path, split: str, tokenizer: Any, max_tokens: int,
                meta: dict[str, Any]) -> SplitData:
    """The :class:`SplitData` of an open Parquet split. The frame columns are read by
    :func:`_frames`, one row group at a time; the rest of the table here, at once."""
    names = parquet.schema_arrow.names
    frame_columns = {c for m in FRAME_MODALITIES for c in (m, f"{m}_len")}
    table = _read(parquet, path, [c for c in names if c not in frame_columns])
    modalities = tuple(meta["modalities"])
    segment_ids = [str(s) for s in _column(table, path, "segment_id", names).to_pylist()]
    video_ids = [str(s) for s in _column(table, path, "video_id", names).to_pylist()] if "video_id" in table.column_names \
        else [s.rsplit("[", 1)[0] for s in segment_ids]
    label_col = _column(table, path, "label", names)
    if not pa.types.is_floating(label_col.type):
        raise _schema_error(path, f"column 'label' has type {label_col.type}, expected float32")
    labels = torch.from_numpy(_numpy(label_col).astype(np.float32))  # (n,)
    fields: dict[str, Ragged] = {}
    pad_id = 0
    if "language" in modalities:
        col = _column(table, path, "words", names)
        if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or not (
            pa.types.is_string(col.type.value_type) or pa.types.is_large_string(col.type.value_type)
        ):
            raise _schema_error(path, f"column 'words' has type {col.type}, expected list<string>")
        fields["input_ids"], fields["word_index"] = _tokenise(col.to_pylist(), tokenizer, max_tokens)
        pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)  # WordTokenizer or transformers
    for m in FRAME_MODALITIES:
        if m in modalities:
            _require(path, m, names)
            fields[m] = _frames(parquet, path, m, int(meta["dims"][m]), segment_ids)
    gt: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        name = f"gt_{m}"
        if name in table.column_names:
            vals = table.column(name).to_pylist()
            gt[m] = np.array([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    return SplitData(split, modalities, labels, segment_ids, video_ids, fields, pad_id, gt)


# ---------------------------------------------------------------- batching


class BucketBatchSampler:
    """Seeded, length-bucketed batches; the order depends only on (seed, epoch).

    Training: the samples are shuffled, cut into pools of ``pool_batches`` batches, each pool
    sorted by length and cut into batches, and the batches shuffled. Evaluation
    (``shuffle=False``): all samples sorted by length. With ``num_replicas > 1`` each
    global batch is split between the ranks (rank ``r`` takes items ``r::num_replicas``),
    so N processes see the same global batches as one process; a final batch smaller than
    ``num_replicas`` is merged into the one before it.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, shuffle: bool = True,
                 pool_batches: int = 50, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.pool = max(1, pool_batches) * batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """All batches of this epoch, before the split between ranks."""
        n = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(n)
        else:
            rng = None
            order = np.arange(n)
        batches: list[np.ndarray] = []
        for lo in range(0, n, self.pool):
            pool = order[lo:lo + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        if len(batches) > 1 and len(batches[-1]) < self.num_replicas:
            batches[-2:] = [np.concatenate(batches[-2:])]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.global_batches():
            yield b[self.rank::self.num_replicas].tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Move a batch; on CUDA through pinned memory with non-blocking copies."""
    if device.type != "cuda":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def iterate_batches(data: SplitData, sampler: Iterator[list[int]] | BucketBatchSampler,
                    device: torch.device, buckets: bool = False) -> Iterator[dict[str, Tensor]]:
    """Collated batches on ``device`` (``buckets``: padded to bucket lengths, see
    :meth:`SplitData.collate`); on CUDA the next batch is copied while this one runs."""
    pending: dict[str, Tensor] | None = None
    for indices in sampler:
        nxt = to_device(data.collate(indices, buckets), device)
        if pending is not None:
            yield pending
        pending = nxt
    if pending is not None:
        yield pending
