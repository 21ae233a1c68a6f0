"""What an input adapter hands the writer: segments in chunks, a record of what was cleaned, a plan.

The CSD path (:mod:`m3sa.data.csd_chunks`) makes one :class:`Chunk` per video, the pickle
path (:mod:`m3sa.data.pickle_input`) one per block of segments; both record drops and
replaced values in a :class:`Report`, and describe the whole input as a :class:`Plan`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from m3sa.data.provenance import InputHashes


@dataclass
class Chunk:
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


@dataclass
class Report:
    """Segments dropped and values replaced while building chunks (meta.json)."""

    dropped: list[dict[str, str]] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)  # non-finite input values replaced
    empty_words: dict[str, int] = field(default_factory=dict)  # words no frame overlaps
    empty_segments: dict[str, int] = field(default_factory=dict)  # align=none: segments without frames
    truncated: int = 0  # segments cut at data.max_words

    def drop(self, segment_id: str, video: str, reason: str) -> None:
        self.dropped.append({"segment_id": segment_id, "video_id": video, "reason": reason})


@dataclass
class Plan:
    """One extraction's input, whatever its format: what the writer needs."""

    source: str
    modalities: list[str]
    dims: dict[str, int]  # frame modality -> width
    chunks: Iterator[Chunk]  # train split first
    total: int  # chunks, for the progress bar
    unit: str
    has_gt: bool
    report: Report
    hashes: InputHashes
    meta: dict[str, Any]  # source-specific meta.json entries
    no_train: str  # the error when no train segment is left
    # Hold the train chunks in memory until their statistics are known, instead of a raw
    # temporary file and a second pass (the input is in memory anyway: a loaded pickle).
    buffer_train: bool = False


def clean(x: np.ndarray, rows: np.ndarray, value: float) -> int:
    """Replace non-finite values of x[rows] in place; return how many there were."""
    sub = x[rows]
    bad = ~np.isfinite(sub)
    n = int(bad.sum())
    if n:
        sub[bad] = value
        x[rows] = sub
    return n
