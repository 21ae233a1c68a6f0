"""The extracted features: Parquet per split plus ``meta.json`` (docs/architecture.md).

:func:`features_schema` is the one definition of the Parquet schema, used by the
extractor to write and by :func:`read_split` to check what training reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from m3sa.errors import DataError

SPLITS = ("train", "valid", "test")
FRAME_MODALITIES = ("acoustic", "visual")
FORMAT = "m3sa-features"
VERSION = 1
META_KEYS = ("source", "align", "modalities", "dims", "counts", "dropped", "nonfinite", "standardization",
             "inputs", "has_ground_truth", "params")

_SEQ = pa.list_(pa.list_(pa.float32()))
LABEL_RANGE = 3.0  # sentiment scores lie in [-3, 3]


def first_bad_label(y: np.ndarray) -> tuple[int, str] | None:
    """``(index, "is NaN" | "= 4 is outside [-3, 3]")`` of the first label that is not a
    finite score in [-LABEL_RANGE, LABEL_RANGE], or None."""
    bad = np.flatnonzero(~np.isfinite(y) | (np.abs(y) > LABEL_RANGE))
    if not len(bad):
        return None
    k = int(bad[0])
    return k, "is NaN" if np.isnan(y[k]) else f"= {y[k]:g} is outside [-3, 3]"


def features_schema(modalities: Iterable[str], has_ground_truth: bool) -> pa.Schema:
    """Arrow schema of ``<split>.parquet`` for the present ``modalities``."""
    mods = list(modalities)
    fields = [
        pa.field("segment_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("start", pa.float64(), nullable=False),
        pa.field("end", pa.float64(), nullable=False),
        pa.field("label", pa.float32(), nullable=False),
    ]
    if "language" in mods:
        fields.append(pa.field("words", pa.list_(pa.string()), nullable=False))
    frame_mods = [m for m in FRAME_MODALITIES if m in mods]
    fields += [pa.field(m, _SEQ, nullable=False) for m in frame_mods]
    fields += [pa.field(f"{m}_len", pa.int32(), nullable=False) for m in frame_mods]
    if has_ground_truth:
        fields += [pa.field(f"gt_{m}", pa.bool_(), nullable=True) for m in ("language", "acoustic", "visual")]
    return pa.schema(fields, metadata={b"m3sa": json.dumps({"format": FORMAT, "version": VERSION}).encode()})


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Type equality that ignores list item names (Parquet writes "element", Arrow "item")."""
    if pa.types.is_list(a) and pa.types.is_list(b):
        return _same_type(a.value_type, b.value_type)
    return a.equals(b)


def read_meta(features_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of an extracted dataset, checked for the keys training relies on."""
    path = Path(features_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"{path}: not found; run `python -m stages.extract` first")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); rerun `python -m stages.extract`") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: must hold a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataError(f"{path}: missing key '{missing[0]}'; rerun `python -m stages.extract`")
    bad = [m for m in meta["modalities"] if m not in ("language", *FRAME_MODALITIES)]
    if bad or not meta["modalities"]:
        raise DataError(f"{path}: 'modalities' = {meta['modalities']!r}; expected a non-empty subset of "
                        "language, acoustic, visual")
    dims = meta.get("dims") or {}
    for m in meta["modalities"]:
        if m in FRAME_MODALITIES and not (isinstance(dims.get(m), int) and dims[m] > 0):
            raise DataError(f"{path}: 'dims.{m}' must be a positive integer (modality '{m}' is listed), got {dims.get(m)!r}")
    return meta


def read_split(features_dir: str | Path, split: str, meta: dict[str, Any] | None = None,
               columns: list[str] | None = None, as_pandas: bool = False) -> Any:
    """One split as a ``pyarrow.Table`` (or a pandas DataFrame), schema checked.

    Raises :class:`DataError` naming the file and column when the file is missing, not
    Parquet, or its schema is not the one the extractor writes.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    meta = read_meta(features_dir) if meta is None else meta
    path = Path(features_dir) / f"{split}.parquet"
    if not path.exists():
        raise DataError(f"{path}: not found; run `python -m stages.extract` first")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err.__class__.__name__})") from None
    expected = features_schema(meta["modalities"], bool(meta["has_ground_truth"]))
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise DataError(f"{path}: column '{field.name}' is missing; rerun `python -m stages.extract`")
        if not _same_type(schema.field(idx).type, field.type):
            raise DataError(f"{path}: column '{field.name}' has type {schema.field(idx).type}, "
                            f"expected {field.type}; rerun `python -m stages.extract`")
    try:
        table = pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    return table.to_pandas() if as_pandas else table


# Arrow arrays straight from numpy buffers. ``pa.array`` and ``Array.to_numpy`` import pandas
# on first use (about a second), which the extractor does not otherwise need.

def arrow_numeric(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A fixed-width Arrow array (no nulls) sharing ``values``' buffer."""
    values = np.ascontiguousarray(values, dtype=type_.to_pandas_dtype())
    return pa.Array.from_buffers(type_, len(values), [None, pa.py_buffer(values)])


def arrow_strings(values: list[bytes]) -> pa.Array:
    """A string array from UTF-8 byte strings."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))])


def arrow_bools(values: list[bool | None]) -> pa.Array:
    """A nullable bool array."""
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    data = np.fromiter((bool(v) for v in values), dtype=bool, count=len(values))
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), len(values), [bitmap, pa.py_buffer(np.packbits(data, bitorder="little"))],
                                 null_count=int((~valid).sum()))


def arrow_lists(counts: np.ndarray, values: pa.Array) -> pa.Array:
    """list<values> with ``counts[i]`` items in row i."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(arrow_numeric(offsets, pa.int32()), values)


def numpy_values(arr: pa.Array, dtype: Any) -> np.ndarray:
    """A fixed-width Arrow array without nulls as a zero-copy numpy view."""
    buf = arr.buffers()[1]
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + len(arr))[arr.offset:]


def sequence_values(col: pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<list<float32>> array as flat rows: ``(values (rows, dim) float32, offsets (n+1,))``.

    Segment i's rows are ``values[offsets[i]:offsets[i+1]]``; zero-copy.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    outer = numpy_values(pa.Array.from_buffers(pa.int32(), len(col) + 1, [None, col.buffers()[1]],
                                               offset=col.offset), np.int32).astype(np.int64)
    inner = col.values
    inner_off = numpy_values(pa.Array.from_buffers(pa.int32(), len(inner) + 1, [None, inner.buffers()[1]],
                                                   offset=inner.offset), np.int32)
    flat = numpy_values(inner.values, np.float32)
    if len(col) == 0:
        return np.zeros((0, dim), dtype=np.float32), np.zeros(1, dtype=np.int64)
    start, stop = int(inner_off[outer[0]]), int(inner_off[outer[-1]])
    return flat[start:stop].reshape(-1, dim), outer - outer[0]  # (rows, dim), (n+1,)
