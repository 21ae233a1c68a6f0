"""MMSA / MAG-BERT pickle sources: the allowlist loader, both layouts, bad input, round trips."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e2e import ROOT, SHARED, make_project, sh, tool_env
from m3sa.config import DataConfig
from m3sa.data.export import to_mag, to_mmsa
from m3sa.data.extract import extract
from m3sa.data.features import SPLITS, read_split
from m3sa.data.pickles import OFFICIAL, recognise, segment_key, words_of
from m3sa.data.safe_pickle import load_pickle
from m3sa.errors import PickleFileError

REAL = SHARED / "data" / "mosi-real-trainvalid"


# ----------------------------------------------------------------------------- writers of the exact layouts

def mmsa_split(ids: list[str], texts: list[str], labels: list[float], audio_rows: list[int], vision_rows: list[int],
               d_a: int = 5, d_v: int = 20, t_a: int = 8, t_v: int = 6, seed: int = 0) -> dict:
    """An unaligned MMSA split: padded (N, T, d) arrays, lengths, BERT placeholders."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    audio = np.zeros((n, t_a, d_a), np.float32)
    vision = np.zeros((n, t_v, d_v), np.float32)
    for i in range(n):
        audio[i, :audio_rows[i]] = rng.normal(size=(audio_rows[i], d_a))
        vision[i, :vision_rows[i]] = rng.normal(size=(vision_rows[i], d_v))
    return {"raw_text": np.array(texts, dtype=object), "id": np.array(ids, dtype=object), "audio": audio,
            "vision": vision, "audio_lengths": np.array(audio_rows), "vision_lengths": np.array(vision_rows),
            "regression_labels": np.array(labels, np.float32), "annotations": np.array(["Positive"] * n, dtype=object),
            "text": np.zeros((n, 4, 768), np.float32), "text_bert": np.zeros((n, 3, 4), np.float32)}


def mmsa_file(path: Path, **overrides) -> Path:
    splits = {
        "train": mmsa_split(["vA$_$1", "vA$_$2", "vB$_$1"], ["it was good", "bad", "okay i guess"], [1.5, -2.0, 0.2],
                            [8, 3, 5], [6, 2, 4], seed=0),
        "valid": mmsa_split(["vC$_$1"], ["really great film"], [2.8], [4], [4], seed=1),
        "test": mmsa_split(["vD$_$3", "vD$_$4"], ["not for me", "meh"], [-1.0, 0.0], [1, 2], [3, 0], seed=2),
    }
    splits.update(overrides)
    path.write_bytes(pickle.dumps(splits, protocol=4))
    return path


def mag_example(words: list[str], label: float, segment: str, rng: np.random.Generator, d_v: int = 47, d_a: int = 74):
    n = len(words)
    return ((words, rng.normal(size=(n, d_v)), rng.normal(size=(n, d_a))), np.array([[label]]), segment)


def mag_file(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    splits = {"train": [mag_example(["so", "good"], 2.0, "vA[0]", rng), mag_example(["awful"], -2.5, "vA[1]", rng),
                        mag_example(["fine", "i", "think"], 0.4, "vB[0]", rng)],
              "dev": [mag_example(["nice"], 1.0, "vC[0]", rng)],
              "test": [mag_example(["no"], -0.6, "vD[2]", rng)]}
    splits.update(overrides)
    path.write_bytes(pickle.dumps(splits, protocol=4))
    return path


def cfg_for(tmp_path: Path, source: str, pickle_path: Path, **kw) -> DataConfig:
    return DataConfig(source=source, pickle=str(pickle_path), features_dir=str(tmp_path / f"features-{pickle_path.stem}"),
                      **kw)


# ----------------------------------------------------------------------------- the allowlist loader

class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class _CallsSystem:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("payload", [_WritesAFile, _CallsSystem])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path, payload):
    target = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    # Hidden inside an otherwise valid MMSA-looking dict: the loader must refuse it wherever it is.
    bad.write_bytes(pickle.dumps({"train": {"id": np.array(["a$_$1"], dtype=object), "x": payload(str(target))}}))
    with pytest.raises(PickleFileError) as err:
        load_pickle(bad)
    msg = str(err.value)
    assert str(bad) in msg and "nothing from the file was run" in msg and "\n" not in msg
    assert (f"{open.__module__}.open" if payload is _WritesAFile else f"{os.system.__module__}.system") in msg
    assert not target.exists()


def test_the_stage_refuses_a_malicious_pickle_with_one_line(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "aligned_50.pkl"
    bad.write_bytes(pickle.dumps(_CallsSystem(str(target))))
    proc = subprocess.run([sys.executable, "-m", "stages.extract", "--set", "data.source=mmsa", "--set",
                           f"data.pickle={bad}", "--set", f"data.features_dir={tmp_path / 'f'}"],
                          cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "refused" in lines[0] and "Traceback" not in proc.stderr
    assert not target.exists() and not (tmp_path / "f" / "meta.json").exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_strings_and_numbers_load_under_every_protocol(tmp_path, protocol):
    obj = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "s": np.array(["x", "yz"], dtype=object),
           "u": np.array(["ab", "c"]), "i": np.int64(7), "f": np.float32(1.5), "l": [1, 2.5, "t", (b"b", None)],
           "neg": np.array([-np.inf, 0.0])}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = load_pickle(p)
    assert got["a"].dtype == np.float32 and np.array_equal(got["a"], obj["a"])
    assert list(got["s"]) == ["x", "yz"] and list(got["u"]) == ["ab", "c"]
    assert got["i"] == 7 and got["f"] == np.float32(1.5) and got["l"] == obj["l"]
    assert np.array_equal(got["neg"], obj["neg"])


def test_torch_tensors_get_a_message_saying_how_to_convert(tmp_path):
    torch = pytest.importorskip("torch")
    p = tmp_path / "pt.pkl"
    p.write_bytes(pickle.dumps({"audio": torch.zeros(2, 3)}))
    with pytest.raises(PickleFileError, match="torch tensors.*t.numpy"):
        load_pickle(p)
    z = tmp_path / "saved.pt"
    torch.save({"audio": torch.zeros(2)}, z)
    with pytest.raises(PickleFileError, match="zip archive.*torch.load"):
        load_pickle(z)


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    (b"", "ends early"),
    (b"this is not a pickle at all", "not a readable pickle"),
    ("truncated", "ends early"),
])
def test_broken_files_give_one_line(tmp_path, content, match):
    p = tmp_path / "x.pkl"
    if content == "truncated":
        full = pickle.dumps({"audio": np.zeros((50, 50))}, protocol=4)
        p.write_bytes(full[: len(full) // 2])
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(PickleFileError, match=match) as err:
        load_pickle(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


# ----------------------------------------------------------------------------- MMSA layout

def test_mmsa_unaligned_gives_segments_ids_labels_widths_and_lengths(tmp_path):
    cfg = cfg_for(tmp_path, "mmsa", mmsa_file(tmp_path / "unaligned_50.pkl"), standardize=False)
    meta = extract(cfg, progress=False)
    assert meta["source"] == "mmsa" and meta["align"] == "none" and meta["modalities"] == ["language", "acoustic", "visual"]
    assert meta["dims"] == {"acoustic": 5, "visual": 20} and meta["counts"] == {"train": 3, "valid": 1, "test": 2}
    assert meta["videos"] == {"train": 2, "valid": 1, "test": 1}
    assert meta["pickle"]["recognised"] == "unrecognised pickle" and meta["pickle"]["rows"] == "frames"
    assert "text" in meta["pickle"]["not_used"] and "raw_text" in meta["pickle"]["text"]
    assert meta["segments_without_frames"] == {"acoustic": 0, "visual": 1}  # vD$_$4 has no vision rows
    train = read_split(cfg.features_dir, "train").to_pydict()
    assert train["segment_id"] == ["vA[1]", "vA[2]", "vB[1]"] and train["video_id"] == ["vA", "vA", "vB"]
    assert train["words"][2] == ["okay", "i", "guess"] and np.allclose(train["label"], [1.5, -2.0, 0.2])
    assert train["acoustic_len"] == [8, 3, 5] and train["visual_len"] == [6, 2, 4]
    raw = pickle.loads(Path(cfg.pickle).read_bytes())
    assert np.allclose(np.array(train["acoustic"][1]), raw["train"]["audio"][1, :3])
    assert np.isnan(train["start"][0])  # pickles carry no timestamps


def test_mmsa_aligned_rows_follow_the_tokens_without_cls_and_sep(tmp_path):
    split = mmsa_split(["v$_$1", "v$_$2"], ["good movie", "bad"], [1.0, -1.0], [5, 3], [5, 3], t_a=6, t_v=6)
    for k in ("audio_lengths", "vision_lengths"):
        del split[k]
    mask = np.zeros((2, 6))
    mask[0, :5] = 1  # [CLS] good mo ##vie [SEP]
    mask[1, :3] = 1  # [CLS] bad [SEP]
    split["text_bert"] = np.stack([np.zeros((2, 6)), mask, np.zeros((2, 6))], axis=1)
    empty = {k: v[:0] for k, v in split.items()}
    p = tmp_path / "aligned_50.pkl"
    p.write_bytes(pickle.dumps({"train": split, "valid": empty, "test": empty}))
    cfg = cfg_for(tmp_path, "mmsa", p, standardize=False)
    meta = extract(cfg, progress=False)
    assert meta["align"] == "tokens" and meta["pickle"]["rows"] == "tokens"
    train = read_split(cfg.features_dir, "train").to_pydict()
    assert train["acoustic_len"] == [3, 1] and train["words"] == [["good", "movie"], ["bad"]]
    assert np.allclose(np.array(train["visual"][0]), split["vision"][0, 1:4])


def test_minus_inf_audio_is_replaced_and_counted(tmp_path):
    train = mmsa_split(["a$_$1", "b$_$1"], ["x y", "z"], [0.0, 1.0], [3, 2], [2, 2])
    train["audio"][0, 1, 2] = -np.inf
    train["audio"][0, 7, 0] = -np.inf  # padding: not a real frame, not counted
    cfg = cfg_for(tmp_path, "mmsa", mmsa_file(tmp_path / "u.pkl", train=train), standardize=False)
    meta = extract(cfg, progress=False)
    assert meta["nonfinite"] == {"acoustic": 1, "visual": 0}
    assert np.array(read_split(cfg.features_dir, "train").to_pydict()["acoustic"][0])[1, 2] == 0.0


def test_empty_text_is_dropped_and_recorded(tmp_path):
    train = mmsa_split(["a$_$1", "b$_$1"], ["x y", "   "], [0.0, 1.0], [3, 2], [2, 2])
    cfg = cfg_for(tmp_path, "mmsa", mmsa_file(tmp_path / "u.pkl", train=train))
    meta = extract(cfg, progress=False)
    assert meta["counts"]["train"] == 1
    assert meta["dropped"] == [{"segment_id": "b[1]", "video_id": "b", "reason": "empty text"}]


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize("case,match", [
    ("no valid split", "no split 'valid'"),
    ("no id", "split 'train' has no 'id'"),
    ("ragged audio", "'audio' is ragged"),
    ("long lengths", "audio_lengths = 9 disagrees with the 8 rows"),
    ("nan label", "label is NaN"),
    ("label out of range", r"label = 4 is outside \[-3, 3\]"),
    ("duplicate id", "'vA\\[1\\]' appears twice"),
    ("rows disagree", "'audio' has 2 rows but the split has 3 ids"),
    ("not a dict", "holds a list"),
])
def test_bad_mmsa_files_give_one_line(tmp_path, case, match):
    good = mmsa_split(["vA$_$1", "vA$_$2", "vB$_$1"], ["a", "b", "c"], [0.0, 1.0, 2.0], [8, 3, 5], [6, 2, 4])
    p = tmp_path / "bad.pkl"
    if case == "no valid split":
        p.write_bytes(pickle.dumps({"train": good, "test": good}))
    elif case == "not a dict":
        p.write_bytes(pickle.dumps([good]))
    else:
        bad = dict(good)
        if case == "no id":
            bad = _without(good, "id")
        elif case == "ragged audio":
            bad["audio"] = np.array([np.zeros((8, 5)), np.zeros((3, 5)), np.zeros((5, 5))], dtype=object)
        elif case == "long lengths":
            bad["audio_lengths"] = np.array([9, 3, 5])
        elif case == "nan label":
            bad["regression_labels"] = np.array([0.0, np.nan, 1.0], np.float32)
        elif case == "label out of range":
            bad["regression_labels"] = np.array([0.0, 4.0, 1.0], np.float32)
        elif case == "duplicate id":
            bad["id"] = np.array(["vA$_$1", "vA$_$1", "vB$_$1"], dtype=object)
        elif case == "rows disagree":
            bad["audio"] = bad["audio"][:2]
        mmsa_file(p, train=bad)
    with pytest.raises(PickleFileError, match=match) as err:
        extract(cfg_for(tmp_path, "mmsa", p), progress=False)
    assert "\n" not in str(err.value) and str(p) in str(err.value)
    assert not (tmp_path / "features-bad").exists() or not any((tmp_path / "features-bad").iterdir())


def test_official_files_are_named_by_their_sha256():
    sha = next(k for k, v in OFFICIAL.items() if v[0] == "MMSA MOSI aligned_50.pkl")
    assert recognise(sha) == "MMSA MOSI aligned_50.pkl, official"
    assert recognise("0" * 64) == "unrecognised pickle" and recognise(None) == "unrecognised pickle"


def test_segment_ids_of_every_convention():
    p = Path("f.pkl")
    assert segment_key("03bSnISJMiM$_$11", p, "") == ("03bSnISJMiM[11]", "03bSnISJMiM")
    assert segment_key("03bSnISJMiM[11]", p, "") == ("03bSnISJMiM[11]", "03bSnISJMiM")
    assert segment_key("03bSnISJMiM_11", p, "") == ("03bSnISJMiM[11]", "03bSnISJMiM")
    assert segment_key(("vid", 3), p, "") == ("vid[3]", "vid")
    assert segment_key(b"plain", p, "") == ("plain", "plain")


def test_words_split_on_spaces_and_cjk_characters():
    assert words_of("  it was  good ") == ["it", "was", "good"]
    assert words_of("我很开心 ok") == ["我", "很", "开", "心", "ok"]


# ----------------------------------------------------------------------------- MAG-BERT layout

def test_mag_gives_word_level_rows_and_dev_as_valid(tmp_path):
    cfg = cfg_for(tmp_path, "mag", mag_file(tmp_path / "mosi.pkl"), standardize=False, max_words=2)
    meta = extract(cfg, progress=False)
    assert meta["source"] == "mag" and meta["align"] == "words" and meta["dims"] == {"acoustic": 74, "visual": 47}
    assert meta["counts"] == {"train": 3, "valid": 1, "test": 1} and meta["truncated_segments"] == 1
    train = read_split(cfg.features_dir, "train").to_pydict()
    assert train["segment_id"] == ["vA[0]", "vA[1]", "vB[0]"]
    assert train["words"][2] == ["fine", "i"] and train["acoustic_len"] == [2, 1, 2]  # cut at max_words
    raw = pickle.loads(Path(cfg.pickle).read_bytes())
    assert np.allclose(np.array(train["visual"][0]), raw["train"][0][0][1], atol=1e-6)
    assert read_split(cfg.features_dir, "valid").to_pydict()["segment_id"] == ["vC[0]"]


def test_words_that_are_not_utf8_are_replaced_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    path = mag_file(tmp_path / "mosi.pkl", train=[mag_example([b"caf\xe9", b"ok", b"na\xefve"], 1.0, "vA[0]", rng),
                                                  mag_example([b"fin\xe9"], 0.5, "vB[0]", rng)])
    cfg = cfg_for(tmp_path, "mag", path, standardize=False)
    with caplog.at_level("WARNING", logger="m3sa.data.pickles"):
        extract(cfg, progress=False)
    assert read_split(cfg.features_dir, "train").to_pydict()["words"][0] == ["caf\ufffd", "ok", "na\ufffdve"]
    warnings = [r.getMessage() for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warnings) == 1 and "split 'train': 3 text(s)" in warnings[0]  # one line per split, with the count


@pytest.mark.parametrize("case,match", [
    ("rows != words", "1 visual rows for 2 words"),
    ("wrong shape", r"not \(\(words, visual, acoustic\), label, segment\)"),
    ("no dev", "no split 'dev'"),
    ("label text", "the label must be one number"),
])
def test_bad_mag_files_give_one_line(tmp_path, case, match):
    rng = np.random.default_rng(0)
    p = tmp_path / "mosi.pkl"
    if case == "rows != words":
        ex = ((["a", "b"], np.zeros((1, 47)), np.zeros((2, 74))), np.array([[0.0]]), "v[0]")
        mag_file(p, train=[ex])
    elif case == "wrong shape":
        mag_file(p, train=[(["a"], 0.0)])
    elif case == "no dev":
        p.write_bytes(pickle.dumps({"train": [], "test": []}))
    else:
        (w, v, a), _, s = mag_example(["a"], 0.0, "v[0]", rng)
        mag_file(p, train=[((w, v, a), "positive", s)])
    with pytest.raises(PickleFileError, match=match):
        extract(cfg_for(tmp_path, "mag", p), progress=False)


# ----------------------------------------------------------------------------- round trips

def _assert_same(a_dir: str, b_dir: str, features: bool) -> None:
    for s in SPLITS:
        a, b = read_split(a_dir, s).to_pydict(), read_split(b_dir, s).to_pydict()
        assert a["segment_id"] == b["segment_id"] and a["video_id"] == b["video_id"]
        assert a["words"] == b["words"] and a["label"] == b["label"]
        if features:
            for m in ("acoustic", "visual"):
                assert a[f"{m}_len"] == b[f"{m}_len"]
                assert all(np.allclose(x, y, atol=1e-5) for x, y in zip(a[m], b[m]))


def _round_trip(tmp_path: Path, base: DataConfig) -> None:
    raw = dataclasses.replace(base, standardize=False, features_dir=str(tmp_path / "csd-raw"))
    extract(raw, progress=False)
    std = dataclasses.replace(base, standardize=True, features_dir=str(tmp_path / "csd-std"))
    extract(std, progress=False)
    to_mag(raw.features_dir, tmp_path / "mosi.pkl")
    to_mmsa(raw.features_dir, tmp_path / "unaligned.pkl")
    to_mmsa(raw.features_dir, tmp_path / "aligned.pkl", aligned=True, pieces=lambda w: 1 + len(w) // 4)
    for source, name, same_rows in (("mag", "mosi.pkl", True), ("mmsa", "unaligned.pkl", True),
                                    ("mmsa", "aligned.pkl", False)):
        for ref, standardize in ((raw, False), (std, True)):
            cfg = dataclasses.replace(base, source=source, pickle=str(tmp_path / name), standardize=standardize,
                                      features_dir=str(tmp_path / f"{name}-{standardize}"))
            meta = extract(cfg, progress=False)
            assert meta["dims"] == json.loads((Path(ref.features_dir) / "meta.json").read_text())["dims"]
            _assert_same(ref.features_dir, cfg.features_dir, features=same_rows)
        if not same_rows:  # aligned: each word's row repeated once per WordPiece
            a = read_split(raw.features_dir, "train").to_pydict()
            b = read_split(str(tmp_path / f"{name}-False"), "train").to_pydict()
            for words, x, y in zip(a["words"][:50], a["acoustic"][:50], b["acoustic"][:50]):
                reps = [1 + len(w) // 4 for w in words]
                assert np.allclose(np.repeat(np.array(x), reps, axis=0), np.array(y))


def test_round_trip_of_the_embedded_sample(tmp_path):
    from m3sa.data.sample import generate_sample
    generate_sample(tmp_path / "s", "tiny", 0, progress=False)
    _round_trip(tmp_path, DataConfig(source="sample", sample_dir=str(tmp_path / "s"), csd_dir=str(tmp_path / "s")))


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data/mosi-real-trainvalid is absent")
def test_round_trip_of_real_mosi_train_and_valid(tmp_path):
    _round_trip(tmp_path, DataConfig(source="csd", csd_dir=str(REAL), folds=str(REAL / "folds.json")))


# ----------------------------------------------------------------------------- dvc

@pytest.mark.slow
def test_dvc_tracks_the_pickle_as_a_dependency(tmp_path):
    pkl = mmsa_file(tmp_path / "aligned_50.pkl")
    repo = make_project(tmp_path / "proj", {"data.source": "mmsa", "data.pickle": str(pkl)})
    sh(["dvc", "repro", "extract"], repo)
    meta = json.loads((repo / "data/features/meta.json").read_text())
    assert meta["source"] == "mmsa" and meta["counts"]["train"] == 3
    assert str(pkl) not in sh(["dvc", "status", "extract"], repo).stdout
    mmsa_file(pkl, valid=mmsa_split(["vC$_$1"], ["other text"], [1.0], [4], [4], seed=5))
    status = sh(["dvc", "status", "extract"], repo).stdout
    assert str(pkl) in status and "modified" in status
