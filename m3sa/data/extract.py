"""CSD files in, Parquet out: segments, word-level alignment, cleaning, standardisation.

Segments come from the label rows; a segment's words and frames are those overlapping its
interval (:mod:`m3sa.data.align`). With ``data.align: words`` every non-silence word gets
the mean of the acoustic/visual frames overlapping it (DESIGN section 2); with ``none`` the
frame sequences are kept (every ``downsample``-th frame, at most ``max_frames``).

The extractor streams one video at a time, so memory does not grow with the number of
videos. Pass 1 writes unstandardised rows per split to temporary Parquet files while
merging train-split statistics (Chan et al.'s parallel mean/variance); pass 2 rewrites
them standardised with those statistics. Outputs appear only once complete (temp file,
then rename); on any error no partial output remains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from m3sa.config import DataConfig
from m3sa.data.align import EPSILON, float32_tolerance, overlap_members, sum_members
from m3sa.data.csd import SILENCE, CSDReader
from m3sa.data.features import FRAME_MODALITIES, SPLITS, features_schema
from m3sa.data.folds import assign_folds, read_folds_file, resolve_folds
from m3sa.data.sample import FILES as SAMPLE_FILES
from m3sa.errors import ConfigError, CSDError, DataError, OutputError

log = logging.getLogger(__name__)

LABEL_RANGE = 3.0
_FLUSH_BYTES = 32 << 20  # row-group size of the Parquet files, roughly


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class _Hasher(threading.Thread):
    """Hashes the input files beside the extraction (hashlib and file reads release the GIL)."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__(daemon=True)
        self.paths = paths
        self.digests: dict[str, str] = {}
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            for p in self.paths:
                self.digests[p.name] = _sha256(p)
        except OSError as err:
            self.error = err

    def result(self) -> dict[str, str]:
        self.join()
        if self.error is not None:
            raise DataError(f"{self.error.filename}: cannot be read to hash it ({self.error.strerror})")
        return self.digests


# ----------------------------------------------------------------------------- statistics

@dataclass
class RunningStats:
    """Per-feature count, mean and sum of squared deviations, merged batch by batch."""

    dim: int
    n: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim)
        self.m2 = np.zeros(self.dim)

    def update(self, x: np.ndarray) -> None:
        """Merge rows x (r, dim) (Chan, Golub & LeVeque's pairwise update)."""
        if not len(x):
            return
        x = x.astype(np.float64, copy=False)
        nb = len(x)
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        delta = mb - self.mean
        n = self.n + nb
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n

    def std(self) -> np.ndarray:
        """Population std; 1 where a feature is constant (so it standardises to 0)."""
        if self.n == 0:
            return np.ones(self.dim)
        s = np.sqrt(self.m2 / self.n)
        return np.where(s > 1e-6, s, 1.0)


# ----------------------------------------------------------------------------- writing

class _SplitWriter:
    """Buffers segment rows of one split and writes them as Parquet row groups."""

    def __init__(self, path: Path, schema: pa.Schema, frame_mods: list[str], dims: dict[str, int],
                 compression: str) -> None:
        self.path = path
        self.schema = schema
        self.frame_mods = frame_mods
        self.dims = dims
        self.writer = pq.ParquetWriter(path, schema, compression=compression)
        self.rows = 0
        self._clear()

    def _clear(self) -> None:
        self.cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self.seqs: dict[str, list[np.ndarray]] = {m: [] for m in self.frame_mods}
        self.bytes = 0

    def add(self, row: dict[str, Any], seqs: dict[str, np.ndarray]) -> None:
        for name, value in row.items():
            self.cols[name].append(value)
        for m, x in seqs.items():
            self.seqs[m].append(x)
            self.cols[f"{m}_len"].append(len(x))
            self.bytes += x.nbytes
        if self.bytes >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        n = len(self.cols["segment_id"])
        if not n:
            return
        arrays = []
        for f in self.schema:
            if f.name in self.seqs:
                arrays.append(_nested(self.seqs[f.name], self.dims[f.name]))
            else:
                arrays.append(pa.array(self.cols[f.name], type=f.type))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.rows += n
        self._clear()

    def close(self) -> None:
        self.flush()
        self.writer.close()

    def abort(self) -> None:
        """Close without flushing (the file is deleted by the caller)."""
        if self.writer.is_open:
            self.writer.close()


def _nested(rows: list[np.ndarray], dim: int) -> pa.Array:
    """list<list<float32>> from per-segment (r_i, dim) arrays, without Python loops over values."""
    counts = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    outer = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(counts, out=outer[1:])
    flat = np.concatenate([r.reshape(-1) for r in rows]).astype(np.float32, copy=False) if rows else \
        np.zeros(0, np.float32)
    inner = pa.ListArray.from_arrays(pa.array(np.arange(0, outer[-1] * dim + 1, dim, dtype=np.int32)),
                                     pa.array(flat))
    return pa.ListArray.from_arrays(pa.array(outer), inner)


def _standardise_column(col: pa.ChunkedArray, mean: np.ndarray, std: np.ndarray) -> pa.Array:
    """(x - mean) / std on a list<list<float32>> column; NaN rows (words without frames) -> 0."""
    arr = col.combine_chunks()
    inner = arr.values
    dim = len(mean)
    lo, hi = int(arr.offsets[0].as_py()), int(arr.offsets[-1].as_py())
    inner = inner.slice(lo, hi - lo)
    flat = inner.values.to_numpy(zero_copy_only=False)
    a, b = int(inner.offsets[0].as_py()), int(inner.offsets[-1].as_py())
    x = flat[a:b].reshape(-1, dim)  # (total_rows, dim)
    z = ((x - mean) / std).astype(np.float32)
    z[np.isnan(z)] = 0.0
    new_inner = pa.ListArray.from_arrays(pa.array(np.arange(0, len(z) * dim + 1, dim, dtype=np.int32)),
                                         pa.array(z.reshape(-1)))
    offsets = arr.offsets.to_numpy() - lo
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), new_inner)


# ----------------------------------------------------------------------------- one video

@dataclass
class _Report:
    dropped: list[dict[str, str]] = field(default_factory=list)
    nonfinite: dict[str, int] = field(default_factory=dict)
    empty_words: dict[str, int] = field(default_factory=dict)  # words no frame overlaps
    empty_segments: dict[str, int] = field(default_factory=dict)  # align=none: segments without frames
    truncated: int = 0

    def drop(self, segment_id: str, video: str, reason: str) -> None:
        self.dropped.append({"segment_id": segment_id, "video_id": video, "reason": reason})


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
    bad = ~np.isfinite(sums).all(axis=1)
    if bad.any():  # a non-finite frame (or an overflow) in some words: clean their frames only
        owner = np.repeat(np.arange(len(counts)), counts)
        rows = np.unique(indices[bad[owner]])
        replaced = _clean(x, rows, value)
        sums = sum_members(x.astype(np.float64), indptr, indices)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts[:, None]).astype(np.float32)  # (w, d); NaN where counts == 0
    return means, replaced, int((counts == 0).sum())


def _segment_tolerances(intervals: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Edge tolerances for segment intervals: float32 storage rounds by up to half a step."""
    if intervals.dtype.itemsize < 8:
        return float32_tolerance(intervals[:, 0]), float32_tolerance(intervals[:, 1])
    return EPSILON, EPSILON


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
    bad = np.flatnonzero(~np.isfinite(y) | (np.abs(y) > LABEL_RANGE))
    if len(bad):
        k = int(bad[0])
        what = "is NaN" if np.isnan(y[k]) else f"= {y[k]:g} is outside [-3, 3]"
        raise DataError(f"{reader.path}: video '{video}', row {k}: label {what}; fix or remove the row")
    return y, ivs


def _video_rows(video: str, split: str, cfg: DataConfig, streams: _Streams, report: _Report,
                gt: dict[str, dict[str, bool]] | None) -> tuple[list[dict[str, Any]], list[dict[str, np.ndarray]]]:
    """Rows (scalar columns) and sequences (per frame modality) of one video's kept segments."""
    y, seg_iv = _labels_of(streams.labels, video, cfg.label_column)
    n = len(y)
    ids = [f"{video}[{k}]" for k in range(n)]
    keep = np.ones(n, dtype=bool)
    length = seg_iv[:, 1].astype(np.float64) - seg_iv[:, 0]
    for k in np.flatnonzero(~np.isfinite(length) | (length <= EPSILON)):
        reason = ("non-finite interval" if not np.isfinite(length[k]) else
                  f"reversed interval (end < start: {seg_iv[k, 0]:g} > {seg_iv[k, 1]:g})" if length[k] < -EPSILON
                  else f"zero-length interval ({seg_iv[k, 0]:g}-{seg_iv[k, 1]:g} s)")
        report.drop(ids[k], video, reason)
        keep[k] = False
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m, reader in streams.readers.items():
        if video not in reader:
            if cfg.on_missing == "error":
                raise DataError(f"{reader.path}: video '{video}' (in the labels) is missing; add it, or set "
                                "data.on_missing: drop")
            for k in np.flatnonzero(keep):
                report.drop(ids[k], video, f"video missing from the {m} file {reader.path.name}")
            return [], []
        feats, ivs = reader.get(video)
        if m == "language":
            if feats.dtype.kind not in "SUO":
                raise CSDError(f"{reader.path}: video '{video}': words must be byte strings, got dtype {feats.dtype}")
        else:
            _check_frames(reader, video, feats, streams.dims[m])
            if not feats.flags.writeable or feats.dtype != np.float32:
                feats = feats.astype(np.float32)
        data[m] = (feats, ivs.astype(np.float64, copy=False))
    segs = np.flatnonzero(keep)
    q = seg_iv[segs].astype(np.float64)
    tol0, tol1 = _segment_tolerances(seg_iv)
    if not np.isscalar(tol0):
        tol0, tol1 = tol0[segs], tol1[segs]  # type: ignore[index]

    words_of: dict[int, np.ndarray] = {}  # segment -> kept word indices
    if "language" in data:
        wfeat, wiv = data["language"]
        tokens = wfeat.reshape(-1)
        if tokens.dtype.kind in "SU":
            is_word = tokens != (SILENCE.encode() if tokens.dtype.kind == "S" else SILENCE)
        else:
            is_word = np.array([(t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)) != SILENCE
                                for t in tokens], dtype=bool)
        indptr, indices = overlap_members(wiv, q, EPSILON, tol0, tol1)
        for j, k in enumerate(segs):
            w = indices[indptr[j]:indptr[j + 1]]
            w = w[is_word[w]]
            if not len(w):
                report.drop(ids[k], video, "no words in the segment interval")
                keep[k] = False
                continue
            if len(w) > cfg.max_words:
                report.truncated += 1
                w = w[: cfg.max_words]
            words_of[int(k)] = w

    seqs: dict[int, dict[str, np.ndarray]] = {int(k): {} for k in np.flatnonzero(keep)}
    for m in FRAME_MODALITIES:
        if m not in data:
            continue
        x, fiv = data[m]
        if not seqs:
            continue
        if cfg.align == "words":
            used = np.unique(np.concatenate([words_of[k] for k in seqs]))
            means, replaced, empty = _word_means(x, fiv, wiv[used], cfg.nonfinite_value)
            report.nonfinite[m] = report.nonfinite.get(m, 0) + replaced
            report.empty_words[m] = report.empty_words.get(m, 0) + empty
            for k in seqs:
                seqs[k][m] = means[np.searchsorted(used, words_of[k])]  # (words, d)
        else:
            kept = np.flatnonzero(keep)
            pos = np.searchsorted(segs, kept)
            indptr, indices = overlap_members(fiv, q[pos], EPSILON,
                                              tol0 if np.isscalar(tol0) else tol0[pos],  # type: ignore[index]
                                              tol1 if np.isscalar(tol1) else tol1[pos])  # type: ignore[index]
            picks = [indices[indptr[j]:indptr[j + 1]][:: cfg.downsample][: cfg.max_frames] for j in range(len(kept))]
            used = np.unique(np.concatenate(picks))
            report.nonfinite[m] = report.nonfinite.get(m, 0) + _clean(x, used, cfg.nonfinite_value)
            for k, p in zip(kept, picks):
                seqs[int(k)][m] = x[p]  # (frames, d)
                if not len(p):
                    report.empty_segments[m] = report.empty_segments.get(m, 0) + 1

    rows: list[dict[str, Any]] = []
    out_seqs: list[dict[str, np.ndarray]] = []
    words_text = None
    if "language" in data:
        words_text = data["language"][0].reshape(-1)
    for k in seqs:
        row: dict[str, Any] = {"segment_id": ids[k], "video_id": video, "split": split,
                               "start": float(seg_iv[k, 0]), "end": float(seg_iv[k, 1]), "label": float(y[k])}
        if words_text is not None:
            row["words"] = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t)
                            for t in words_text[words_of[k]]]
        if gt is not None:
            g = gt.get(ids[k], {})
            for m in ("language", "acoustic", "visual"):
                row[f"gt_{m}"] = g.get(m)
        rows.append(row)
        out_seqs.append(seqs[k])
    return rows, out_seqs


# ----------------------------------------------------------------------------- entry point

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


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def extract(cfg: DataConfig, progress: bool = True) -> dict[str, Any]:
    """Extract ``cfg.features_dir/{train,valid,test}.parquet`` and ``meta.json`` from CSD input.

    Returns the meta dict written to ``meta.json`` (docs/architecture.md).
    """
    t_start = time.perf_counter()
    inputs = resolve_inputs(cfg)
    if cfg.align == "words" and inputs.files["language"] is None:
        raise ConfigError("params: 'data.align' = 'words' needs a words file; set data.files.words or use "
                          "data.align: none")
    with contextlib.ExitStack() as stack:
        labels = stack.enter_context(CSDReader(inputs.files["labels"]))  # type: ignore[arg-type]
        readers = {m: stack.enter_context(CSDReader(p)) for m in ("language", *FRAME_MODALITIES)
                   if (p := inputs.files[m]) is not None}
        return _extract(cfg, inputs, labels, readers, progress, t_start)


def _extract(cfg: DataConfig, inputs: Inputs, labels: CSDReader, readers: dict[str, CSDReader],
             progress: bool, t_start: float) -> dict[str, Any]:
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
    hasher = _Hasher(hashed)
    hasher.start()

    out = Path(cfg.features_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    schema = features_schema(modalities, gt is not None)
    frame_mods = [m for m in FRAME_MODALITIES if m in readers]
    streams = _Streams(readers={m: readers[m] for m in modalities}, labels=labels, dims=dims)
    report = _Report(nonfinite={m: 0 for m in frame_mods}, empty_words={m: 0 for m in frame_mods},
                     empty_segments={m: 0 for m in frame_mods})
    stats = {m: RunningStats(dims[m]) for m in frame_mods}
    raw = {s: out / f".{s}.raw.parquet.tmp" for s in SPLITS}
    final = {s: out / f".{s}.parquet.tmp" for s in SPLITS}
    temps = [*raw.values(), *final.values(), out / ".meta.json.tmp"]
    two_pass = bool(frame_mods)  # pass 2 standardises and sets words without frames to 0
    writers: dict[str, _SplitWriter] = {}
    try:
        for s in SPLITS:
            writers[s] = _SplitWriter((raw if two_pass else final)[s], schema, frame_mods, dims,
                                      "none" if two_pass else "snappy")
        todo = [v for v in videos if v in assignment.split_of]
        for video in tqdm(todo, desc="extract", unit="video", disable=None if progress else True, leave=False):
            split = assignment.split_of[video]
            rows, seqs = _video_rows(video, split, cfg, streams, report, gt)
            for row, seq in zip(rows, seqs):
                writers[split].add(row, seq)
            if split == "train" and cfg.standardize and seqs:
                for m in frame_mods:
                    x = np.concatenate([seq[m] for seq in seqs])  # (rows of the video, d)
                    stats[m].update(x[~np.isnan(x).any(axis=1)])
        for w in writers.values():
            w.close()
        counts = {s: writers[s].rows for s in SPLITS}
        if counts["train"] == 0:
            raise DataError(f"{labels.path}: no train segment left after matching folds and dropping bad "
                            "segments; check data.folds and the dropped segments")
        if two_pass:
            for s in SPLITS:
                _rewrite_standardised(raw[s], final[s], schema, dims, stats if cfg.standardize else None)
                raw[s].unlink()
        standardization = {m: {"mean": stats[m].mean.tolist(), "std": stats[m].std().tolist()} for m in frame_mods}
        meta = {
            "format": "m3sa-features", "version": 1,
            "source": inputs.source, "align": cfg.align, "modalities": modalities, "dims": dims,
            "counts": counts,
            "videos": {s: sum(1 for v in assignment.split_of.values() if v == s) for s in SPLITS},
            "label_column": cfg.label_column,
            "dropped": report.dropped,
            "nonfinite": report.nonfinite,
            "words_without_frames": report.empty_words if cfg.align == "words" else {},
            "segments_without_frames": report.empty_segments if cfg.align == "none" else {},
            "truncated_segments": report.truncated,
            "fold_ids_not_in_labels": assignment.unknown,
            "videos_in_no_fold": assignment.unassigned,
            "standardization": standardization if cfg.standardize else {},
            "inputs": hasher.result(),
            "has_ground_truth": gt is not None,
            "params": json.loads(json.dumps(dataclasses.asdict(cfg))),
        }
        for s in SPLITS:
            os.replace(final[s], out / f"{s}.parquet")
        _atomic_json(out / "meta.json", meta)
    except OSError as err:
        raise OutputError(f"{out}: cannot write the features ({err.strerror or err})") from None
    finally:
        for w in writers.values():
            w.abort()
        for t in temps:
            t.unlink(missing_ok=True)
    log.info("extract: %s segments (train/valid/test), %d dropped, non-finite replaced %s, %.1f s -> %s",
             "/".join(str(counts[s]) for s in SPLITS), len(report.dropped), report.nonfinite,
             time.perf_counter() - t_start, out)
    return meta


def _rewrite_standardised(src: Path, dst: Path, schema: pa.Schema, dims: dict[str, int],
                          stats: dict[str, RunningStats] | None) -> None:
    """Copy src to dst row group by row group, standardising the sequence columns (stats=None:
    only words without frames are set to 0)."""
    pf = pq.ParquetFile(src)
    with pq.ParquetWriter(dst, schema, compression="snappy") as writer:
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            for m, dim in dims.items():
                mean = stats[m].mean if stats is not None else np.zeros(dim)
                std = stats[m].std() if stats is not None else np.ones(dim)
                idx = table.schema.get_field_index(m)
                table = table.set_column(idx, schema.field(m), _standardise_column(table.column(m), mean, std))
            writer.write_table(table)
