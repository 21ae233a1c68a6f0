"""An MMSA or MAG-BERT pickle (``data.source: mmsa | mag``) as a plan for the writer.

:mod:`m3sa.data.pickles` checks the layout and yields segments; here they become chunks of
at most ``_BLOCK`` segments of one split. The splits, rows and widths are the file's
(meta.json ``align`` says which rows: ``words``, ``tokens`` or ``none`` for frames); the
cleaning, truncation, standardisation and drop records are the CSD path's.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from m3sa.config import DataConfig
from m3sa.data.chunk import Chunk, Plan, Report, clean
from m3sa.data.features import SPLITS
from m3sa.data.pickles import ROWS_ALIGN, Segment, read_pickle, recognise
from m3sa.data.provenance import InputHashes
from m3sa.data.safe_pickle import load_pickle

log = logging.getLogger(__name__)

_BLOCK = 256  # pickle segments per chunk

ROWS_MEANING = {
    "words": "one acoustic / visual row per word",
    "tokens": "one row per WordPiece token of raw_text, as the aligned MMSA file holds them ([CLS] and [SEP] "
              "rows dropped); a word of k WordPieces has k rows",
    "frames": "the file's frame sequences (the first audio_lengths / vision_lengths rows), every "
              "data.downsample-th, at most data.max_frames",
}


def _pickle_chunk(segments: list[Segment], rows_kind: str, cfg: DataConfig, report: Report) -> Chunk:
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
        report.nonfinite[m] += clean(x, slice(None), cfg.nonfinite_value)  # type: ignore[arg-type]
        report.empty_segments[m] += counts.count(0)
        seqs[m] = np.split(x, np.cumsum(counts)[:-1]) if kept else []
    words = [[w.encode() for w in seg.words] for seg in kept]
    report.truncated += sum(len(w) > cfg.max_words for w in words)
    nan = np.full(len(kept), np.nan)  # pickles carry no timestamps
    return Chunk([seg.video_id for seg in kept], segments[0].split, [seg.segment_id for seg in kept], nan, nan,
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


@contextlib.contextmanager
def pickle_plan(cfg: DataConfig, hash_inputs: bool) -> Iterator[Plan]:
    """The pickle ``cfg.pickle`` as a plan, its SHA-256 computed while it loads."""
    path = Path(cfg.pickle)
    with InputHashes([path] if hash_inputs and path.is_file() else []) as hashes:
        obj = load_pickle(path)
        sha = hashes.result().get(path.name)
        data = read_pickle(obj, path, cfg.source, sha)
        report = Report(nonfinite={m: 0 for m in data.dims}, empty_words={}, empty_segments={m: 0 for m in data.dims})
        name = recognise(sha)
        meta = {
            "align": ROWS_ALIGN[data.rows],
            "videos": {s: len({video for _, video in data.keys[s]}) for s in SPLITS},
            "pickle": {
                "layout": data.layout, "file": str(path), "sha256": sha, "recognised": name, "rows": data.rows,
                "rows_meaning": ROWS_MEANING[data.rows],
                "not_used": data.unused,
                "text": "the text encoder runs on the words (raw_text / words); pre-computed text features are "
                        "not used",
            },
        }
        log.info("extract: %s (%s layout, rows = %s)", name if sha else path.name, data.layout, data.rows)
        chunks = (_pickle_chunk(block, data.rows, cfg, report) for block in _blocks(data.segments()))
        total = sum(-(-n // _BLOCK) for n in data.counts.values())
        yield Plan(cfg.source, ["language", *data.dims], data.dims, chunks, total, "block",
                   False, report, hashes, meta, f"{path}: no train segment left after dropping bad segments",
                   buffer_train=True)
