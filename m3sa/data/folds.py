"""Train/valid/test folds by video: the standard MOSI/MOSEI folds, a JSON file, or random.

The standard folds (the video ids published with the CMU-MultimodalSDK) ship inside the
package as ``m3sa/data/folds/{mosi,mosei}_standard_folds.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from m3sa.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
STANDARD = {"mosi": "mosi_standard_folds.json", "mosei": "mosei_standard_folds.json"}


@dataclass
class FoldAssignment:
    """Which split each labelled video goes to, and what did not match."""

    split_of: dict[str, str]  # video -> split
    unknown: list[str] = field(default_factory=list)  # fold ids absent from the labels
    unassigned: list[str] = field(default_factory=list)  # labelled videos in no fold


def parse_folds(raw: object, where: str) -> dict[str, list[str]]:
    """Validate ``{"train": [...], "valid": [...], "test": [...]}`` (missing splits = empty).

    Other keys holding plain text (``dataset``, ``source``) are ignored; a list under an
    unknown key is an error, as is a video in two splits.
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where}: folds must be a JSON object with keys train, valid, test")
    folds: dict[str, list[str]] = {}
    for key, value in raw.items():
        if key not in SPLITS:
            if isinstance(value, list):
                raise DataError(f"{where}: unknown split '{key}'; use train, valid, test")
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{where}: '{key}' must be a list of video ids (strings)")
        folds[key] = list(value)
    if not folds:
        raise DataError(f"{where}: no split found; expected keys train, valid, test")
    seen: dict[str, str] = {}
    for split in SPLITS:
        for vid in folds.setdefault(split, []):
            if vid in seen:
                raise DataError(f"{where}: video '{vid}' is in both '{seen[vid]}' and '{split}'")
            seen[vid] = split
    if not folds["train"]:
        raise DataError(f"{where}: the train split is empty")
    return folds


def read_folds_file(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: folds file not found")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    return parse_folds(raw, str(path))


def standard_folds(name: str) -> dict[str, list[str]]:
    """The standard folds of ``mosi`` or ``mosei``, shipped with the package."""
    res = resources.files("m3sa.data").joinpath("folds", STANDARD[name])
    return parse_folds(json.loads(res.read_text()), f"m3sa/data/folds/{STANDARD[name]}")


def random_folds(videos: Sequence[str], seed: int, fractions: Sequence[float]) -> dict[str, list[str]]:
    """A seeded split by video; at least one training video."""
    vids = sorted(set(videos))
    order = np.random.default_rng(seed).permutation(len(vids))
    n_train = max(1, int(round(fractions[0] * len(vids))))
    n_valid = min(len(vids) - n_train, int(round(fractions[1] * len(vids))))
    parts = np.split(order, [n_train, n_train + n_valid])
    return {s: sorted(vids[i] for i in p) for s, p in zip(SPLITS, parts)}


def resolve_folds(spec: str, videos: Sequence[str], seed: int = 0,
                  fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> dict[str, list[str]]:
    """``data.folds``: ``mosi`` | ``mosei`` | ``random`` | path to a JSON file."""
    if spec in STANDARD:
        return standard_folds(spec)
    if spec == "random":
        return random_folds(videos, seed, fractions)
    path = Path(spec)
    if path.suffix.lower() != ".json" and not path.exists():
        raise ConfigError(f"params: 'data.folds' = {spec!r} is not allowed; choose mosi, mosei, random, "
                          "or the path of a JSON file of video ids per split")
    return read_folds_file(path)


def assign_folds(folds: dict[str, list[str]], videos: Sequence[str], where: str = "folds") -> FoldAssignment:
    """Match folds to the labelled ``videos``; mismatches are reported, not fatal."""
    labelled = set(videos)
    split_of = {v: s for s in SPLITS for v in folds.get(s, []) if v in labelled}
    unknown = sorted(v for s in SPLITS for v in folds.get(s, []) if v not in labelled)
    unassigned = sorted(labelled - set(split_of))
    if unknown:
        log.warning("%s: %d fold video id(s) not in the labels (e.g. %s); recorded in meta.json",
                    where, len(unknown), ", ".join(unknown[:3]))
    if unassigned:
        log.warning("%s: %d labelled video(s) in no fold are excluded (e.g. %s)", where, len(unassigned),
                    ", ".join(unassigned[:3]))
    if not any(s == "train" for s in split_of.values()):
        raise DataError(f"{where}: no video of the train fold is in the labels; check data.folds against the "
                        "label file's video ids")
    return FoldAssignment(split_of, unknown, unassigned)
