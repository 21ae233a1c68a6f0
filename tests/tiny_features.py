"""Tiny planted feature sets written as data/features (Parquet per split + meta.json).

Follows the schema of docs/architecture.md exactly, so the training and evaluation tests do
not depend on the sample/extract stages. The sentiment y ~ U(-3, 3) is planted in the words
(sentiment words whose polarity follows the sign of y) and in acoustic feature 0 (y / 3 plus
small noise on every word row); the visual rows are pure noise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

POSITIVE = ["good", "great", "happy", "love", "nice", "best"]
NEGATIVE = ["bad", "awful", "sad", "hate", "poor", "worst"]
NEUTRAL = ["the", "a", "movie", "it", "was", "and", "this", "so"]
DIMS = {"acoustic": 5, "visual": 4}
#: model section of a small, fast M3SA for these features (tiny random BERT, d = 16)
TINY_MODEL = {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2, "head_hidden": 16, "filter_hidden": 8,
              "dropout": 0.0, "max_tokens": 24}


def make_rows(n: int, split: str, rng: np.random.Generator, modalities: tuple[str, ...],
              dims: dict[str, int]) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {k: [] for k in ("segment_id", "video_id", "split", "start", "end", "label", "words")}
    for m in ("acoustic", "visual"):
        if m in modalities:
            rows[m], rows[f"{m}_len"] = [], []
    for m in ("language", "acoustic", "visual"):
        rows[f"gt_{m}"] = []
    for i in range(n):
        y = float(rng.uniform(-3, 3))
        k = int(rng.integers(3, 9))
        strength = min(3, int(abs(y)) + 1)
        pool = POSITIVE if y > 0 else NEGATIVE
        words = list(rng.choice(NEUTRAL, size=k)) + list(rng.choice(pool, size=strength))
        rng.shuffle(words)
        video = f"{split}{i // 4:03d}"
        rows["segment_id"].append(f"{video}[{i % 4}]")
        rows["video_id"].append(video)
        rows["split"].append(split)
        rows["start"].append(float(i))
        rows["end"].append(float(i) + 1.5)
        rows["label"].append(y)
        rows["words"].append([str(w) for w in words])
        n_words = len(words)
        for m in ("acoustic", "visual"):
            if m not in modalities:
                continue
            feats = rng.normal(0, 1, size=(n_words, dims[m])).astype(np.float32)
            if m == "acoustic":
                feats[:, 0] = y / 3 + 0.1 * rng.normal(size=n_words)
            rows[m].append(feats.tolist())
            rows[f"{m}_len"].append(n_words)
        rows["gt_language"].append(True)
        rows["gt_acoustic"].append(True)
        rows["gt_visual"].append(False)
    return rows


def schema(modalities: tuple[str, ...]) -> pa.Schema:
    fields = [("segment_id", pa.string()), ("video_id", pa.string()), ("split", pa.string()),
              ("start", pa.float64()), ("end", pa.float64()), ("label", pa.float32()),
              ("words", pa.list_(pa.string()))]
    for m in ("acoustic", "visual"):
        if m in modalities:
            fields += [(m, pa.list_(pa.list_(pa.float32()))), (f"{m}_len", pa.int32())]
    fields += [(f"gt_{m}", pa.bool_()) for m in ("language", "acoustic", "visual")]
    return pa.schema(fields)


def write_features(root: str | Path, sizes: tuple[int, int, int] = (96, 32, 32), seed: int = 0,
                   modalities: tuple[str, ...] = ("language", "acoustic", "visual"),
                   dims: dict[str, int] | None = None) -> Path:
    """Write ``root/{train,valid,test}.parquet`` and ``root/meta.json``; return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dims = {m: d for m, d in (dims or DIMS).items() if m in modalities}
    rng = np.random.default_rng(seed)
    counts = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        rows = make_rows(n, split, rng, modalities, dims)
        pq.write_table(pa.table(rows, schema=schema(modalities)), root / f"{split}.parquet")
        counts[split] = n
    meta = {"source": "sample", "align": "words", "modalities": list(modalities), "dims": dims, "counts": counts,
            "dropped": [], "nonfinite": {m: 0 for m in dims},
            "standardization": {m: {"mean": [0.0] * d, "std": [1.0] * d} for m, d in dims.items()},
            "inputs": {}, "has_ground_truth": True, "params": {}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root
