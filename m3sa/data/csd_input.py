"""CSD files (``data.source: csd``, or the embedded ``sample``) as a plan for the writer.

Where the files, folds and ground truth are (:func:`resolve_inputs`), which split each
video goes to, and the videos in order, train first, each a chunk
(:func:`m3sa.data.csd_chunks.video_chunk`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from m3sa.config import DataConfig
from m3sa.data.chunk import Plan, Report
from m3sa.data.csd import CSDReader
from m3sa.data.csd_chunks import Streams, video_chunk
from m3sa.data.features import FRAME_MODALITIES, SPLITS
from m3sa.data.folds import assign_folds, read_folds_file, resolve_folds
from m3sa.data.provenance import InputHashes
from m3sa.data.sample import FILES as SAMPLE_FILES
from m3sa.errors import ConfigError, CSDError, DataError


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


def _hashed(cfg: DataConfig, inputs: Inputs) -> list[Path]:
    """The files meta.json records the SHA-256 of: CSD files, folds, ground truth."""
    paths = [p for p in inputs.files.values() if p is not None]
    paths += [p for p in (inputs.folds_file, inputs.ground_truth) if p is not None]
    if cfg.folds not in ("mosi", "mosei", "random") and inputs.source == "csd":
        paths.append(Path(cfg.folds))
    return paths


@contextlib.contextmanager
def csd_plan(cfg: DataConfig, hash_inputs: bool) -> Iterator[Plan]:
    """The CSD input of ``cfg`` as a plan; its files stay open, and are hashed, inside the context."""
    inputs = resolve_inputs(cfg)
    if cfg.align == "words" and inputs.files["language"] is None:
        raise ConfigError("params: 'data.align' = 'words' needs a words file; set data.files.words or use "
                          "data.align: none")
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(CSDReader(inputs.files["labels"]))  # type: ignore[arg-type]
        readers = {m: stack.enter_context(CSDReader(p)) for m in ("language", *FRAME_MODALITIES)
                   if (p := inputs.files[m]) is not None}
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
        if inputs.folds_file is not None:
            folds = read_folds_file(inputs.folds_file)
            folds_where = str(inputs.folds_file)
        else:
            folds = resolve_folds(cfg.folds, videos, cfg.split_seed, cfg.split_fractions)
            folds_where = f"data.folds ({cfg.folds})"
        assignment = assign_folds(folds, videos, folds_where)
        gt = _load_ground_truth(inputs.ground_truth) if inputs.ground_truth is not None else None
        streams = Streams(readers=readers, labels=labels, dims=dims)
        report = Report(nonfinite={m: 0 for m in dims}, empty_words={m: 0 for m in dims},
                        empty_segments={m: 0 for m in dims})
        todo = sorted((v for v in videos if v in assignment.split_of),
                      key=lambda v: assignment.split_of[v] != "train")  # stable: label-file order within
        chunks = (video_chunk(v, assignment.split_of[v], cfg, streams, report, gt) for v in todo)
        meta = {
            "align": cfg.align,
            "videos": {s: sum(1 for v in assignment.split_of.values() if v == s) for s in SPLITS},
            "fold_ids_not_in_labels": assignment.unknown,
            "videos_in_no_fold": assignment.unassigned,
        }
        hashes = stack.enter_context(InputHashes(_hashed(cfg, inputs) if hash_inputs else []))
        yield Plan(inputs.source, list(readers), dims, chunks, len(todo), "video", gt is not None, report, hashes,
                   meta, f"{labels.path}: no train segment left after matching folds and dropping bad segments; "
                   "check data.folds and the dropped segments")
