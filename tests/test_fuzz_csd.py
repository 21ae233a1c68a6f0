"""Fuzzing the CSD reader and the extractor with malformed HDF5 files (hypothesis).

Whatever a file holds (wrong shapes and dtypes, missing or misplaced groups, empty videos,
non-UTF-8 words and names, huge widths, NaN/inf everywhere, truncated or overwritten
bytes), reading it and extracting from it end either with a result or with one of the
project's own errors (:class:`~m3sa.errors.M3SAError`) in one line; never another
exception type. A failed extraction leaves nothing in the output folder and keeps the
outputs of an earlier run byte for byte.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3sa.config import CSDFiles, DataConfig
from m3sa.data.csd import decode_words, open_csd, read_csd, write_csd
from m3sa.data.extract import extract
from m3sa.errors import M3SAError

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: Multiplies the number of examples (M3SA_FUZZ_SCALE=20 for a long hunt; 1 keeps the file near 30 s).
SCALE = max(1, int(os.environ.get("M3SA_FUZZ_SCALE", "1")))

# ---------------------------------------------------------------- arbitrary HDF5 trees

DTYPES = ("f2", "f4", "f8", ">f4", "i1", "u8", "?", "c8", "S6", "vlen", "compound")
FILLS = ("normal", "nan", "inf", "huge", "zeros")
_names = st.one_of(st.sampled_from(["data", "metadata", "features", "intervals", "root name", "v1", "sp"]),
                   st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/.\x00"),
                           min_size=1, max_size=6),
                   st.binary(min_size=1, max_size=4).filter(lambda b: b"/" not in b and b"\x00" not in b
                                                            and b not in (b".", b"..")))


def array(dtype: str, shape: tuple[int, ...], fill: str, seed: int = 0) -> np.ndarray:
    """An array of ``shape`` in one of DTYPES, filled as ``fill`` says."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    if fill == "nan":
        x[...] = np.nan
    elif fill == "inf":
        x[...] = np.where(rng.random(shape) < 0.5, np.inf, -np.inf)
    elif fill == "huge":
        x = x * 1e300
    elif fill == "zeros":
        x[...] = 0
    if dtype == "S6":
        return np.array([b"\xff\xfe" + bytes([65 + i % 26]) for i in range(x.size)], dtype="S6").reshape(shape)
    if dtype == "vlen":
        return np.array([str(v) for v in x.reshape(-1)], dtype=object).reshape(shape)
    if dtype == "compound":
        out = np.zeros(shape, dtype=[("a", "f4"), ("b", "i2")])
        with np.errstate(over="ignore"):
            out["a"] = x
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        return np.asarray(x).astype(dtype)


def write_dataset(group: h5py.Group, name: str | bytes, dtype: str, shape: tuple[int, ...] | None, fill: str,
                  layout: str) -> None:
    """``group[name]``: an array (contiguous, chunked+gzip or compact), a scalar, or an empty (null) dataset."""
    if shape is None:
        data: Any = h5py.Empty("f4")
    else:
        data = array(dtype, shape, fill)
    kind = h5py.string_dtype() if dtype == "vlen" and shape is not None else None
    kwargs: dict[str, Any] = {}
    if layout == "gzip" and shape and all(shape):
        kwargs = {"compression": "gzip", "chunks": True}
    if isinstance(name, bytes):  # a name that is not UTF-8: only the low-level API writes it
        group.create_dataset("_tmp_", data=data, dtype=kind, **kwargs)
        group.id.links.create_hard(name, group.id, b"_tmp_")
        del group["_tmp_"]
        return
    group.create_dataset(name, data=data, dtype=kind, **kwargs)


_shapes = st.one_of(st.none(), st.just(()), st.tuples(st.integers(0, 5)),
                    st.tuples(st.integers(0, 5), st.integers(0, 4)),
                    st.tuples(st.integers(0, 5), st.sampled_from([1, 2, 3, 20_000])),
                    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 2)))
_datasets = st.tuples(st.just("ds"), st.sampled_from(DTYPES), _shapes, st.sampled_from(FILLS),
                      st.sampled_from(["plain", "gzip"]))


def _video_group():
    """A video: features and intervals, each maybe missing or malformed; sometimes extra members."""
    good_iv = st.builds(lambda n: ("iv", n), st.integers(0, 5))
    return st.dictionaries(st.sampled_from(["features", "intervals", "extra"]),
                           st.one_of(_datasets, good_iv, st.just(("grp", {}))), max_size=3)


_trees = st.recursive(_datasets, lambda inner: st.builds(lambda d: ("grp", d), st.dictionaries(_names, inner, max_size=3)),
                      max_leaves=6)


@st.composite
def hdf5_files(draw) -> dict[str, Any]:
    """A spec of a .csd-like file: mostly the SDK layout, with random parts broken or replaced."""
    root = draw(_names)
    videos = draw(st.dictionaries(_names, st.one_of(_video_group().map(lambda d: ("grp", d)), _datasets),
                                  max_size=3))
    data: tuple = draw(st.one_of(st.just(("grp", videos)), _datasets, st.just(None)))
    meta = draw(st.dictionaries(st.sampled_from(["root name", "dataset name", "dimension names", "x"]),
                                st.one_of(_datasets, st.just(("json", "root")), st.just(("json", [1, 2])),
                                          st.just(("bytes", b"\xff\xfe{"))), max_size=3))
    top = {root: ("grp", {k: v for k, v in (("data", data), ("metadata", ("meta", meta))) if v is not None})}
    extra = draw(st.dictionaries(_names, _trees, max_size=2))
    for name, node in extra.items():
        top.setdefault(name, node)
    damage = draw(st.one_of(st.none(), st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
                            st.tuples(st.just("overwrite"), st.floats(0.0, 0.99), st.binary(min_size=1, max_size=64))))
    return {"top": top, "damage": damage}


def build(path: Path, spec: dict[str, Any]) -> None:
    """Write ``spec`` (from :func:`hdf5_files`) to ``path``, then damage the bytes as it says."""
    with h5py.File(path, "w") as f:
        _build_group(f, spec["top"])
    damage = spec["damage"]
    if damage is not None:
        raw = path.read_bytes()
        at = int(len(raw) * damage[1])
        if damage[0] == "truncate":
            path.write_bytes(raw[:at])
        else:
            path.write_bytes(raw[:at] + damage[2] + raw[at + len(damage[2]):])


def _build_group(group: h5py.Group, members: dict) -> None:
    for name, node in members.items():
        if _raw_name(name) in {_raw_name(k) for k in group}:  # the same name drawn as str and as bytes
            continue
        kind = node[0]
        if kind == "ds":
            write_dataset(group, name, *node[1:4], layout=node[4])
        elif kind == "iv":
            n = node[1]
            write_dataset(group, name, "f8", (n, 2), "normal", "plain")
        elif kind in ("grp", "meta"):
            sub = _child_group(group, name)
            if kind == "meta":
                for key, value in node[1].items():
                    _meta_value(sub, key, value)
            else:
                _build_group(sub, node[1])


def _raw_name(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def _child_group(group: h5py.Group, name: str | bytes) -> h5py.Group:
    if isinstance(name, bytes):
        h5py.h5g.create(group.id, name)
        return group[name]
    return group.create_group(name)


def _meta_value(group: h5py.Group, key: str, value: tuple) -> None:
    if value[0] == "json":
        group.create_dataset(key, (1,), dtype=h5py.string_dtype())[0] = json.dumps(value[1])
    elif value[0] == "bytes":
        group.create_dataset(key, data=np.array([value[1]], dtype="S8"))
    else:
        write_dataset(group, key, *value[1:4], layout=value[4])


def _check_one_line(err: M3SAError, path: Path) -> None:
    msg = str(err)
    assert msg and "\n" not in msg, msg
    assert path.name in msg, msg  # names the file


@settings(FUZZ, max_examples=250 * SCALE)
@given(spec=hdf5_files())
def test_reader_raises_only_csd_errors(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.csd"
        build(path, spec)
        try:
            csd = read_csd(path)
        except M3SAError as err:
            _check_one_line(err, path)
        else:
            for feats, ivs in csd.data.values():
                assert feats.ndim == 2 and ivs.ndim == 2 and ivs.shape[1] == 2 and len(feats) == len(ivs)
                assert isinstance(decode_words(feats), list) if feats.dtype.kind == "S" else True
        try:
            with open_csd(path) as seq:  # streaming: the same outcome, video by video
                for video in seq.videos():
                    assert isinstance(video, str)
                    assert video in seq
                    seq.shape(video)
                    seq.get(video)
        except M3SAError as err:
            _check_one_line(err, path)


def _video(features: tuple, intervals: tuple) -> dict:
    return {"top": {"r": ("grp", {"data": ("grp", {"v": ("grp", {"features": features, "intervals": intervals})})})},
            "damage": None}


NASTY = {  # hand-picked cases the strategy reaches only by chance -> a fragment of the message
    "null_dataspace": (_video(("ds", "f4", None, "normal", "plain"), ("iv", 0)),
                       "video 'v': features must be 2-D (n, d), got an empty (null) dataset"),
    "scalar_intervals": (_video(("ds", "f4", (1, 1), "normal", "plain"), ("ds", "f8", (), "nan", "plain")),
                         "video 'v': intervals must have shape (n, 2), got ()"),
    "compound_intervals": (_video(("ds", "f4", (2, 1), "normal", "plain"), ("ds", "compound", (2, 2), "normal", "plain")),
                           "video 'v': intervals must be numbers"),
    "non_utf8_video_name": ({"top": {"r": ("grp", {"data": ("grp", {b"\xff\xfe": ("grp", {})})})}, "damage": None},
                            "video name '\\xff\\xfe' in 'data' is not UTF-8 text"),
    "newline_in_root_name": ({"top": {"a\nb": ("grp", {})}, "damage": None}, "root group 'a\\nb' has no 'data' group"),
    "data_is_a_dataset": ({"top": {"r": ("grp", {"data": ("ds", "f4", (2, 2), "normal", "plain")})}, "damage": None},
                          "root group 'r' has no 'data' group"),
    "zero_bytes": ({"top": {}, "damage": ("truncate", 0.0)}, "not an HDF5 file"),
    "half_file": (dict(_video(("ds", "f4", (50, 3), "normal", "gzip"), ("iv", 50)), damage=("truncate", 0.5)),
                  "truncated"),
}


@pytest.mark.parametrize("name", sorted(NASTY))
def test_known_nasty_files(tmp_path, name):
    spec, fragment = NASTY[name]
    path = tmp_path / f"{name}.csd"
    build(path, spec)
    with pytest.raises(M3SAError) as err:
        read_csd(path)
    _check_one_line(err.value, path)
    assert fragment in str(err.value)


# ---------------------------------------------------------------- the extractor

VIDEOS = ("a", "b", "c")
ROOTS = {"words": "words", "acoustic": "COVAREP", "visual": "FACET", "labels": "Opinion Segment Labels"}


def _frames(n: int, hz: float) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    return np.stack([i[:-1] / hz, i[1:] / hz], axis=1)  # (n, 2)


def good_dataset(root: Path) -> DataConfig:
    """A small valid dataset: 3 videos of 3 s (train a, b; valid c), 2 segments each."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["it", "sp", "was", "good", "ok", "fine"]
    wiv = np.array([[0.2, 0.5], [0.5, 0.7], [0.7, 1.0], [1.0, 1.4], [1.6, 2.0], [2.0, 2.6]])
    streams: dict[str, dict] = {k: {} for k in ROOTS}
    for v in VIDEOS:
        streams["words"][v] = (words, wiv)
        streams["acoustic"][v] = (rng.normal(size=(300, 3)).astype(np.float32), _frames(300, 100))
        streams["visual"][v] = (rng.normal(size=(90, 2)).astype(np.float32), _frames(90, 30))
        streams["labels"][v] = (np.array([[1.0], [-2.0]], np.float32), np.array([[0.2, 1.4], [1.6, 2.6]], np.float32))
    for name, data in streams.items():
        write_csd(root / f"{name}.csd", ROOTS[name], data)
    (root / "folds.json").write_text(json.dumps({"train": ["a", "b"], "valid": ["c"], "test": []}))
    return config_for(root)


def config_for(root: Path) -> DataConfig:
    return DataConfig(source="csd", csd_dir=str(root), folds=str(root / "folds.json"),
                      files=CSDFiles(words="words.csd", acoustic="acoustic.csd", visual="visual.csd",
                                     labels="labels.csd"),
                      features_dir=str(root / "features"))


MUTATIONS = ("dtype", "shape", "intervals", "values", "delete", "empty_video", "words", "width", "damage", "meta")


@st.composite
def mutations(draw) -> list[tuple]:
    """One to three breakages, each aimed at one file and (where it applies) one video."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(MUTATIONS))
        stream = draw(st.sampled_from(list(ROOTS)))
        video = draw(st.sampled_from(VIDEOS))
        if kind == "dtype":
            arg: Any = (draw(st.sampled_from(["features", "intervals"])), draw(st.sampled_from(DTYPES)))
        elif kind == "shape":
            arg = (draw(st.sampled_from(["features", "intervals"])), draw(_shapes))
        elif kind == "intervals":
            arg = draw(st.sampled_from(["nan", "inf", "reversed", "huge", "negative", "zero_length", "unsorted"]))
        elif kind == "values":
            arg = draw(st.sampled_from(FILLS))
        elif kind == "delete":
            arg = draw(st.sampled_from(["features", "intervals", "video", "data", "metadata", "root",
                                        "video_as_dataset", "second_root"]))
        elif kind == "words":
            arg = draw(st.sampled_from(["non_utf8", "empty", "all_silence", "numbers", "long", "nul"]))
        elif kind == "width":
            arg = draw(st.sampled_from([0, 1, 7, 20_000]))
        elif kind == "damage":
            arg = (draw(st.sampled_from(["truncate", "overwrite", "garbage"])), draw(st.floats(0.0, 0.99)))
        else:
            arg = None
        out.append((kind, stream, video, arg))
    return out


def mutate(root: Path, kind: str, stream: str, video: str, arg: Any) -> None:
    """Apply one breakage to ``root/<stream>.csd`` (see :func:`mutations`)."""
    path = root / f"{stream}.csd"
    if not path.exists() or not h5py.is_hdf5(path):
        return  # an earlier breakage already ruined this file
    if kind == "damage":
        raw = path.read_bytes()
        at = int(len(raw) * arg[1])
        if arg[0] == "truncate":
            path.write_bytes(raw[:at])
        elif arg[0] == "overwrite":
            path.write_bytes(raw[:at] + b"\xde\xad\xbe\xef" * 8 + raw[at + 32:])
        else:
            path.write_bytes(np.random.default_rng(at).bytes(len(raw)))
        return
    try:
        handle = h5py.File(path, "a")
    except OSError:
        return  # truncated by an earlier breakage
    try:
        with handle as f:
            rname = next(iter(f.keys()), None)
            if rname is None:
                return
            grp = f[rname]
            vgrp = grp.get(f"data/{video}")
            if kind == "delete":
                target = {"features": vgrp, "intervals": vgrp, "video": grp.get("data"), "data": grp,
                          "metadata": grp, "root": f}.get(arg)
                if arg in ("features", "intervals") and isinstance(vgrp, h5py.Group) and arg in vgrp:
                    del vgrp[arg]
                elif arg == "video" and isinstance(target, h5py.Group) and video in target:
                    del target[video]
                elif arg in ("data", "metadata") and arg in grp:
                    del grp[arg]
                elif arg == "root":
                    f.move(rname, rname + "_renamed")
                elif arg == "video_as_dataset" and isinstance(grp.get("data"), h5py.Group) and video in grp["data"]:
                    del grp["data"][video]
                    grp["data"][video] = np.zeros((3, 2))
                elif arg == "second_root":
                    f.require_group("another").require_group("data")
                return
            if kind == "meta":
                meta = grp.require_group("metadata")
                if "root name" in meta:
                    del meta["root name"]
                meta.create_dataset("root name", data=np.array([b"\xff\xfe\x00"], dtype="S3"))
                return
            if not isinstance(vgrp, h5py.Group) or "features" not in vgrp or "intervals" not in vgrp:
                return
            feats, ivs = vgrp["features"][()], vgrp["intervals"][()]
            if not all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in (feats, ivs)):
                return  # an earlier breakage made them empty or scalar
            n = len(feats) if np.ndim(feats) else 0
            del vgrp["features"], vgrp["intervals"]
            if kind == "dtype":
                which, dtype = arg
                shape = feats.shape if which == "features" else ivs.shape
                new = array(dtype, shape, "normal")
                feats, ivs = (new, ivs) if which == "features" else (feats, new)
            elif kind == "shape":
                which, shape = arg
                new = array("f4" if which == "features" else "f8", shape, "normal") if shape is not None else h5py.Empty("f4")
                feats, ivs = (new, ivs) if which == "features" else (feats, new)
            elif kind == "intervals":
                ivs = ivs.astype(np.float64)
                if arg == "nan":
                    ivs[:] = np.nan
                elif arg == "inf":
                    ivs[: max(1, n // 2)] = np.inf
                elif arg == "reversed":
                    ivs = ivs[:, ::-1].copy()
                elif arg == "huge":
                    with np.errstate(over="ignore"):
                        ivs = ivs * 1e300
                elif arg == "negative":
                    ivs = -ivs
                elif arg == "zero_length":
                    ivs[:, 1] = ivs[:, 0]
                else:
                    ivs = ivs[::-1].copy()
            elif kind == "values":
                if feats.dtype.kind == "f":
                    feats = array("f4", feats.shape, arg)
            elif kind == "empty_video":
                feats, ivs = feats[:0], ivs[:0]
            elif kind == "words":
                if arg == "non_utf8":
                    feats = np.array([[b"\xff\xfeok"], [b"caf\xe9"]] * max(1, n // 2), dtype="S8")[:n]
                elif arg == "empty":
                    feats = np.array([[b""]] * n, dtype="S1")
                elif arg == "all_silence":
                    feats = np.array([[b"sp"]] * n, dtype="S2")
                elif arg == "numbers":
                    feats = np.arange(n, dtype=np.float32).reshape(n, 1)
                elif arg == "long":
                    feats = np.array([[b"w" * 10_000]] * n)
                else:
                    feats = np.array([[b"a\x00b"]] * n, dtype="S3")
            elif kind == "width":
                feats = np.zeros((n, arg), np.float32) if arg < 20_000 else np.ones((min(n, 3), arg), np.float32)
                ivs = ivs[: len(feats)]
            vgrp.create_dataset("features", data=feats)
            vgrp.create_dataset("intervals", data=ivs)

    except (KeyError, RuntimeError, OSError, ValueError):
        return  # an earlier "damage" breakage left structures h5py cannot read: the file stays broken

@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    good_dataset(root)
    return root


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())} if out.exists() else {}


@settings(FUZZ, max_examples=120 * SCALE)
@given(breakages=mutations(), earlier_run=st.booleans())
def test_extract_raises_only_project_errors_and_leaves_no_partial_output(pristine, breakages, earlier_run):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "d"
        root.mkdir()
        for p in pristine.iterdir():
            (root / p.name).write_bytes(p.read_bytes())
        cfg = config_for(root)
        if earlier_run:
            extract(cfg, progress=False)
        before = _outputs(root / "features")
        for breakage in breakages:
            mutate(root, *breakage)
        try:
            meta = extract(cfg, progress=False)
        except M3SAError as err:
            msg = str(err)
            assert msg and "\n" not in msg, msg
            assert _outputs(root / "features") == before  # nothing new, nothing half-written, nothing lost
            return
        out = root / "features"
        assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.parquet", "train.parquet", "valid.parquet"]
        assert json.loads((out / "meta.json").read_text())["counts"] == meta["counts"]
        for split in ("train", "valid", "test"):
            table = pq.read_table(out / f"{split}.parquet")
            assert table.num_rows == meta["counts"][split]
            rows = table.to_pylist()  # every string column is valid UTF-8
            for m in meta["modalities"]:
                if m == "language":
                    continue
                vals = np.array([v for r in rows for step in r[m] for v in step], dtype=np.float64)
                assert np.isfinite(vals).all(), f"non-finite {m} values reached {split}.parquet"


def _copy(pristine: Path, root: Path) -> Path:
    root.mkdir()
    for p in pristine.iterdir():
        (root / p.name).write_bytes(p.read_bytes())
    return root


def test_non_utf8_words_are_replaced_and_reported(pristine, tmp_path, caplog):
    root = _copy(pristine, tmp_path / "d")
    mutate(root, "words", "words", "a", "non_utf8")
    with caplog.at_level(logging.WARNING, logger="m3sa.data"):
        extract(config_for(root), progress=False)
    rows = pq.read_table(root / "features" / "train.parquet").to_pylist()
    words = [w for r in rows if r["video_id"] == "a" for w in r["words"]]
    assert words[:2] == ["\ufffd\ufffdok", "caf\ufffd"]
    assert "words.csd: video 'a': 6 word(s) are not valid UTF-8" in caplog.text


def test_words_stored_without_a_column_are_refused(pristine, tmp_path):
    root = _copy(pristine, tmp_path / "d")
    with h5py.File(root / "words.csd", "a") as f:
        del f["words/data/b/features"]
        f["words/data/b/features"] = np.zeros((6, 0), dtype="S2")
    with pytest.raises(M3SAError) as err:
        extract(config_for(root), progress=False)
    assert "words.csd: video 'b': words must be stored one per row, shape (n, 1); got (6, 0)" in str(err.value)
    assert not (root / "features").exists() or not list((root / "features").iterdir())
