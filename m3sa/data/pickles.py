"""The two processed-pickle layouts most CMU-MOSI / CMU-MOSEI users hold, read as segments.

**MMSA** (thuiar/MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl``, SIMS ``unaligned_39.pkl``):
``{"train", "valid", "test"}``, each a dict of arrays over its N segments: ``raw_text``,
``id`` (``"video$_$clip"``), ``audio`` (N, T_a, d_a), ``vision`` (N, T_v, d_v),
``regression_labels`` (N,), and either ``audio_lengths`` / ``vision_lengths`` (unaligned:
the first ``length`` frames are real) or ``text_bert`` (N, 3, L: token ids, mask, segment
ids) whose mask gives the rows (aligned: row 0 is ``[CLS]``, rows 1..n the WordPiece tokens of
``raw_text``, row n+1 ``[SEP]``, then padding; MMSA's own loader takes the mask sum as the
length). Here an aligned segment keeps its n token rows (``[CLS]`` / ``[SEP]`` dropped: the
text encoder adds its own), so a word split into k WordPieces has k rows; the project's own
word alignment (``data.align=words`` on CSD) has one row per word. ``text`` (pre-computed BERT
features) is not used: the text encoder runs on ``raw_text``.

**MAG-BERT** (WasifurRahman/BERT_multimodal_transformer ``mosi.pkl`` / ``mosei.pkl``):
``{"train" | "dev" | "test": [((words, visual, acoustic), label, segment), ...]}`` with one
visual and acoustic row per word, the project's word alignment.

Splits come from the file (MAG's ``dev`` is ``valid``). Segment ids become
``video[clip]``, as on the CSD path. The file is loaded with :func:`load_pickle`
(an allowlist, nothing in it runs). Structural problems are one :class:`PickleFileError`
line; segment-level problems (empty text) are left to the extractor's drop-and-record policy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3sa.data.features import SPLITS, first_bad_label
from m3sa.errors import PickleFileError

log = logging.getLogger(__name__)

LAYOUTS = ("mmsa", "mag")
_NAME = {"mmsa": "MMSA", "mag": "MAG-BERT"}

# SHA-256 published in thuiar/MMSA's README -> (name, dataset, rows).
OFFICIAL: dict[str, tuple[str, str, str]] = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": ("MMSA MOSI unaligned_50.pkl", "MOSI", "frames"),
    "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9": ("MMSA MOSI aligned_50.pkl", "MOSI", "tokens"),
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": ("MMSA MOSEI unaligned_50.pkl", "MOSEI", "frames"),
    "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791": ("MMSA MOSEI aligned_50.pkl", "MOSEI", "tokens"),
    "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f": ("MMSA SIMS unaligned_39.pkl", "SIMS", "frames"),
}

ROWS_ALIGN = {"words": "words", "tokens": "tokens", "frames": "none"}  # rows -> meta.json "align"
_MMSA_KEYS = ("raw_text", "id", "audio", "vision", "regression_labels")
_MAG_SPLITS = {"train": "train", "valid": "dev", "test": "test"}
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af])")


@dataclass(frozen=True)
class Segment:
    """One segment as the file holds it (rows are views into the file's arrays)."""

    split: str
    segment_id: str
    video_id: str
    words: list[str]
    label: float
    rows: dict[str, np.ndarray]  # "acoustic" / "visual" -> (r, d)


@dataclass
class PickleData:
    """A validated pickle: its widths, row kind and segments (train first)."""

    path: Path
    layout: str  # mmsa | mag
    rows: str  # words | tokens | frames
    dims: dict[str, int]
    counts: dict[str, int]
    splits: dict[str, Any] = field(repr=False)  # split -> the file's object for it
    unused: list[str] = field(default_factory=list)  # keys in the file that are not read
    keys: dict[str, list[tuple[str, str]]] = field(default_factory=dict, repr=False)  # split -> (segment, video)

    def segments(self) -> Iterator[Segment]:
        """Every segment, split by split in :data:`SPLITS` order, file order within."""
        reader = _mmsa_segments if self.layout == "mmsa" else _mag_segments
        for split in SPLITS:
            yield from reader(self, split)


def words_of(text: str) -> list[str]:
    """Whitespace-separated words; CJK characters are one word each (SIMS text has no spaces)."""
    return _CJK.sub(r" \1 ", text).split()


def recognise(sha256: str | None) -> str:
    """"MMSA MOSI aligned_50.pkl, official" for a published file, else "unrecognised pickle"."""
    known = OFFICIAL.get(sha256 or "")
    return f"{known[0]}, official" if known else "unrecognised pickle"


def segment_key(raw: Any, path: Path, where: str) -> tuple[str, str]:
    """``(segment_id, video_id)`` from a file's id: ``video$_$clip``, ``video[clip]`` or
    ``video_clip`` give ``video[clip]``; any other string is its own video."""
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        raw = f"{_text(raw[0], path, where)}$_${_text(raw[1], path, where)}"
    sid = _text(raw, path, where).strip()
    if not sid:
        raise PickleFileError(f"{path}: {where}: empty segment id")
    for pattern in (r"^(.+)\$_\$(.+)$", r"^(.+)\[(\d+)\]$", r"^(.+)_(\d+)$"):
        if m := re.match(pattern, sid):
            return f"{m.group(1)}[{m.group(2)}]", m.group(1)
    return sid, sid


def read_pickle(obj: Any, path: Path, layout: str, sha256: str | None = None) -> PickleData:
    """Check ``obj`` (loaded from ``path``) against ``layout``; ``sha256`` settles an official
    MMSA file's row kind."""
    if layout not in LAYOUTS:
        raise PickleFileError(f"{path}: unknown pickle layout '{layout}' (use one of {', '.join(LAYOUTS)})")
    if not isinstance(obj, Mapping):
        raise PickleFileError(f"{path}: not the {_NAME[layout]} layout: the pickle holds a {type(obj).__name__}, "
                              f"not a dict of splits")
    names = {s: (_MAG_SPLITS[s] if layout == "mag" else s) for s in SPLITS}
    missing = [n for n in names.values() if n not in obj]
    if missing:
        raise PickleFileError(f"{path}: not the {_NAME[layout]} layout: no split {', '.join(map(repr, missing))} "
                              f"(the file has {', '.join(map(repr, list(obj)[:8])) or 'no keys'})")
    splits = {s: obj[n] for s, n in names.items()}
    data = (_check_mmsa if layout == "mmsa" else _check_mag)(splits, path, sha256)
    _check_unique(data)
    return data


# ----------------------------------------------------------------------------- MMSA

def _check_mmsa(splits: dict[str, Any], path: Path, sha256: str | None) -> PickleData:
    dims: dict[str, int] = {}
    counts: dict[str, int] = {}
    unused: set[str] = set()
    checked: dict[str, dict[str, Any]] = {}
    for split, d in splits.items():
        if not isinstance(d, Mapping):
            raise PickleFileError(f"{path}: MMSA layout: split '{split}' is a {type(d).__name__}, not a dict of arrays")
        lacking = [k for k in _MMSA_KEYS if k not in d]
        if lacking:
            raise PickleFileError(f"{path}: MMSA layout: split '{split}' has no {', '.join(map(repr, lacking))} "
                                  f"(it has {', '.join(map(repr, d))})")
        n = len(d["id"])
        arrays: dict[str, Any] = {"raw_text": d["raw_text"], "id": d["id"]}
        for key, m in (("audio", "acoustic"), ("vision", "visual")):
            x = _array(d[key], path, split, key, ndim=3, n=n)
            if dims.setdefault(m, x.shape[2]) != x.shape[2]:
                raise PickleFileError(f"{path}: split '{split}': '{key}' rows are {x.shape[2]}-d, but "
                                      f"{dims[m]}-d in an earlier split")
            arrays[key] = x
        y = _array(d["regression_labels"], path, split, "regression_labels", n=n)
        y = y.reshape(n, -1) if n else y.reshape(0, 1)
        if y.shape[1] != 1:
            raise PickleFileError(f"{path}: split '{split}': 'regression_labels' must hold one value per segment, "
                                  f"got shape {np.shape(d['regression_labels'])}")
        arrays["labels"] = y[:, 0]
        if len(d["raw_text"]) != n:
            raise PickleFileError(f"{path}: split '{split}': {len(d['raw_text'])} 'raw_text' entries but {n} ids")
        for key in ("audio_lengths", "vision_lengths"):
            if key in d:
                arrays[key] = _array(d[key], path, split, key, ndim=1, n=n, kind="iuf")
        if "text_bert" in d:
            tb = _array(d["text_bert"], path, split, "text_bert", ndim=3, n=n)
            if tb.shape[1] != 3:
                raise PickleFileError(f"{path}: split '{split}': 'text_bert' must be (N, 3, L) (ids, mask, segment "
                                      f"ids), got {tb.shape}")
            arrays["mask_len"] = (tb[:, 1, :] > 0).sum(axis=1)
        unused |= set(d) - set(_MMSA_KEYS) - {"audio_lengths", "vision_lengths", "text_bert"}
        counts[split] = n
        checked[split] = arrays
    rows = OFFICIAL.get(sha256 or "", (None, None, _mmsa_rows(checked)))[2]
    for split, a in checked.items():
        _check_lengths(a, rows, path, split)
        _check_labels(a["labels"], [a["id"][i] for i in range(len(a["labels"]))], path, split)
    return PickleData(path, "mmsa", rows, dims, counts, checked, sorted(unused))


def _mmsa_rows(splits: dict[str, dict[str, Any]]) -> str:
    """tokens when every split's audio and vision rows follow text_bert (same length, and
    any lengths equal the mask sums); frames otherwise."""
    for a in splits.values():
        if "mask_len" not in a or a["audio"].shape[1] != a["vision"].shape[1]:
            return "frames"
        if any(k in a and not np.array_equal(a[k], a["mask_len"]) for k in ("audio_lengths", "vision_lengths")):
            return "frames"
    return "tokens"


def _check_lengths(a: dict[str, Any], rows: str, path: Path, split: str) -> None:
    if rows == "tokens":
        if "mask_len" not in a:
            raise PickleFileError(f"{path}: split '{split}': aligned MMSA rows follow 'text_bert', which is missing")
        a["acoustic_rows"] = a["visual_rows"] = a["mask_len"]
        return
    for key, m, arr in (("audio_lengths", "acoustic", "audio"), ("vision_lengths", "visual", "vision")):
        if key not in a:
            raise PickleFileError(f"{path}: split '{split}': no '{key}' (unaligned MMSA files give the real frame "
                                  "count per segment), and the rows do not follow 'text_bert'")
        lengths = a[key]
        t = a[arr].shape[1]
        bad = np.flatnonzero((lengths < 0) | (lengths > t) | (lengths != np.round(lengths)))
        if len(bad):
            i = int(bad[0])
            raise PickleFileError(f"{path}: split '{split}', segment {_text(a['id'][i], path, split)!r}: "
                                  f"{key} = {lengths[i]:g} disagrees with the {t} rows of '{arr}'")
        a[f"{m}_rows"] = lengths.astype(np.int64)


def _mmsa_segments(data: PickleData, split: str) -> Iterator[Segment]:
    a = data.splits[split]
    tokens = data.rows == "tokens"
    replaced = _Replaced()
    for i, (sid, video) in enumerate(data.keys[split]):
        rows = {}
        for m, arr in (("acoustic", "audio"), ("visual", "vision")):
            r = int(a[f"{m}_rows"][i])
            rows[m] = a[arr][i, 1:max(r - 1, 1)] if tokens else a[arr][i, :r]
        words = words_of(_text(a["raw_text"][i], data.path, f"split '{split}', segment {sid!r}", replaced))
        yield Segment(split, sid, video, words, float(a["labels"][i]), rows)
    replaced.log(data.path, split)


# ----------------------------------------------------------------------------- MAG-BERT

def _check_mag(splits: dict[str, Any], path: Path, sha256: str | None) -> PickleData:
    dims: dict[str, int] = {}
    counts: dict[str, int] = {}
    for split, examples in splits.items():
        name = _MAG_SPLITS[split]
        if not isinstance(examples, (list, tuple)):
            raise PickleFileError(f"{path}: MAG-BERT layout: split '{name}' is a {type(examples).__name__}, not a list "
                                  "of ((words, visual, acoustic), label, segment)")
        labels = np.empty(len(examples))
        for k, ex in enumerate(examples):
            where = f"split '{name}', example {k}"
            if not (isinstance(ex, (tuple, list)) and len(ex) == 3 and isinstance(ex[0], (tuple, list))
                    and len(ex[0]) == 3):
                raise PickleFileError(f"{path}: MAG-BERT layout: {where} is not ((words, visual, acoustic), label, "
                                      "segment)")
            (words, visual, acoustic), label, _ = ex
            n_words = len(words)
            for m, x in (("visual", visual), ("acoustic", acoustic)):
                x = _array(x, path, name, f"{m} of example {k}", ndim=2)
                if x.shape[0] != n_words:
                    raise PickleFileError(f"{path}: {where}: {x.shape[0]} {m} rows for {n_words} words (MAG-BERT "
                                          "has one row per word)")
                if dims.setdefault(m, x.shape[1]) != x.shape[1]:
                    raise PickleFileError(f"{path}: {where}: {m} rows are {x.shape[1]}-d, but {dims[m]}-d in "
                                          "the first example")
            y = np.asarray(label).reshape(-1) if isinstance(label, (np.ndarray, float, int, list)) else None
            if y is None or y.size != 1 or y.dtype.kind not in "iuf":
                raise PickleFileError(f"{path}: {where}: the label must be one number, got {type(label).__name__}")
            labels[k] = y[0]
        _check_labels(labels, [ex[2] for ex in examples], path, name)
        counts[split] = len(examples)
    if not dims:
        dims = {"acoustic": 0, "visual": 0}
    dims = {m: dims[m] for m in ("acoustic", "visual")}
    return PickleData(path, "mag", "words", dims, counts, splits)


def _mag_segments(data: PickleData, split: str) -> Iterator[Segment]:
    replaced = _Replaced()
    for k, ((words, visual, acoustic), label, _) in enumerate(data.splits[split]):
        where = f"split '{_MAG_SPLITS[split]}', example {k}"
        sid, video = data.keys[split][k]
        tokens = [_text(w, data.path, where, replaced) for w in words]
        yield Segment(split, sid, video, tokens, float(np.asarray(label).reshape(-1)[0]),
                      {"acoustic": np.asarray(acoustic), "visual": np.asarray(visual)})
    replaced.log(data.path, _MAG_SPLITS[split])


# ----------------------------------------------------------------------------- checks

class _Replaced:
    """How many texts of a split were not valid UTF-8 (their undecodable bytes became U+FFFD)."""

    def __init__(self) -> None:
        self.count = 0

    def log(self, path: Path, split: str) -> None:
        if self.count:
            log.warning("%s: split '%s': %d text(s) are not valid UTF-8; undecodable bytes replaced by U+FFFD",
                        path, split, self.count)


def _text(value: Any, path: Path, where: str, replaced: _Replaced | None = None) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            if replaced is not None:
                replaced.count += 1
            return value.decode("utf-8", errors="replace")
    if isinstance(value, (str, np.str_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    raise PickleFileError(f"{path}: {where}: expected text, got {type(value).__name__}")


def _array(value: Any, path: Path, split: str, key: str, ndim: int | None = None, n: int | None = None,
           kind: str = "iuf") -> np.ndarray:
    """``value`` as a numeric ndarray of ``ndim`` dimensions and ``n`` rows, or one line."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except ValueError:
            value = np.empty(0, dtype=object)
    if value.dtype.kind == "O":
        raise PickleFileError(f"{path}: split '{split}': '{key}' is ragged (rows of different shapes); the layout "
                              "stores padded arrays")
    if value.dtype.kind not in kind:
        raise PickleFileError(f"{path}: split '{split}': '{key}' must hold numbers, got dtype {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise PickleFileError(f"{path}: split '{split}': '{key}' must have {ndim} dimensions, got shape {value.shape}")
    if n is not None and value.shape[0] != n:
        raise PickleFileError(f"{path}: split '{split}': '{key}' has {value.shape[0]} rows but the split has "
                              f"{n} ids")
    return value


def _check_labels(y: np.ndarray, ids: list[Any], path: Path, split: str) -> None:
    if (bad := first_bad_label(y)) is not None:
        k, what = bad
        raise PickleFileError(f"{path}: split '{split}', segment {_text(ids[k], path, split)!r}: label {what}; fix "
                              "or remove the segment")


def _check_unique(data: PickleData) -> None:
    """Fill ``data.keys``; a segment id that appears twice is an error."""
    seen: dict[str, str] = {}
    for split in SPLITS:
        if data.layout == "mmsa":
            raw = list(data.splits[split]["id"])
        else:
            raw = [ex[2] for ex in data.splits[split]]
        data.keys[split] = [segment_key(r, data.path, f"split '{split}'") for r in raw]
        for sid, _ in data.keys[split]:
            if sid in seen:
                raise PickleFileError(f"{data.path}: segment {sid!r} appears twice (splits '{seen[sid]}' and "
                                      f"'{split}'); segment ids must be unique")
            seen[sid] = split
