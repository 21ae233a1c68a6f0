"""One video of CSD files as a chunk of kept segments: words, aligned sequences, labels.

Segments come from the label rows; a segment's words and frames are those overlapping its
interval (:mod:`m3sa.data.align`). With ``data.align: words`` every non-silence word gets
the mean of the acoustic/visual frames overlapping it (DESIGN section 2); with ``none`` the
frame sequences are kept (every ``downsample``-th frame, at most ``max_frames``).
Non-finite values in the frames used are replaced by ``data.nonfinite_value`` before
averaging and counted; a word that no frame overlaps gets NaN (0, the train mean, once
standardised) and is counted too. Dropped segments and their reasons go to the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m3sa.config import DataConfig
from m3sa.data.align import EPSILON, float32_tolerance, overlap_members, sum_members
from m3sa.data.chunk import Chunk, Report, clean
from m3sa.data.csd import CSDReader
from m3sa.data.features import first_bad_label
from m3sa.errors import CSDError, DataError

log = logging.getLogger(__name__)


def _union(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Sorted distinct indices in parts, all in [0, n)."""
    mask = np.zeros(n, dtype=bool)
    for p in parts:
        mask[p] = True
    return np.flatnonzero(mask)


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
        replaced = clean(x, _union(sub, len(x)), value)
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
class Streams:
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


def _read(video: str, streams: Streams, cfg: DataConfig) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str | None]:
    """Each modality's (features, intervals float64) of ``video``, checked, frames as float32
    (cleaned in place later); and the first modality whose file lacks the video, if any
    (``data.on_missing: drop``; the modalities after it are not read)."""
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, reader in streams.readers.items():
        if video not in reader:
            if cfg.on_missing == "error":
                raise DataError(f"{reader.path}: video '{video}' (in the labels) is missing; add it, or set "
                                "data.on_missing: drop")
            return data, m
        feats, ivs = reader.get(video)
        if m == "language":
            if feats.dtype.kind not in "SUO":
                raise CSDError(f"{reader.path}: video '{video}': words must be byte strings, got dtype {feats.dtype}")
            if feats.shape[1] != 1:
                raise CSDError(f"{reader.path}: video '{video}': words must be stored one per row, shape (n, 1); "
                               f"got {feats.shape}")
        else:
            _check_frames(reader, video, feats, streams.dims[m])
            feats = feats.astype(np.float32, copy=False)
        data[m] = (feats, ivs.astype(np.float64, copy=False))
    return data, None


def _segment_words(video: str, words: tuple[np.ndarray, np.ndarray], path: Path, seg: np.ndarray,
                   tolerances: tuple[np.ndarray, np.ndarray], keep: np.ndarray, cfg: DataConfig,
                   report: Report) -> tuple[list[bytes], dict[int, np.ndarray]]:
    """The video's words (UTF-8) and each kept segment's non-silence word indices, at most
    ``max_words``; a segment without words is dropped (``keep`` updated)."""
    wfeat, wiv = words
    tokens = _utf8_words([t if isinstance(t, bytes) else str(t).encode() for t in wfeat.reshape(-1).tolist()],
                         path, video)
    is_word = np.fromiter((t != b"sp" for t in tokens), dtype=bool, count=len(tokens))
    segs = np.flatnonzero(keep)
    tol0, tol1 = tolerances
    indptr, indices = overlap_members(wiv, seg[segs], EPSILON, tol0[segs], tol1[segs])
    words_of: dict[int, np.ndarray] = {}  # segment -> kept word indices
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
    return tokens, words_of


def _word_rows(m: str, x: np.ndarray, frames: np.ndarray, word_iv: np.ndarray, n_words: int,
               word_lists: list[np.ndarray], cfg: DataConfig, report: Report) -> list[np.ndarray]:
    """align=words: each segment's (words, d) frame means, word_lists giving its word indices."""
    used = _union(word_lists, n_words)
    means, replaced, empty = _word_means(x, frames, word_iv[used], cfg.nonfinite_value)
    report.nonfinite[m] += replaced
    report.empty_words[m] += empty
    order = np.concatenate(word_lists)  # the kept segments' words, in order
    rows = means[np.searchsorted(used, order)]  # (total words, d)
    return np.split(rows, np.cumsum([len(w) for w in word_lists])[:-1])  # (words, d) each


def _frame_rows(m: str, x: np.ndarray, frames: np.ndarray, seg: np.ndarray, tol0: np.ndarray, tol1: np.ndarray,
                cfg: DataConfig, report: Report) -> list[np.ndarray]:
    """align=none: each segment's (frames, d) overlapping frames, every downsample-th, at most max_frames."""
    indptr, indices = overlap_members(frames, seg, EPSILON, tol0, tol1)
    picks = [indices[indptr[j]:indptr[j + 1]][:: cfg.downsample][: cfg.max_frames] for j in range(len(seg))]
    report.nonfinite[m] += clean(x, _union(picks, len(x)), cfg.nonfinite_value)
    report.empty_segments[m] += sum(1 for p in picks if not len(p))
    return [x[p] for p in picks]  # (frames, d) each


def video_chunk(video: str, split: str, cfg: DataConfig, streams: Streams, report: Report,
                gt: dict[str, dict[str, bool]] | None) -> Chunk:
    """The kept segments of one video: words, aligned sequences, labels; drops go to report."""
    y, seg_iv = _labels_of(streams.labels, video, cfg.label_column)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: dropped just below
        length = seg_iv[:, 1].astype(np.float64) - seg_iv[:, 0]
    keep = np.isfinite(length) & (length > EPSILON)
    for k in np.flatnonzero(~keep):
        report.drop(f"{video}[{k}]", video, _bad_interval(float(seg_iv[k, 0]), float(seg_iv[k, 1])))
    data, missing = _read(video, streams, cfg)
    if missing is not None:
        for k in np.flatnonzero(keep):
            report.drop(f"{video}[{k}]", video,
                        f"video missing from the {missing} file {streams.readers[missing].path.name}")
        keep[:] = False
    seg = seg_iv.astype(np.float64)
    tol0, tol1 = _segment_tolerances(seg_iv)

    tokens: list[bytes] = []
    words_of: dict[int, np.ndarray] = {}  # segment -> kept word indices
    if "language" in data and keep.any():
        tokens, words_of = _segment_words(video, data["language"], streams.readers["language"].path, seg,
                                          (tol0, tol1), keep, cfg, report)

    kept = np.flatnonzero(keep)
    seqs: dict[str, list[np.ndarray]] = {}
    for m in streams.dims:
        if not kept.size:
            seqs[m] = []
        elif cfg.align == "words":
            seqs[m] = _word_rows(m, *data[m], data["language"][1], len(tokens),
                                 [words_of[k] for k in kept], cfg, report)
        else:
            seqs[m] = _frame_rows(m, *data[m], seg[kept], tol0[kept], tol1[kept], cfg, report)

    ids = [f"{video}[{k}]" for k in kept]
    return Chunk(
        video_ids=[video] * len(ids), split=split, segment_ids=ids,
        start=seg[kept, 0], end=seg[kept, 1], label=y[kept].astype(np.float32),
        words=[[tokens[i] for i in words_of[k]] for k in kept] if "language" in streams.readers else None,
        seqs=seqs,
        gt=None if gt is None else {m: [gt.get(i, {}).get(m) for i in ids] for m in ("language", "acoustic", "visual")},
    )
