"""The training data: meta.json and the tokenised train and valid splits, read once per run."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3sa.config import Config
from m3sa.data.dataset import SplitData, load_split, read_meta
from m3sa.errors import TrainingError
from m3sa.tokenization import load_word_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """meta.json and the tokenised train and valid splits (shared by all seeds)."""

    meta: dict[str, Any]
    train: SplitData
    valid: SplitData

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.meta["modalities"])

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.meta.get("dims", {}).items() if m in self.modalities}


def load_training_data(cfg: Config, features_dir: str | Path | None = None) -> TrainingData:
    """Read meta.json, tokenise the train and valid splits once."""
    features_dir = Path(features_dir or cfg.data.features_dir)
    meta = read_meta(features_dir)
    tok = load_word_tokenizer(cfg.model.text_encoder) if "language" in meta["modalities"] else None
    t0 = time.perf_counter()
    train = load_split(features_dir, "train", tok, cfg.model.max_tokens, meta)
    valid = load_split(features_dir, "valid", tok, cfg.model.max_tokens, meta)
    log.info("data: %d train / %d valid segments, modalities %s (%.1fs)", len(train), len(valid),
             ",".join(meta["modalities"]), time.perf_counter() - t0)
    if len(train) == 0 or len(valid) == 0:
        raise TrainingError(f"{features_dir}: the train and valid splits must not be empty "
                            f"(train {len(train)}, valid {len(valid)} segments)")
    return TrainingData(meta, train, valid)
