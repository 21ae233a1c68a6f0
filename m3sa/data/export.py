"""Extracted features written out in the MMSA or MAG-BERT pickle layout (:mod:`m3sa.data.pickles`).

For round trips (CSD -> Parquet -> pickle -> Parquet gives the same segments) and for tools
that read those layouts. Export features extracted with ``data.standardize: false`` to keep
the raw values. Segment ids ``video[clip]`` become MMSA's ``video$_$clip``; MAG-BERT keeps
``video[clip]``. Pre-computed BERT features (MMSA's ``text``) are not written; ``text_bert``
carries only the mask (token ids 0), which is all this project reads of it.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from m3sa.data.features import FRAME_MODALITIES, SPLITS, read_meta, read_split, sequence_values
from m3sa.errors import DataError

_KEYS = {"acoustic": "audio", "visual": "vision"}


def _split_columns(features_dir: Path, split: str, meta: dict[str, Any]) -> dict[str, Any]:
    """One split as plain Python: ids, words, labels and per-segment (rows, d) arrays."""
    table = read_split(features_dir, split, meta)
    cols: dict[str, Any] = {
        "id": table.column("segment_id").to_pylist(),
        "words": table.column("words").to_pylist(),
        "label": np.asarray(table.column("label").to_pylist(), dtype=np.float32),
    }
    for m in FRAME_MODALITIES:
        if m not in meta["modalities"]:
            raise DataError(f"{features_dir}: the features have no {m} stream; both layouts need one")
        x, offsets = sequence_values(table.column(m).combine_chunks(), meta["dims"][m])
        cols[m] = [x[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return cols


def _mmsa_id(segment_id: str) -> str:
    m = re.match(r"^(.+)\[(.+)\]$", segment_id)
    return f"{m.group(1)}$_${m.group(2)}" if m else segment_id


def _padded(rows: list[np.ndarray], t: int, d: int, start: int = 0) -> np.ndarray:
    out = np.zeros((len(rows), t, d), dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, start:start + len(r)] = r
    return out


def to_mmsa(features_dir: str | Path, path: str | Path, aligned: bool = False,
            pieces: Callable[[str], int] = lambda word: 1) -> None:
    """Write ``features_dir`` as an MMSA pickle at ``path``.

    ``aligned=False``: unaligned layout, each segment's rows as they are plus
    ``audio_lengths`` / ``vision_lengths``. ``aligned=True``: aligned layout, each word's row
    repeated for each of its ``pieces(word)`` WordPieces between a zero ``[CLS]`` and ``[SEP]``
    row, ``text_bert``'s mask marking them (features must have one row per word).
    """
    features_dir = Path(features_dir)
    meta = read_meta(features_dir)
    out: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        c = _split_columns(features_dir, split, meta)
        n = len(c["id"])
        d = {"raw_text": np.array([" ".join(w) for w in c["words"]], dtype=object),
             "id": np.array([_mmsa_id(s) for s in c["id"]], dtype=object),
             "regression_labels": c["label"]}
        if aligned:
            reps = [np.array([pieces(w) for w in words], dtype=np.int64) for words in c["words"]]
            for m in FRAME_MODALITIES:
                if any(len(r) != len(w) for r, w in zip(c[m], c["words"])):
                    raise DataError(f"{features_dir}: the aligned layout needs one {m} row per word "
                                     "(extract with data.align=words)")
            tokens = [np.repeat(r, k, axis=0) for r, k in zip(c["acoustic"], reps)]
            t = max((len(x) for x in tokens), default=0) + 2
            lengths = np.array([len(x) + 2 for x in tokens], dtype=np.int64)
            text_bert = np.zeros((n, 3, t), dtype=np.float32)
            text_bert[:, 1] = np.arange(t)[None, :] < lengths[:, None]
            d["text_bert"] = text_bert
            for m, key in _KEYS.items():
                d[key] = _padded([np.repeat(r, k, axis=0) for r, k in zip(c[m], reps)], t, meta["dims"][m], start=1)
        else:
            for m, key in _KEYS.items():
                t = max((len(r) for r in c[m]), default=0)
                d[key] = _padded(c[m], t, meta["dims"][m])
                d[f"{key}_lengths"] = np.array([len(r) for r in c[m]], dtype=np.int64)
        out[split] = d
    with open(path, "wb") as f:
        pickle.dump(out, f, protocol=4)


def to_mag(features_dir: str | Path, path: str | Path) -> None:
    """Write ``features_dir`` (one acoustic / visual row per word) as a MAG-BERT pickle."""
    features_dir = Path(features_dir)
    meta = read_meta(features_dir)
    out: dict[str, list[Any]] = {}
    for split, name in zip(SPLITS, ("train", "dev", "test")):
        c = _split_columns(features_dir, split, meta)
        out[name] = [((list(w), v, a), np.array([[y]], dtype=np.float32), sid)
                     for w, v, a, y, sid in zip(c["words"], c["visual"], c["acoustic"], c["label"], c["id"])]
    with open(path, "wb") as f:
        pickle.dump(out, f, protocol=4)
