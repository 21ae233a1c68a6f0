"""CMU-MultimodalSDK computational sequences (``.csd``): read and write.

Layout (DESIGN section 2): one top-level HDF5 group named by the sequence's root name, with
``data/<video_id>/features`` (n, d) and ``data/<video_id>/intervals`` (n, 2) start/end
seconds, and ``metadata/<key>`` datasets of shape (1,) holding a JSON value as a
variable-length string. Word sequences store one word per row as a byte string (``sp`` =
silence). Every malformed input raises :class:`~m3sa.errors.CSDError` naming the file and,
where it applies, the video.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from m3sa.errors import CSDError

SILENCE = "sp"

#: Metadata keys the SDK writes (``md5`` and ``uuid`` are added by the SDK itself).
METADATA_KEYS = (
    "root name",
    "computational sequence description",
    "dimension names",
    "computational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)


@dataclass
class CSD:
    """A whole computational sequence in memory."""

    root: str
    metadata: dict[str, Any] = field(default_factory=dict)
    data: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # video -> (features, intervals)


def _decode_meta(raw: Any) -> Any:
    """A metadata value: (1,) vlen string of JSON, bytes or str; non-JSON text is kept as is."""
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size else ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return raw.item() if isinstance(raw, np.generic) else raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


#: What h5py raises on a damaged file (truncated, overwritten, a broken heap or B-tree).
_HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)


def _text(key: str | bytes) -> str:
    """An HDF5 link name as text (h5py returns names that are not UTF-8 as bytes)."""
    return key if isinstance(key, str) else key.decode("utf-8", errors="backslashreplace")


def _name(key: str | bytes) -> str:
    """An HDF5 link name for messages, on one line (non-printable characters escaped)."""
    text = _text(key)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@contextmanager
def _hdf5_errors(where: str) -> Iterator[None]:
    """Turn the low-level errors of a damaged HDF5 file into :class:`CSDError` naming ``where``."""
    try:
        yield
    except CSDError:
        raise
    except _HDF5_ERRORS as err:
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise CSDError(f"{where}: unreadable HDF5 structure; the file may be truncated or corrupt "
                       f"({first[:160]})") from None


class CSDReader:
    """An open ``.csd`` file; arrays are read one video at a time (:meth:`get`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CSDError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise CSDError(f"{self.path}: is a directory, expected a .csd (HDF5) file")
        try:
            is_h5 = h5py.is_hdf5(self.path)
        except OSError as err:
            raise CSDError(f"{self.path}: cannot be read ({err.__class__.__name__})") from None
        if not is_h5:
            raise CSDError(f"{self.path}: not an HDF5 file (a .csd file is HDF5)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CSDError(f"{self.path}: cannot be opened as HDF5 ({err})") from None
        try:
            with _hdf5_errors(str(self.path)):
                self.root, self._group = self._find_root()
                self.metadata = self._read_metadata()
                data = self._group.get("data")
            if not isinstance(data, h5py.Group):
                raise CSDError(f"{self.path}: root group '{_name(self.root)}' has no 'data' group")
            self._data = data
        except BaseException:
            self._file.close()
            raise
        # Contiguous, uncompressed fixed-width arrays are read straight from their file offset
        # (about twice as fast as going through HDF5); checked once against HDF5 per file.
        self._fd: int | None = os.open(self.path, os.O_RDONLY) if hasattr(os, "preadv") else None
        self._direct_checked = False
        self._videos: list[str] | None = None
        self._video_set: set[str] | None = None

    def _find_root(self) -> tuple[str, h5py.Group]:
        groups = [k for k, v in self._file.items() if isinstance(v, h5py.Group)]
        if not groups:
            raise CSDError(f"{self.path}: no root group (expected one top-level group named by the root name)")
        if len(groups) == 1:
            return _text(groups[0]), self._file[groups[0]]
        # Several groups: the one whose metadata names itself is the root.
        for name in groups:
            meta = self._file[name].get("metadata")
            if isinstance(meta, h5py.Group) and isinstance(meta.get("root name"), h5py.Dataset):
                if _decode_meta(meta["root name"][()]) == name:
                    return _text(name), self._file[name]
        raise CSDError(f"{self.path}: {len(groups)} top-level groups ({', '.join(map(_name, groups[:3]))}...) and "
                       "none is marked as root by its 'root name' metadata")

    def _read_metadata(self) -> dict[str, Any]:
        meta = self._group.get("metadata")
        if meta is None:
            return {}
        if not isinstance(meta, h5py.Group):
            raise CSDError(f"{self.path}: '{_name(self.root)}/metadata' is not a group")
        out: dict[str, Any] = {}
        for key, ds in meta.items():
            if isinstance(ds, h5py.Dataset):
                out[_text(key)] = _decode_meta(ds[()])
        return out

    def videos(self) -> list[str]:
        """Video ids in the file, in HDF5 (sorted) order."""
        if self._videos is None:
            with _hdf5_errors(str(self.path)):
                names = list(self._data.keys())
            bad = next((k for k in names if not isinstance(k, str)), None)
            if bad is not None:
                raise CSDError(f"{self.path}: video name '{_name(bad)}' in 'data' is not UTF-8 text; rename it")
            self._videos = names
        return list(self._videos)

    def __contains__(self, video: str) -> bool:
        if self._video_set is None:
            self._video_set = set(self.videos())
        return video in self._video_set

    def __len__(self) -> int:
        return len(self.videos())

    def shape(self, video: str) -> tuple[int, int]:
        """(n, d) of a video's features without reading them."""
        feats, _ = self._datasets(video)
        return feats.shape  # type: ignore[return-value]

    def _datasets(self, video: str) -> tuple[h5py.h5d.DatasetID, h5py.h5d.DatasetID]:
        """Low-level ids of a video's two datasets, shapes checked (HDF5 lookups dominate the
        cost of small arrays, so they go straight to the library)."""
        where = f"{self.path}: video '{_name(video)}'"
        gid = self._data.id
        try:
            feats = h5py.h5d.open(gid, f"{video}/features".encode())
            ivs = h5py.h5d.open(gid, f"{video}/intervals".encode())
        except (KeyError, ValueError, TypeError, RuntimeError, OSError):
            with _hdf5_errors(where):
                grp = self._data.get(video)
                if grp is None:
                    raise CSDError(f"{where} not in the file") from None
                if not isinstance(grp, h5py.Group):
                    raise CSDError(f"{where}: 'data/{_name(video)}' is not a group") from None
                for name in ("features", "intervals"):
                    if not isinstance(grp.get(name), h5py.Dataset):
                        raise CSDError(f"{where}: no '{name}' dataset") from None
            raise CSDError(f"{where}: cannot open its datasets") from None
        fshape, ishape = feats.shape, ivs.shape  # None for an empty (null) dataspace
        if fshape is None or len(fshape) != 2:
            raise CSDError(f"{where}: features must be 2-D (n, d), got "
                           f"{'an empty (null) dataset' if fshape is None else f'shape {fshape}'}")
        if ishape is None or len(ishape) != 2 or ishape[1] != 2:
            raise CSDError(f"{where}: intervals must have shape (n, 2), got "
                           f"{'an empty (null) dataset' if ishape is None else ishape}")
        if fshape[0] != ishape[0]:
            raise CSDError(f"{where}: features have {fshape[0]} rows but intervals {ishape[0]}")
        return feats, ivs

    def get(self, video: str) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, d), intervals (n, 2)) of one video, in the file's dtypes (fresh arrays)."""
        feats, ivs = self._datasets(video)
        try:
            x, iv = self._read(feats), self._read(ivs)
        except (*_HDF5_ERRORS, TypeError) as err:
            first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
            raise CSDError(f"{self.path}: video '{_name(video)}': cannot read arrays ({first[:160]})") from None
        if iv.dtype.kind not in "fiu":
            raise CSDError(f"{self.path}: video '{_name(video)}': intervals must be numbers, got dtype {iv.dtype}")
        return x, iv

    def _read(self, dsid: h5py.h5d.DatasetID) -> np.ndarray:
        dtype, shape = dsid.dtype, dsid.get_space().get_simple_extent_dims()
        count = int(np.prod(shape))
        plain = dtype.kind in "fiuS" and dtype.isnative  # fixed-width values, stored as in memory
        # get_offset() is None unless the layout is contiguous (chunked and compact have none)
        offset = dsid.get_offset() if self._fd is not None and plain and count else None
        if offset is not None and not self._direct_checked:
            offset = self._check_offset(dsid, dtype, shape, offset)
        if offset is None:
            if not plain:
                return h5py.Dataset(dsid)[()]
            out = np.empty(shape, dtype=dtype)
            if count:
                dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out
        out = np.empty(shape, dtype=dtype)
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"short read at byte {offset + done}")
            done += n
        return out

    def _check_offset(self, dsid: h5py.h5d.DatasetID, dtype: np.dtype, shape: tuple[int, ...],
                      offset: int) -> int | None:
        """Once per file: the first row at the file offset equals HDF5's; else read via HDF5."""
        first = np.empty((1, *shape[1:]), dtype=dtype)
        space = dsid.get_space()
        space.select_hyperslab((0,) * len(shape), first.shape)
        dsid.read(h5py.h5s.create_simple(first.shape), space, first)
        raw = os.pread(self._fd, first.nbytes, offset)  # type: ignore[arg-type]
        if raw != first.tobytes():
            os.close(self._fd)  # type: ignore[arg-type]
            self._fd = None
            return None
        self._direct_checked = True
        return offset

    def items(self) -> Iterator[tuple[str, tuple[np.ndarray, np.ndarray]]]:
        for video in self.videos():
            yield video, self.get(video)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._file.close()

    def __enter__(self) -> "CSDReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def open_csd(path: str | Path) -> Iterator[CSDReader]:
    """Open a ``.csd`` file for streaming, one video at a time::

        with open_csd(path) as seq:
            for video in seq.videos():
                features, intervals = seq.get(video)
    """
    reader = CSDReader(path)
    try:
        yield reader
    finally:
        reader.close()


def read_csd(path: str | Path) -> CSD:
    """Read a whole computational sequence: root name, metadata and per-video arrays."""
    with open_csd(path) as seq:
        return CSD(root=seq.root, metadata=dict(seq.metadata), data=dict(seq.items()))


def decode_words(features: np.ndarray) -> list[str]:
    """Words of a words sequence, (n, 1) byte strings (or str), as a list of str."""
    flat = features.reshape(-1) if features.ndim else features.reshape(1)
    return [w.decode("utf-8", errors="replace") if isinstance(w, bytes) else str(w) for w in flat]


def _as_features(video: str, features: Any) -> np.ndarray:
    arr = np.asarray(features)
    if arr.dtype.kind in "UO":  # words as str: the SDK stores byte strings
        arr = np.array([w.encode("utf-8") if isinstance(w, str) else bytes(w) for w in arr.reshape(-1)],
                       dtype=np.bytes_).reshape(arr.shape)
    if arr.ndim == 1:
        arr = arr[:, None]  # (n,) -> (n, 1)
    if arr.ndim != 2:
        raise CSDError(f"video '{video}': features must be 2-D (n, d), got shape {arr.shape}")
    return arr


class CSDWriter:
    """Writes a computational sequence one video at a time (see :func:`csd_writer`)."""

    def __init__(self, path: Path, handle: h5py.File, root: str) -> None:
        self.path = path
        self.root = root
        self._data = handle.create_group(root).create_group("data")

    def add(self, video: str, features: Any, intervals: Any) -> None:
        """Add one video: features (n, d) (words as str or bytes) and intervals (n, 2)."""
        where = f"{self.path}: video '{video}'"
        if not video or "/" in video or video == ".":
            raise CSDError(f"{where}: invalid video id (empty, '.' or containing '/')")
        if video in self._data:
            raise CSDError(f"{where}: written twice")
        feats = _as_features(video, features)
        ivs = np.asarray(intervals)
        if ivs.ndim != 2 or ivs.shape[1] != 2:
            raise CSDError(f"{where}: intervals must have shape (n, 2), got {ivs.shape}")
        if feats.shape[0] != ivs.shape[0]:
            raise CSDError(f"{where}: {feats.shape[0]} feature rows but {ivs.shape[0]} intervals")
        vgrp = self._data.create_group(video)
        vgrp.create_dataset("features", data=feats)
        vgrp.create_dataset("intervals", data=ivs)


@contextmanager
def csd_writer(path: str | Path, root: str, metadata: Mapping[str, Any] | None = None) -> Iterator[CSDWriter]:
    """Write a computational sequence in the SDK's layout, streaming, atomically.

    The file appears at ``path`` (temp file, then rename) only when the block ends without
    error. Metadata values are stored as JSON strings in (1,) variable-length string
    datasets; ``root name`` is always set to ``root``.
    """
    path = Path(path)
    if not root or "/" in root or root == ".":
        raise CSDError(f"{path}: invalid root name {root!r}")
    meta = dict(metadata or {})
    meta["root name"] = root
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as handle:
            writer = CSDWriter(path, handle, root)
            yield writer
            mgrp = handle[root].create_group("metadata")
            string = h5py.string_dtype(encoding="utf-8")
            for key, value in meta.items():
                ds = mgrp.create_dataset(key, (1,), dtype=string)
                ds[0] = json.dumps(value)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csd(path: str | Path, root: str, data: Mapping[str, tuple[Any, Any]],
              metadata: Mapping[str, Any] | None = None) -> None:
    """Write a whole computational sequence (``data``: video -> (features, intervals))."""
    with csd_writer(path, root, metadata) as writer:
        for video, (features, intervals) in data.items():
            writer.add(video, features, intervals)


def words_features(words: Sequence[str]) -> np.ndarray:
    """Words as the SDK stores them: (n, 1) byte strings."""
    return np.array([w.encode("utf-8") for w in words], dtype=np.bytes_).reshape(-1, 1)
