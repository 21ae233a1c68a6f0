"""CSD (CMU-MultimodalSDK computational sequence) reading and writing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m3sa.data.csd import CSD, decode_words, open_csd, read_csd, write_csd
from m3sa.errors import CSDError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GENUINE_LABELS = SHARED / "fixtures" / "CMU_MOSI_Opinion_Labels.csd"


@pytest.mark.skipif(not GENUINE_LABELS.exists(), reason="../shared/fixtures not available")
def test_genuine_sdk_labels_file_reads_93_videos_2199_segments():
    csd = read_csd(GENUINE_LABELS)
    assert csd.root == "Opinion Segment Labels"
    assert csd.metadata["root name"] == "Opinion Segment Labels"
    assert csd.metadata["dataset name"] == "CMU-MOSI"  # JSON-decoded from bytes
    assert csd.metadata["dimension names"] == ["sentiment score"]
    assert len(csd.data) == 93
    assert sum(len(f) for f, _ in csd.data.values()) == 2199
    feats, ivs = csd.data["2WGyTLYerpo"]
    assert feats.shape[1] == 1 and ivs.shape[1] == 2
    assert ivs[43, 0] == ivs[43, 1]  # the one zero-length segment of the genuine file
    labels = np.concatenate([f[:, 0] for f, _ in csd.data.values()])
    assert labels.min() >= -3 and labels.max() <= 3


@pytest.mark.skipif(not GENUINE_LABELS.exists(), reason="../shared/fixtures not available")
def test_streaming_reader_gives_the_same_arrays_one_video_at_a_time():
    whole = read_csd(GENUINE_LABELS)
    with open_csd(GENUINE_LABELS) as seq:
        assert seq.videos() == list(whole.data)
        assert "2WGyTLYerpo" in seq and "nope" not in seq
        for video in seq.videos()[:5]:
            f, i = seq.get(video)
            np.testing.assert_array_equal(f, whole.data[video][0])
            np.testing.assert_array_equal(i, whole.data[video][1])


def _sdk_layout(path: Path, root: str) -> None:
    """What the SDK's writer produces: root/data/<vid>/{features,intervals}, root/metadata/<key> (1,) vlen str."""
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == [root]
        assert set(f[root].keys()) == {"data", "metadata"}
        for key, ds in f[root]["metadata"].items():
            assert ds.shape == (1,)
            assert h5py.check_string_dtype(ds.dtype) is not None
            json.loads(ds[0])  # every value is a JSON string


def test_write_then_read_words_and_features_in_the_sdk_layout(tmp_path):
    path = tmp_path / "w.csd"
    data = {
        "vid_a": (["hello", "sp", "world"], np.array([[0.0, 0.5], [0.5, 0.7], [0.7, 1.2]])),
        "vid_b": (np.arange(6, dtype=np.float32).reshape(3, 2), np.array([[0, 1], [1, 2], [2, 3]], float)),
    }
    write_csd(path, "words", data, {"dataset name": "x", "dimension names": ["word"]})
    _sdk_layout(path, "words")
    with h5py.File(path, "r") as f:
        feats = f["words/data/vid_a/features"]
        assert feats.dtype.kind == "S" and feats.shape == (3, 1)  # words as byte strings, one per row
    csd = read_csd(path)
    assert csd.root == "words" and csd.metadata == {"dataset name": "x", "dimension names": ["word"], "root name": "words"}
    assert decode_words(csd.data["vid_a"][0]) == ["hello", "sp", "world"]
    np.testing.assert_array_equal(csd.data["vid_b"][0], data["vid_b"][0])


def test_reads_gzip_chunked_files_as_the_sdk_writes_them(tmp_path):
    path = tmp_path / "gz.csd"
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    iv = np.stack([np.arange(50) / 100, np.arange(1, 51) / 100], 1)
    with h5py.File(path, "w") as f:
        g = f.create_group("COVAREP")
        v = g.create_group("data").create_group("v1")
        v.create_dataset("features", data=x, compression="gzip", compression_opts=9)
        v.create_dataset("intervals", data=iv, compression="gzip", compression_opts=9)
        m = g.create_group("metadata")
        m.create_dataset("root name", (1,), dtype=h5py.string_dtype())[0] = '"COVAREP"'
    csd = read_csd(path)
    np.testing.assert_array_equal(csd.data["v1"][0], x)
    np.testing.assert_array_equal(csd.data["v1"][1], iv)


def test_direct_offset_reads_equal_hdf5_reads(tmp_path):
    path = tmp_path / "a.csd"
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    write_csd(path, "a", {"v1": (x, np.zeros((20, 2))), "v2": (["a", "bb"], np.ones((2, 2)))})
    with open_csd(path) as seq, h5py.File(path, "r") as f:
        for video in ("v1", "v2"):
            got, iv = seq.get(video)
            want = f[f"a/data/{video}/features"][()]
            assert got.dtype == want.dtype and np.array_equal(got, want)
            assert got.flags.writeable and got.flags.owndata
        assert seq._direct_checked  # the uncompressed arrays took the direct path


# ---------------------------------------------------------------- property: round trip

_name = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/."), min_size=1, max_size=12)
_json = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20)
                     | st.floats(allow_nan=False, allow_infinity=False),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=6)


@st.composite
def _sequences(draw):
    words = draw(st.booleans())
    videos = draw(st.lists(_name, min_size=1, max_size=4, unique=True))
    dim = draw(st.integers(1, 5))
    data = {}
    for v in videos:
        n = draw(st.integers(0, 6))
        iv = np.sort(np.array(draw(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=2 * n, max_size=2 * n)),
                             dtype=np.float64).reshape(n, 2), axis=1)
        if words:
            toks = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8)
                                 .filter(lambda t: not t.endswith("\x00")), min_size=n, max_size=n))
            data[v] = (toks, iv)
        else:
            vals = draw(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=n * dim,
                                 max_size=n * dim))
            data[v] = (np.array(vals, dtype=np.float32).reshape(n, dim), iv)
    meta = draw(st.dictionaries(_name, _json, max_size=4))
    return words, data, meta


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(root=_name, seq=_sequences())
def test_write_read_round_trip(tmp_path, root, seq):
    words, data, meta = seq
    path = tmp_path / "rt.csd"
    write_csd(path, root, data, meta)
    _sdk_layout(path, root)
    back = read_csd(path)
    assert isinstance(back, CSD) and back.root == root
    assert back.metadata == {**meta, "root name": root}
    assert set(back.data) == set(data)
    for v, (f, iv) in data.items():
        got_f, got_iv = back.data[v]
        np.testing.assert_array_equal(got_iv, iv)
        if words:
            assert decode_words(got_f) == list(f)
        else:
            np.testing.assert_array_equal(got_f, f)  # NaN == NaN here


# ---------------------------------------------------------------- bad input: one clear line

def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    with pytest.raises(CSDError) as err:
        read_csd(tmp_path / "nope.csd")
    assert "nope.csd: file not found" in _one_line(err)


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.csd"
    p.write_text("not an hdf5 file")
    with pytest.raises(CSDError) as err:
        read_csd(p)
    assert "text.csd: not an HDF5 file" in _one_line(err)


def test_no_root_group(tmp_path):
    p = tmp_path / "empty.csd"
    with h5py.File(p, "w"):
        pass
    with pytest.raises(CSDError) as err:
        read_csd(p)
    assert "no root group" in _one_line(err)


def test_no_data_group(tmp_path):
    p = tmp_path / "nodata.csd"
    with h5py.File(p, "w") as f:
        f.create_group("COVAREP").create_group("metadata")
    with pytest.raises(CSDError) as err:
        read_csd(p)
    assert "no 'data' group" in _one_line(err)


def _raw(path: Path, features: np.ndarray, intervals: np.ndarray | None) -> None:
    with h5py.File(path, "w") as f:
        v = f.create_group("COVAREP").create_group("data").create_group("vid1")
        v.create_dataset("features", data=features)
        if intervals is not None:
            v.create_dataset("intervals", data=intervals)


@pytest.mark.parametrize("features, intervals, fragment", [
    (np.zeros((3, 2)), np.zeros((4, 2)), "features have 3 rows but intervals 4"),
    (np.zeros(3), np.zeros((3, 2)), "features must be 2-D"),
    (np.zeros((3, 2, 2)), np.zeros((3, 2)), "features must be 2-D"),
    (np.zeros((3, 2)), np.zeros((3, 3)), "intervals must have shape (n, 2)"),
    (np.zeros((3, 2)), None, "no 'intervals' dataset"),
])
def test_malformed_video_names_file_and_video(tmp_path, features, intervals, fragment):
    p = tmp_path / "bad.csd"
    _raw(p, features, intervals)
    with pytest.raises(CSDError) as err:
        read_csd(p)
    msg = _one_line(err)
    assert "bad.csd" in msg and "video 'vid1'" in msg and fragment in msg


def test_unknown_video(tmp_path):
    p = tmp_path / "a.csd"
    write_csd(p, "a", {"v1": (np.ones((1, 1)), np.zeros((1, 2)))})
    with open_csd(p) as seq, pytest.raises(CSDError) as err:
        seq.get("v2")
    assert "video 'v2' not in the file" in _one_line(err)


def test_writer_rejects_bad_shapes_and_leaves_no_file(tmp_path):
    p = tmp_path / "w.csd"
    with pytest.raises(CSDError, match="2 feature rows but 3 intervals"):
        write_csd(p, "a", {"v1": (np.ones((2, 1)), np.zeros((3, 2)))})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CSDError, match="invalid root name"):
        write_csd(p, "a/b", {})
    with pytest.raises(CSDError, match="invalid video id"):
        write_csd(p, "a", {"x/y": (np.ones((1, 1)), np.zeros((1, 2)))})
