"""CSD files or a processed pickle in, Parquet out: segments, alignment, cleaning, standardisation.

Segments come from the label rows; a segment's words and frames are those overlapping its
interval (:mod:`m3sa.data.align`). With ``data.align: words`` every non-silence word gets
the mean of the acoustic/visual frames overlapping it (DESIGN section 2); with ``none`` the
frame sequences are kept (every ``downsample``-th frame, at most ``max_frames``).
Non-finite values in the frames used are replaced by ``data.nonfinite_value`` before
averaging and counted per modality in meta.json; a word that no frame overlaps gets 0
(the train mean after standardisation) and is counted too.

The extractor streams one video at a time, so memory does not grow with the number of
videos. Train videos come first: their rows go unstandardised to a temporary Arrow file
while the train statistics are merged (Chan et al.'s parallel mean/variance); valid and
test rows are then standardised on the way, and a second pass rewrites the train rows,
one batch at a time. Outputs appear only once complete (temp file, then rename); on any
error no partial output remains. The input files' SHA-256 (for meta.json) is computed in
a separate process meanwhile.

An MMSA or MAG-BERT pickle (``data.source: mmsa | mag``, :mod:`m3sa.data.pickles`) goes
through the same writer, one segment at a time: its splits, rows and widths are the file's
(meta.json ``align`` says which rows: ``words``, ``tokens`` or ``none`` for frames), and
the same cleaning, truncation, standardisation and drop records apply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from m3sa.atomic import os_reason
from m3sa.config import DataConfig
from m3sa.data.align import EPSILON, float32_tolerance, overlap_members, sum_members
from m3sa.data.csd import CSDReader
from m3sa.data.features import (FRAME_MODALITIES, SPLITS, arrow_bools, arrow_lists, arrow_numeric,
                                arrow_strings, features_schema, first_bad_label, sequence_values)
from m3sa.data.folds import assign_folds, read_folds_file, resolve_folds
from m3sa.data.pickles import ROWS_ALIGN, Segment, read_pickle, recognise
from m3sa.data.provenance import InputHashes
from m3sa.data.provenance import sha256 as _sha256  # noqa: F401 - for benchmarks/extract_bench.py
from m3sa.data.safe_pickle import load_pickle
from m3sa.data.sample import FILES as SAMPLE_FILES
from m3sa.data.standardize import Norm, RunningStats, given_norm, normalise
from m3sa.errors import ConfigError, CSDError, DataError, OutputError

log = logging.getLogger(__name__)

_FLUSH_BYTES = 4 << 20  # buffered output per split before a batch is written (bounds memory)
_BLOCK = 256  # pickle segments per chunk


# ----------------------------------------------------------------------------- inputs

@dataclass
class Inputs:
    """Resolved input paths (modality -> file; None when the dataset lacks it)."""

    source: str
    files: dict[str, Path | None]  # language / acoustic / visual / labels
    folds_file: Path | None  # the sample's folds.json, or a JSON path from data.folds
    ground_truth: Path | None


def resolve_inputs(cfg: DataConfig) -> Inputs:
    """Where the CSD files, folds and ground truth of ``cfg`` are."""
    if cfg.source == "sample":
        base = Path(cfg.sample_dir)
        files: dict[str, Path | None] = {m: base / name for m, name in SAMPLE_FILES.items()}
        return Inputs("sample", files, base / "folds.json", base / "ground_truth.json")
    base = Path(cfg.csd_dir)
    named = {"language": cfg.files.words, "acoustic": cfg.files.acoustic, "visual": cfg.files.visual,
             "labels": cfg.files.labels}
    files = {m: (base / n if n else None) for m, n in named.items()}
    return Inputs("csd", files, None, None)


# ----------------------------------------------------------------------------- writing

@dataclass
class _Chunk:
    """Kept segments of one split (one video's, on the CSD path), column by column."""

    video_ids: list[str]
    split: str
    segment_ids: list[str]
    start: np.ndarray  # (n,) float64
    end: np.ndarray
    label: np.ndarray  # (n,) float32
    words: list[list[bytes]] | None  # UTF-8 words per segment
    seqs: dict[str, list[np.ndarray]]  # modality -> per-segment (rows, d) float32
    gt: dict[str, list[bool | None]] | None  # modality -> planted ground truth per segment

    def __len__(self) -> int:
        return len(self.segment_ids)


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # Dictionary encoding only where values repeat, statistics only on scalar columns: on
    # nested float lists either one costs more than the write itself. No compression: the
    # features are noise-like floats (snappy saves 4% of the size for 30% more write time).
    strings = [f.name for f in schema if f.name in ("video_id", "split", "words")]
    scalars = [f.name for f in schema if not pa.types.is_list(f.type)]
    return pq.ParquetWriter(path, schema, compression="none", use_dictionary=strings, write_statistics=scalars)


class _SplitWriter:
    """Buffers the chunks of one split and writes them in batches of about ``_FLUSH_BYTES``.

    With ``norm`` the sequences are standardised and written to Parquet; without, they are
    written as they are to an uncompressed Arrow IPC file that pass 2 reads back (the train
    split, whose statistics are known only at its end). ``norm`` may be set before the first
    chunk arrives.
    """

    def __init__(self, path: Path, schema: pa.Schema, dims: dict[str, int], norm: Norm | None) -> None:
        self.schema = schema
        self.dims = dims
        self.norm = norm
        self.writer = _parquet_writer(path, schema) if norm is not None else pa.ipc.new_file(str(path), schema)
        self.rows = 0
        self.chunks: list[_Chunk] = []
        self.bytes = 0
        self.closed = False

    def add(self, chunk: _Chunk) -> None:
        if not len(chunk):
            return
        self.chunks.append(chunk)
        self.bytes += sum(x.nbytes for rows in chunk.seqs.values() for x in rows) + 64 * len(chunk)
        if self.bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.chunks:
            return
        cs = self.chunks
        n = sum(len(c) for c in cs)
        cols: dict[str, pa.Array] = {
            "segment_id": arrow_strings([s.encode() for c in cs for s in c.segment_ids]),
            "video_id": arrow_strings([v.encode() for c in cs for v in c.video_ids]),
            "split": arrow_strings([c.split.encode() for c in cs for _ in range(len(c))]),
            "start": arrow_numeric(np.concatenate([c.start for c in cs]), pa.float64()),
            "end": arrow_numeric(np.concatenate([c.end for c in cs]), pa.float64()),
            "label": arrow_numeric(np.concatenate([c.label for c in cs]), pa.float32()),
        }
        if "words" in self.schema.names:
            words = [w for c in cs for w in c.words]  # type: ignore[union-attr]
            cols["words"] = arrow_lists(np.fromiter(map(len, words), np.int64, len(words)),
                                        arrow_strings([t for w in words for t in w]))
        for m, dim in self.dims.items():
            rows = [x for c in cs for x in c.seqs[m]]
            counts = np.fromiter(map(len, rows), np.int32, len(rows))
            x = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)  # (total rows, d)
            if self.norm is not None:
                x = normalise(x, *self.norm[m])
            cols[m] = _sequences(counts, x)
            cols[f"{m}_len"] = arrow_numeric(counts, pa.int32())
        for name in self.schema.names:
            if name.startswith("gt_"):
                cols[name] = arrow_bools([g for c in cs for g in c.gt[name[3:]]])  # type: ignore[index]
        self.writer.write(pa.Table.from_arrays([cols[f.name] for f in self.schema], schema=self.schema))
        self.rows += n
        self.chunks, self.bytes = [], 0

    def close(self) -> None:
        self.flush()
        self.closed = True
        self.writer.close()

    def abort(self) -> None:
        """Close without flushing (the caller deletes the file); never raises, so that the
        error that ended the run is the one reported (closing may fail again on a full disk)."""
        if not self.closed:
            self.closed = True
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file is deleted next
                log.debug("closing a failed output writer", exc_info=True)


def _sequences(counts: np.ndarray, x: np.ndarray) -> pa.Array:
    """list<list<float32>>: segment i holds counts[i] consecutive rows of x (rows, d)."""
    return arrow_lists(counts, arrow_lists(np.full(len(x), x.shape[1]), arrow_numeric(x.reshape(-1), pa.float32())))


def _standardised(col: pa.Array, mean: np.ndarray, std: np.ndarray) -> pa.Array:
    """(x - mean) / std on a list<list<float32>> column; NaN rows (words without frames) -> 0."""
    x, offsets = sequence_values(col, len(mean))  # (rows, d), (n+1,)
    return _sequences(np.diff(offsets), normalise(x, mean, std))


def _rewrite_standardised(src: Path, dst: Path, schema: pa.Schema, norm: Norm) -> None:
    """Pass 2: copy the raw Arrow file src to Parquet dst batch by batch, standardising the
    sequence columns."""
    with pa.OSFile(str(src)) as source, _parquet_writer(dst, schema) as writer:  # one batch in memory at a time
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            arrays = [_standardised(batch.column(j), *norm[f.name]) if f.name in norm else batch.column(j)
                      for j, f in enumerate(schema)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


# ----------------------------------------------------------------------------- one video

@dataclass
class _Report:
    dropped: list[dict[str, str]] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)  # non-finite input values replaced
    empty_words: dict[str, int] = field(default_factory=dict)  # words no frame overlaps
    empty_segments: dict[str, int] = field(default_factory=dict)  # align=none: segments without frames
    truncated: int = 0  # segments cut at data.max_words

    def drop(self, segment_id: str, video: str, reason: str) -> None:
        self.dropped.append({"segment_id": segment_id, "video_id": video, "reason": reason})


def _union(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted distinct indices in parts, all in [0, n)."""
    mask = np.zeros(n, dtype=bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)


def _clean(x: np.ndarray, rows: np.ndarray, value: float) -> int:
    """Replace non-finite values of x[rows] in place; return how many there were."""
    sub = x[rows]
    bad = ~np.isfinite(sub)
    n = int(bad.sum())
    if n:
        sub[bad] = value
        x[rows] = sub
    return n


def _word_means(x: np.ndarray, frames: np.ndarray, words: np.ndarray, value: float) -> tuple[np.ndarray, int, int]:
    """Mean frame per word (NaN where none overlaps), non-finite frames replaced first.

    Returns ``(means (w, d) float32, non-finite values replaced, words without frames)``.
    """
    indptr, indices = overlap_members(frames, words)
    counts = np.diff(indptr)
    sums = sum_members(x, indptr, indices)  # (w, d)
    replaced = 0
    bad = np.flatnonzero(~np.isfinite(sums).all(axis=1))
    if len(bad):  # a non-finite frame (or an overflow) in some words: clean their frames, re-sum them
        sub = [indices[indptr[j]:indptr[j + 1]] for j in bad]
        replaced = _clean(x, _union(sub, len(x)), value)
        sub_ptr = np.zeros(len(bad) + 1, dtype=np.int64)
        np.cumsum(counts[bad], out=sub_ptr[1:])
        sub_idx = np.concatenate(sub)
        redo = sum_members(x, sub_ptr, sub_idx)
        if not np.isfinite(redo).all():  # float32 overflow: sum in float64
            redo = sum_members(x.astype(np.float64), sub_ptr, sub_idx)
        sums = sums.astype(np.float64)
        sums[bad] = redo
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts[:, None]).astype(np.float32)  # (w, d); NaN where counts == 0
    return means, replaced, int((counts == 0).sum())


def _segment_tolerances(intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge tolerances (n,) for segment intervals: float32 storage rounds by up to half a step."""
    if intervals.dtype.itemsize < 8:
        return float32_tolerance(intervals[:, 0]), float32_tolerance(intervals[:, 1])
    eps = np.full(len(intervals), EPSILON)
    return eps, eps


@dataclass
class _Streams:
    """Open readers and per-modality facts for one extraction."""

    readers: dict[str, CSDReader]  # language / acoustic / visual
    labels: CSDReader
    dims: dict[str, int]


def _check_frames(reader: CSDReader, video: str, feats: np.ndarray, dim: int) -> None:
    if feats.dtype.kind not in "fiu":
        raise CSDError(f"{reader.path}: video '{video}': features must be numbers, got dtype {feats.dtype}")
    if feats.shape[1] != dim:
        raise CSDError(f"{reader.path}: video '{video}': {feats.shape[1]} features per row, but the file's first "
                       f"video has {dim}")


def _labels_of(reader: CSDReader, video: str, column: int) -> tuple[np.ndarray, np.ndarray]:
    feats, ivs = reader.get(video)
    if feats.dtype.kind not in "fiu":
        raise CSDError(f"{reader.path}: video '{video}': labels must be numbers, got dtype {feats.dtype}")
    if column >= feats.shape[1]:
        raise DataError(f"{reader.path}: video '{video}': label rows have {feats.shape[1]} column(s) but "
                        f"data.label_column = {column}")
    y = feats[:, column].astype(np.float64)
    if (bad := first_bad_label(y)) is not None:
        k, what = bad
        raise DataError(f"{reader.path}: video '{video}', row {k}: label {what}; fix or remove the row")
    return y, ivs


def _bad_interval(start: float, end: float) -> str:
    if not (np.isfinite(start) and np.isfinite(end)):
        return "non-finite interval"
    if end - start < -EPSILON:
        return f"reversed interval (end < start: {start:g} > {end:g})"
    return f"zero-length interval ({start:g}-{end:g} s)"


def _utf8_words(tokens: list[bytes], path: Path, video: str) -> list[bytes]:
    """The words as valid UTF-8 (Parquet strings must be): undecodable bytes become U+FFFD."""
    if b"".join(tokens).isascii():  # the usual case, checked at C speed
        return tokens
    fixed = [t.decode("utf-8", errors="replace").encode() for t in tokens]
    bad = sum(a != b for a, b in zip(tokens, fixed))
    if bad:
        log.warning("%s: video '%s': %d word(s) are not valid UTF-8; undecodable bytes replaced by U+FFFD",
                    path, video, bad)
    return fixed


def _video_chunk(video: str, split: str, cfg: DataConfig, streams: _Streams, report: _Report,
                 gt: dict[str, dict[str, bool]] | None) -> _Chunk:
    """The kept segments of one video: words, aligned sequences, labels; drops go to report."""
    y, seg_iv = _labels_of(streams.labels, video, cfg.label_column)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: dropped just below
        length = seg_iv[:, 1].astype(np.float64) - seg_iv[:, 0]
    keep = np.isfinite(length) & (length > EPSILON)
    for k in np.flatnonzero(~keep):
        report.drop(f"{video}[{k}]", video, _bad_interval(float(seg_iv[k, 0]), float(seg_iv[k, 1])))
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, reader in streams.readers.items():
        if video not in reader:
            if cfg.on_missing == "error":
                raise DataError(f"{reader.path}: video '{video}' (in the labels) is missing; add it, or set "
                                "data.on_missing: drop")
            for k in np.flatnonzero(keep):
                report.drop(f"{video}[{k}]", video, f"video missing from the {m} file {reader.path.name}")
            keep[:] = False
            break
        feats, ivs = reader.get(video)
        if m == "language":
            if feats.dtype.kind not in "SUO":
                raise CSDError(f"{reader.path}: video '{video}': words must be byte strings, got dtype {feats.dtype}")
            if feats.shape[1] != 1:
                raise CSDError(f"{reader.path}: video '{video}': words must be stored one per row, shape (n, 1); "
                               f"got {feats.shape}")
        else:
            _check_frames(reader, video, feats, streams.dims[m])
            feats = feats.astype(np.float32, copy=False)  # cleaned in place below
        data[m] = (feats, ivs.astype(np.float64, copy=False))
    seg = seg_iv.astype(np.float64)
    tol0, tol1 = _segment_tolerances(seg_iv)

    words_of: dict[int, np.ndarray] = {}  # segment -> kept word indices
    tokens: list[bytes] = []
    if "language" in data and keep.any():
        wfeat, wiv = data["language"]
        raw = wfeat.reshape(-1)
        tokens = _utf8_words([t if isinstance(t, bytes) else str(t).encode() for t in raw.tolist()],
                             streams.readers["language"].path, video)
        is_word = np.fromiter((t != b"sp" for t in tokens), dtype=bool, count=len(tokens))
        segs = np.flatnonzero(keep)
        indptr, indices = overlap_members(wiv, seg[segs], EPSILON, tol0[segs], tol1[segs])
        for j, k in enumerate(segs):
            w = indices[indptr[j]:indptr[j + 1]]
            w = w[is_word[w]]
            if not len(w):
                report.drop(f"{video}[{k}]", video, "no words in the segment interval")
                keep[k] = False
                continue
            if len(w) > cfg.max_words:
                report.truncated += 1
                w = w[: cfg.max_words]
            words_of[int(k)] = w

    kept = np.flatnonzero(keep)
    seqs: dict[str, list[np.ndarray]] = {}
    for m in streams.dims:
        if not kept.size:
            seqs[m] = []
            continue
        x, fiv = data[m]
        if cfg.align == "words":
            used = _union([words_of[k] for k in kept], len(tokens))
            means, replaced, empty = _word_means(x, fiv, data["language"][1][used], cfg.nonfinite_value)
            report.nonfinite[m] += replaced
            report.empty_words[m] += empty
            order = np.concatenate([words_of[k] for k in kept])  # the kept segments' words, in order
            rows = means[np.searchsorted(used, order)]  # (total words, d)
            seqs[m] = np.split(rows, np.cumsum([len(words_of[k]) for k in kept])[:-1])  # (words, d) each
        else:
            indptr, indices = overlap_members(fiv, seg[kept], EPSILON, tol0[kept], tol1[kept])
            picks = [indices[indptr[j]:indptr[j + 1]][:: cfg.downsample][: cfg.max_frames] for j in range(len(kept))]
            report.nonfinite[m] += _clean(x, _union(picks, len(x)), cfg.nonfinite_value)
            report.empty_segments[m] += sum(1 for p in picks if not len(p))
            seqs[m] = [x[p] for p in picks]  # (frames, d) each

    ids = [f"{video}[{k}]" for k in kept]
    return _Chunk(
        video_ids=[video] * len(ids), split=split, segment_ids=ids,
        start=seg[kept, 0], end=seg[kept, 1], label=y[kept].astype(np.float32),
        words=[[tokens[i] for i in words_of[k]] for k in kept] if "language" in streams.readers else None,
        seqs=seqs,
        gt=None if gt is None else {m: [gt.get(i, {}).get(m) for i in ids] for m in ("language", "acoustic", "visual")},
    )


# ----------------------------------------------------------------------------- pickle input

def _pickle_chunk(segments: list[Segment], rows_kind: str, cfg: DataConfig, report: _Report) -> _Chunk:
    """A block of one split's pickle segments as a chunk; empty text is dropped and recorded."""
    kept = []
    for seg in segments:
        if seg.words:
            kept.append(seg)
        else:
            report.drop(seg.segment_id, seg.video_id, "empty text")
    seqs: dict[str, list[np.ndarray]] = {}
    for m in report.nonfinite:
        if rows_kind == "words":
            parts = [seg.rows[m][: cfg.max_words] for seg in kept]  # one row per word, cut with the words
        elif rows_kind == "frames":
            parts = [seg.rows[m][:: cfg.downsample][: cfg.max_frames] for seg in kept]
        else:
            parts = [seg.rows[m] for seg in kept]
        counts = [len(p) for p in parts]
        x = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)  # a copy
        report.nonfinite[m] += _clean(x, slice(None), cfg.nonfinite_value)  # type: ignore[arg-type]
        report.empty_segments[m] += counts.count(0)
        seqs[m] = np.split(x, np.cumsum(counts)[:-1]) if kept else []
    words = [[w.encode() for w in seg.words] for seg in kept]
    report.truncated += sum(len(w) > cfg.max_words for w in words)
    nan = np.full(len(kept), np.nan)  # pickles carry no timestamps
    return _Chunk([seg.video_id for seg in kept], segments[0].split, [seg.segment_id for seg in kept], nan, nan,
                  np.array([seg.label for seg in kept], np.float32), [w[: cfg.max_words] for w in words], seqs, None)


def _blocks(segments: Iterator[Segment], size: int = _BLOCK) -> Iterator[list[Segment]]:
    """Consecutive segments of one split, at most ``size`` at a time."""
    block: list[Segment] = []
    for seg in segments:
        if block and (len(block) == size or seg.split != block[0].split):
            yield block
            block = []
        block.append(seg)
    if block:
        yield block


def _pickle_plan(cfg: DataConfig, hash_inputs: bool) -> _Plan:
    path = Path(cfg.pickle)
    hasher = InputHashes([path] if hash_inputs and path.is_file() else [])
    try:
        obj = load_pickle(path)
        sha = hasher.result().get(path.name)
        data = read_pickle(obj, path, cfg.source, sha)
    except BaseException:
        hasher.cancel()
        raise
    report = _Report(nonfinite={m: 0 for m in data.dims}, empty_words={}, empty_segments={m: 0 for m in data.dims})
    name = recognise(sha)
    meta = {
        "align": ROWS_ALIGN[data.rows],
        "videos": {s: len({video for _, video in data.keys[s]}) for s in SPLITS},
        "pickle": {
            "layout": data.layout, "file": str(path), "sha256": sha, "recognised": name, "rows": data.rows,
            "rows_meaning": ROWS_MEANING[data.rows],
            "not_used": data.unused,
            "text": "the text encoder runs on the words (raw_text / words); pre-computed text features are not used",
        },
    }
    log.info("extract: %s (%s layout, rows = %s)", name if sha else path.name, data.layout, data.rows)
    chunks = (_pickle_chunk(block, data.rows, cfg, report) for block in _blocks(data.segments()))
    total = sum(-(-n // _BLOCK) for n in data.counts.values())
    return _Plan(cfg.source, ["language", *data.dims], data.dims, chunks, total, "block",
                 False, report, hasher, meta, f"{path}: no train segment left after dropping bad segments",
                 buffer_train=True)


ROWS_MEANING = {
    "words": "one acoustic / visual row per word",
    "tokens": "one row per WordPiece token of raw_text, as the aligned MMSA file holds them ([CLS] and [SEP] "
              "rows dropped); a word of k WordPieces has k rows",
    "frames": "the file's frame sequences (the first audio_lengths / vision_lengths rows), every "
              "data.downsample-th, at most data.max_frames",
}


# ----------------------------------------------------------------------------- CSD input

def _load_ground_truth(path: Path) -> dict[str, dict[str, bool]]:
    if not path.exists():
        raise DataError(f"{path}: not found; regenerate the sample with `python -m stages.sample`")
    try:
        gt = json.loads(path.read_text())
    except ValueError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(gt, dict):
        raise DataError(f"{path}: must map segment ids to {{modality: bool}}")
    return gt


def _csd_plan(cfg: DataConfig, inputs: Inputs, labels: CSDReader, readers: dict[str, CSDReader],
              hash_inputs: bool) -> _Plan:
    videos = labels.videos()
    if not videos:
        raise CSDError(f"{labels.path}: no videos in the label file")
    dims: dict[str, int] = {}
    for m, r in readers.items():
        vids = r.videos()
        if not vids:
            raise CSDError(f"{r.path}: no videos in the file")
        if m != "language":
            dims[m] = int(r.shape(vids[0])[1])
    modalities = [m for m in ("language", *FRAME_MODALITIES) if m in readers]
    if inputs.folds_file is not None:
        folds = read_folds_file(inputs.folds_file)
        folds_where = str(inputs.folds_file)
    else:
        folds = resolve_folds(cfg.folds, videos, cfg.split_seed, cfg.split_fractions)
        folds_where = f"data.folds ({cfg.folds})"
    assignment = assign_folds(folds, videos, folds_where)
    gt = _load_ground_truth(inputs.ground_truth) if inputs.ground_truth is not None else None
    hashed = [p for p in inputs.files.values() if p is not None]
    hashed += [p for p in (inputs.folds_file, inputs.ground_truth) if p is not None]
    if cfg.folds not in ("mosi", "mosei", "random") and inputs.source == "csd":
        hashed.append(Path(cfg.folds))
    frame_mods = list(dims)
    streams = _Streams(readers={m: readers[m] for m in modalities}, labels=labels, dims=dims)
    report = _Report(nonfinite={m: 0 for m in frame_mods}, empty_words={m: 0 for m in frame_mods},
                     empty_segments={m: 0 for m in frame_mods})
    todo = sorted((v for v in videos if v in assignment.split_of),
                  key=lambda v: assignment.split_of[v] != "train")  # stable: label-file order within
    chunks = (_video_chunk(v, assignment.split_of[v], cfg, streams, report, gt) for v in todo)
    meta = {
        "align": cfg.align,
        "videos": {s: sum(1 for v in assignment.split_of.values() if v == s) for s in SPLITS},
        "fold_ids_not_in_labels": assignment.unknown,
        "videos_in_no_fold": assignment.unassigned,
    }
    return _Plan(inputs.source, modalities, dims, chunks, len(todo), "video", gt is not None, report,
                 InputHashes(hashed if hash_inputs else []), meta,
                 f"{labels.path}: no train segment left after matching folds and dropping bad segments; check "
                 "data.folds and the dropped segments")


# ----------------------------------------------------------------------------- entry point

@dataclass
class _Plan:
    """One extraction's input, whatever its format: what the writer needs."""

    source: str
    modalities: list[str]
    dims: dict[str, int]  # frame modality -> width
    chunks: Iterator[_Chunk]  # train split first
    total: int  # chunks, for the progress bar
    unit: str
    has_gt: bool
    report: _Report
    hasher: InputHashes
    meta: dict[str, Any]  # source-specific meta.json entries
    no_train: str  # the error when no train segment is left
    # Hold the train chunks in memory until their statistics are known, instead of a raw
    # temporary file and a second pass (the input is in memory anyway: a loaded pickle).
    buffer_train: bool = False


def extract(cfg: DataConfig, progress: bool = True, hash_inputs: bool = True,
            statistics: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> dict[str, Any]:
    """Extract ``cfg.features_dir/{train,valid,test}.parquet`` and ``meta.json`` from the
    input ``cfg.source`` names (CSD files, the embedded sample, an MMSA or MAG-BERT pickle).

    Returns the meta dict written to ``meta.json`` (docs/architecture.md). ``hash_inputs=False``
    leaves ``meta["inputs"]`` empty (benchmarks use it to time the extraction proper).
    ``statistics`` (``{m: {"mean", "std"}}``, as meta.json's ``standardization``): standardise
    every split with these instead of the train split's (inference with a trained model's
    statistics; needs ``cfg.standardize``).
    """
    t_start = time.perf_counter()
    if cfg.source in ("mmsa", "mag"):
        return _write(cfg, _pickle_plan(cfg, hash_inputs), progress, t_start, statistics)
    inputs = resolve_inputs(cfg)
    if cfg.align == "words" and inputs.files["language"] is None:
        raise ConfigError("params: 'data.align' = 'words' needs a words file; set data.files.words or use "
                          "data.align: none")
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(CSDReader(inputs.files["labels"]))  # type: ignore[arg-type]
        readers = {m: stack.enter_context(CSDReader(p)) for m in ("language", *FRAME_MODALITIES)
                   if (p := inputs.files[m]) is not None}
        return _write(cfg, _csd_plan(cfg, inputs, labels, readers, hash_inputs), progress, t_start, statistics)


def _write(cfg: DataConfig, plan: _Plan, progress: bool, t_start: float,
           statistics: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> dict[str, Any]:
    """Write ``plan``'s chunks as the three Parquet splits and meta.json, atomically."""
    out = Path(cfg.features_dir)
    dims, report = plan.dims, plan.report
    frame_mods = list(dims)
    schema = features_schema(plan.modalities, plan.has_gt)
    stats = {m: RunningStats(dims[m]) for m in frame_mods}
    given = given_norm(statistics, dims) if statistics is not None and cfg.standardize else None

    def train_norm() -> Norm:
        return {m: (st.mean, st.std()) for m, st in stats.items()}

    final = {s: out / f".{s}.parquet.tmp" for s in SPLITS}
    raw_train = out / ".train.raw.arrow.tmp"
    temps = [raw_train, *final.values(), out / ".meta.json.tmp"]
    # Train chunks come first. Their statistics are known only at the end of the split, so train
    # rows are written raw and standardised in a second pass; valid and test rows are
    # standardised on the way. With given statistics every split is standardised on the way.
    deferred = cfg.standardize and bool(frame_mods) and given is None  # train statistics needed first
    two_pass = deferred and not plan.buffer_train
    identity: Norm = {m: (np.zeros(d), np.ones(d)) for m, d in dims.items()}  # only NaN rows -> 0
    first_norm = given if given is not None else identity
    writers: dict[str, _SplitWriter] = {}
    held: list[_Chunk] = []  # buffer_train: train chunks waiting for the statistics
    train_done = not deferred

    def end_train() -> None:
        norm = train_norm()
        for s, w in writers.items():
            if s != "train" or not two_pass:
                w.norm = norm
        for c in held:
            writers["train"].add(c)
        held.clear()
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{out}: cannot create the output folder ({os_reason(err)})") from None
        for s in SPLITS:
            first = two_pass and s == "train"
            writers[s] = _SplitWriter(raw_train if first else final[s], schema, dims, None if first else first_norm)
        for chunk in tqdm(plan.chunks, total=plan.total, desc="extract", unit=plan.unit,
                          disable=None if progress else True, leave=False):
            if chunk.split != "train" and not train_done:
                train_done = True
                end_train()
            if chunk.split == "train" and deferred and len(chunk):
                for m in frame_mods:
                    x = np.concatenate(chunk.seqs[m])  # (rows of the chunk, d)
                    stats[m].update(x[~np.isnan(x).any(axis=1)])
            if chunk.split == "train" and deferred and not two_pass:
                held.append(chunk)
            else:
                writers[chunk.split].add(chunk)
        if not train_done:
            end_train()
        for w in writers.values():
            w.close()
        counts = {s: writers[s].rows for s in SPLITS}
        if counts["train"] == 0:
            raise DataError(plan.no_train)
        norm = given if given is not None else train_norm()
        if two_pass:
            _rewrite_standardised(raw_train, final["train"], schema, norm)
        standardization = {m: {"mean": mean.tolist(), "std": std.tolist()} for m, (mean, std) in norm.items()}
        meta = {
            "format": "m3sa-features", "version": 1,
            "source": plan.source, "align": plan.meta["align"], "modalities": plan.modalities, "dims": dims,
            "counts": counts,
            "videos": plan.meta["videos"],
            "label_column": cfg.label_column,
            "dropped": report.dropped,
            "nonfinite": report.nonfinite,
            "words_without_frames": report.empty_words if plan.meta["align"] == "words" else {},
            "segments_without_frames": report.empty_segments if plan.meta["align"] != "words" else {},
            "truncated_segments": report.truncated,
            **{k: v for k, v in plan.meta.items() if k not in ("align", "videos")},
            "standardization": standardization if cfg.standardize else {},
            "inputs": plan.hasher.result(),
            "has_ground_truth": plan.has_gt,
            "params": json.loads(json.dumps(dataclasses.asdict(cfg))),
        }
        meta_tmp = out / ".meta.json.tmp"
        meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
        # meta.json marks a complete set: it is absent while the Parquet files are being
        # replaced, so a run killed between two renames leaves no mix that looks complete.
        (out / "meta.json").unlink(missing_ok=True)
        for s in SPLITS:
            os.replace(final[s], out / f"{s}.parquet")
        os.replace(meta_tmp, out / "meta.json")
    except OSError as err:
        raise OutputError(f"{out}: cannot write the features ({os_reason(err)})") from None
    finally:
        plan.hasher.cancel()
        for w in writers.values():
            w.abort()
        for t in temps:
            t.unlink(missing_ok=True)
    log.info("extract: %s segments (train/valid/test), %d dropped, non-finite replaced %s, %.1f s -> %s",
             "/".join(str(counts[s]) for s in SPLITS), len(report.dropped), report.nonfinite,
             time.perf_counter() - t_start, out)
    return meta
