"""CSD files or a processed pickle in, Parquet out: segments, alignment, cleaning, standardisation.

An input adapter turns the input into a :class:`~m3sa.data.chunk.Plan`: chunks of kept
segments, train split first. CSD files (:mod:`m3sa.data.csd_input`) give one chunk per
video, aligned and cleaned by :mod:`m3sa.data.csd_chunks`; an MMSA or MAG-BERT pickle
(:mod:`m3sa.data.pickle_input`) one per block of segments. :func:`extract` streams the
chunks into the three splits (:mod:`m3sa.data.split_writer`), so memory does not grow with
the number of videos.

Standardisation (:mod:`m3sa.data.standardize`) uses the train split's statistics, known only
at its end: the train rows go unstandardised to a temporary Arrow file while the statistics
are merged, valid and test rows are standardised on the way, and a second pass rewrites the
train rows one batch at a time (a pickle, in memory anyway, holds its train chunks instead).
Outputs appear only once complete (temporary files, then renames); on any error no partial
output remains. The input files' SHA-256 (meta.json ``inputs``, :mod:`m3sa.data.provenance`)
is computed meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from m3sa.config import DataConfig
from m3sa.data.chunk import Chunk, Plan
from m3sa.data.csd_input import csd_plan
from m3sa.data.features import SPLITS, features_schema
from m3sa.data.pickle_input import pickle_plan
from m3sa.data.split_writer import OutputFiles, SplitWriter, rewrite_standardised
from m3sa.data.standardize import Norm, RunningStats, given_norm, identity_norm, stats_norm
from m3sa.errors import DataError

log = logging.getLogger(__name__)

Statistics = Mapping[str, Mapping[str, Sequence[float]]]  # meta.json's standardization: {m: {"mean", "std"}}


def extract(cfg: DataConfig, progress: bool = True, hash_inputs: bool = True,
            statistics: Statistics | None = None) -> dict[str, Any]:
    """Extract ``cfg.features_dir/{train,valid,test}.parquet`` and ``meta.json`` from the
    input ``cfg.source`` names (CSD files, the embedded sample, an MMSA or MAG-BERT pickle).

    Returns the meta dict written to ``meta.json`` (docs/architecture.md). ``hash_inputs=False``
    leaves ``meta["inputs"]`` empty (benchmarks use it to time the extraction proper).
    ``statistics`` (``{m: {"mean", "std"}}``, as meta.json's ``standardization``): standardise
    every split with these instead of the train split's (inference with a trained model's
    statistics; needs ``cfg.standardize``).
    """
    t_start = time.perf_counter()
    plan = pickle_plan if cfg.source in ("mmsa", "mag") else csd_plan
    with plan(cfg, hash_inputs) as p:
        given = given_norm(statistics, p.dims) if statistics is not None and cfg.standardize else None
        with OutputFiles(Path(cfg.features_dir)) as files:
            counts, norm = _write_splits(p, files, cfg.standardize, given, progress)
            meta = _meta(cfg, p, counts, norm)
            files.publish(json.dumps(meta, indent=1) + "\n")
    log.info("extract: %s segments (train/valid/test), %d dropped, non-finite replaced %s, %.1f s -> %s",
             "/".join(str(counts[s]) for s in SPLITS), len(p.report.dropped), p.report.nonfinite,
             time.perf_counter() - t_start, Path(cfg.features_dir))
    return meta


def _write_splits(plan: Plan, files: OutputFiles, standardize: bool, given: Norm | None,
                  progress: bool) -> tuple[dict[str, int], Norm]:
    """Write the plan's chunks to the splits' temporary files; returns their row counts and the
    standardisation used (``given``, else the train split's).

    Train chunks come first. Unless ``given`` (or nothing to standardise), the train rows wait
    for their own statistics: in the raw Arrow file, rewritten once the split is complete, or
    in memory (``plan.buffer_train``). Valid and test rows are standardised on the way.
    """
    dims = plan.dims
    schema = features_schema(plan.modalities, plan.has_gt)
    stats = {m: RunningStats(d) for m, d in dims.items()}
    learn = standardize and bool(dims) and given is None  # the train statistics are needed first
    two_pass = learn and not plan.buffer_train
    first = given if given is not None else identity_norm(dims)  # identity: only NaN rows -> 0
    held: list[Chunk] = []  # plan.buffer_train: train chunks waiting for the statistics

    def writer(split: str) -> SplitWriter:
        if two_pass and split == "train":  # raw rows, standardised by the second pass
            return SplitWriter(files.raw_train, schema, dims, None)
        return SplitWriter(files.split(split), schema, dims, first)

    with contextlib.ExitStack() as stack:
        writers = {s: stack.enter_context(writer(s)) for s in SPLITS}
        waiting = learn  # for the train statistics
        for chunk in tqdm(plan.chunks, total=plan.total, desc="extract", unit=plan.unit,
                          disable=None if progress else True, leave=False):
            if chunk.split == "train" and waiting:
                _merge(stats, chunk)
                if two_pass:
                    writers["train"].add(chunk)
                else:
                    held.append(chunk)
                continue
            if waiting:  # the first valid or test chunk: the train split is complete
                waiting = False
                _train_complete(writers, held, stats_norm(stats), two_pass)
            writers[chunk.split].add(chunk)
        if waiting:
            _train_complete(writers, held, stats_norm(stats), two_pass)
        for w in writers.values():
            w.close()
    counts = {s: writers[s].rows for s in SPLITS}
    if counts["train"] == 0:
        raise DataError(plan.no_train)
    norm = given if given is not None else stats_norm(stats)
    if two_pass:
        rewrite_standardised(files.raw_train, files.split("train"), schema, norm)
    return counts, norm


def _merge(stats: dict[str, RunningStats], chunk: Chunk) -> None:
    """Merge a train chunk's rows into the statistics; NaN rows (words without frames) left out."""
    if not len(chunk):
        return
    for m, st in stats.items():
        x = np.concatenate(chunk.seqs[m])  # (rows of the chunk, d)
        st.update(x[~np.isnan(x).any(axis=1)])


def _train_complete(writers: dict[str, SplitWriter], held: list[Chunk], norm: Norm, two_pass: bool) -> None:
    """The train statistics are known: standardise with them from now on, and write the held chunks."""
    for s, w in writers.items():
        if s != "train" or not two_pass:
            w.norm = norm
    for c in held:
        writers["train"].add(c)
    held.clear()


def _meta(cfg: DataConfig, plan: Plan, counts: dict[str, int], norm: Norm) -> dict[str, Any]:
    """meta.json (docs/architecture.md); waits for the input hashes."""
    report = plan.report
    standardization = {m: {"mean": mean.tolist(), "std": std.tolist()} for m, (mean, std) in norm.items()}
    return {
        "format": "m3sa-features", "version": 1,
        "source": plan.source, "align": plan.meta["align"], "modalities": plan.modalities, "dims": plan.dims,
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
        "inputs": plan.hashes.result(),
        "has_ground_truth": plan.has_gt,
        "params": json.loads(json.dumps(dataclasses.asdict(cfg))),
    }
