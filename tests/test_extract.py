"""The extract stage: CSD in, Parquet + meta.json out; alignment, cleaning, folds, bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3sa.config import CSDFiles, DataConfig, load_params
from m3sa.data.align import EPSILON
from m3sa.data.csd import decode_words, read_csd, write_csd
from m3sa.data.extract import extract
from m3sa.data.features import read_meta, read_split, sequence_values
from m3sa.data.sample import generate_sample
from m3sa.errors import ConfigError, CSDError, DataError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL = SHARED / "data" / "mosi-real-trainvalid"
SPLITS = ("train", "valid", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "tiny"
    generate_sample(out, "tiny", seed=0, progress=False)
    return out


def sample_cfg(tiny: Path, out: Path, **kw) -> DataConfig:
    return DataConfig(source="sample", sample_dir=str(tiny), features_dir=str(out), **kw)


def table(out: Path, split: str) -> list[dict]:
    return pq.read_table(out / f"{split}.parquet").to_pylist()


@pytest.fixture(scope="module")
def extracted(tiny, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("features")
    return out, extract(sample_cfg(tiny, out), progress=False)


# ---------------------------------------------------------------- the sample, align=words

def test_outputs_and_meta_follow_the_contract(tiny, extracted):
    out, meta = extracted
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.parquet", "train.parquet", "valid.parquet"]
    assert json.loads((out / "meta.json").read_text()) == meta == read_meta(out)
    assert meta["modalities"] == ["language", "acoustic", "visual"]
    assert meta["dims"] == {"acoustic": 74, "visual": 47}
    assert meta["source"] == "sample" and meta["align"] == "words" and meta["has_ground_truth"]
    for name in ("words.csd", "acoustic.csd", "visual.csd", "labels.csd", "folds.json", "ground_truth.json"):
        assert meta["inputs"][name] == hashlib.sha256((tiny / name).read_bytes()).hexdigest()
    assert meta["params"]["align"] == "words" and meta["params"]["files"]["words"]
    gt = json.loads((tiny / "ground_truth.json").read_text())
    assert sum(meta["counts"].values()) + len(meta["dropped"]) == len(gt)
    folds = json.loads((tiny / "folds.json").read_text())
    for split in SPLITS:
        t = read_split(out, split)
        assert t.num_rows == meta["counts"][split]
        rows = t.to_pylist()
        assert {r["video_id"] for r in rows} <= set(folds[split]) and {r["split"] for r in rows} <= {split}
        for r in rows:
            assert r["segment_id"].startswith(r["video_id"] + "[")
            assert 1 <= len(r["words"]) <= 50 and "sp" not in r["words"]
            assert len(r["acoustic"]) == len(r["words"]) == r["acoustic_len"] == r["visual_len"]
            assert len(r["acoustic"][0]) == 74 and len(r["visual"][0]) == 47
            assert r["gt_acoustic"] == gt[r["segment_id"]]["acoustic"] and r["gt_language"] is True
            assert -3 <= r["label"] <= 3 and r["end"] > r["start"]


def test_train_features_are_standardised_with_train_statistics(extracted):
    out, meta = extracted
    x, _ = sequence_values(read_split(out, "train").column("acoustic"), 74)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-3)
    st = meta["standardization"]["acoustic"]
    assert len(st["mean"]) == len(st["std"]) == 74 and min(st["std"]) > 0
    assert abs(st["mean"][0] - 150) < 20  # F0-like feature, raw scale


def test_valid_and_test_use_the_train_statistics(tiny, extracted, tmp_path):
    out, meta = extracted
    raw = tmp_path / "raw"
    extract(sample_cfg(tiny, raw, standardize=False), progress=False)
    for split in SPLITS:
        for m, dim in meta["dims"].items():
            z, _ = sequence_values(read_split(out, split).column(m), dim)
            x, _ = sequence_values(read_split(raw, split).column(m), dim)
            mean, std = (np.array(meta["standardization"][m][k]) for k in ("mean", "std"))
            np.testing.assert_allclose(z, (x - mean) / std, rtol=1e-4, atol=1e-4)


def test_given_statistics_standardise_every_split_in_one_pass(tiny, extracted, tmp_path):
    out, meta = extracted
    again = extract(sample_cfg(tiny, tmp_path / "given"), progress=False, statistics=meta["standardization"])
    assert again["standardization"] == meta["standardization"]
    for split in SPLITS:
        for m, dim in meta["dims"].items():
            z, _ = sequence_values(read_split(out, split).column(m), dim)
            g, _ = sequence_values(read_split(tmp_path / "given", split).column(m), dim)
            np.testing.assert_allclose(g, z, rtol=0, atol=1e-5)
    shifted = {m: {"mean": [v + 1.0 for v in st["mean"]], "std": st["std"]} for m, st in meta["standardization"].items()}
    moved = extract(sample_cfg(tiny, tmp_path / "shifted"), progress=False, statistics=shifted)
    assert moved["standardization"] == shifted  # the given ones, not the train split's


@pytest.mark.parametrize("change, message", [
    (lambda st: st.pop("visual"), r"statistics have no 'visual' entry"),
    (lambda st: st["acoustic"].update(mean=[0.0] * 3), r"'acoustic' features are 74-d, but the given .* are 3-d"),
    (lambda st: st["acoustic"]["std"].__setitem__(0, 0.0), r"statistics of 'acoustic' hold a non-finite mean or a std <= 0"),
])
def test_bad_given_statistics_are_data_errors(tiny, extracted, tmp_path, change, message):
    _, meta = extracted
    stats = json.loads(json.dumps(meta["standardization"]))
    change(stats)
    with pytest.raises(DataError, match=message):
        extract(sample_cfg(tiny, tmp_path / "bad"), progress=False, statistics=stats)


def _loop_reference(tiny: Path, segment_id: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """The segment's words and per-word frame means by a plain per-word loop (cleaned frames)."""
    video, k = segment_id[:-1].split("[")
    k = int(k)
    seg = read_csd(tiny / "labels.csd").data[video][1][k].astype(np.float64)
    wf, wiv = read_csd(tiny / "words.csd").data[video]
    words = decode_words(wf)
    ids = [i for i, (w0, w1) in enumerate(wiv) if min(w1, seg[1]) - max(w0, seg[0]) > 2 * EPSILON and words[i] != "sp"]
    out = {}
    for m in ("acoustic", "visual"):
        x, fiv = read_csd(tiny / f"{m}.csd").data[video]
        x = np.where(np.isfinite(x), x, 0.0)
        rows = []
        for i in ids:
            sel = [j for j, (f0, f1) in enumerate(fiv) if min(f1, wiv[i, 1]) - max(f0, wiv[i, 0]) > EPSILON]
            rows.append(x[sel].mean(axis=0))
        out[m] = np.array(rows)
    return [words[i] for i in ids], out


def test_word_averages_equal_a_per_word_loop(tiny, tmp_path):
    out = tmp_path / "raw"
    extract(sample_cfg(tiny, out, standardize=False), progress=False)
    rows = table(out, "valid") + table(out, "test")[:3]
    for r in rows[:8]:
        words, ref = _loop_reference(tiny, r["segment_id"])
        assert r["words"] == words
        for m in ("acoustic", "visual"):
            np.testing.assert_allclose(np.array(r[m]), ref[m], rtol=1e-5, atol=1e-4)


def test_nonfinite_values_are_replaced_and_counted(tiny, extracted, tmp_path):
    out, meta = extracted
    assert meta["nonfinite"]["acoustic"] > 0 and meta["nonfinite"]["visual"] == 0
    for split in SPLITS:
        x, _ = sequence_values(read_split(out, split).column("acoustic"), 74)
        assert np.isfinite(x).all()
    # align=none keeps frames: count = non-finite values in the frames kept
    out2 = tmp_path / "frames"
    meta2 = extract(sample_cfg(tiny, out2, align="none", standardize=False, max_frames=100000), progress=False)
    assert meta2["nonfinite"]["acoustic"] > 0


def test_align_none_keeps_downsampled_frames(tiny, tmp_path):
    out = tmp_path / "none"
    meta = extract(sample_cfg(tiny, out, align="none", max_frames=40, downsample=3, standardize=False), progress=False)
    assert meta["align"] == "none"
    rows = table(out, "train")
    labels = read_csd(tiny / "labels.csd").data
    for r in rows[:10]:
        video, k = r["segment_id"][:-1].split("[")
        s, e = labels[video][1][int(k)].astype(np.float64)
        n_frames = int(round((e - s) * 100))  # segment edges lie on the 10 ms grid
        assert r["acoustic_len"] == len(r["acoustic"]) == min(40, -(-n_frames // 3))
        assert r["visual_len"] <= 40 and len(r["words"]) >= 1


# ---------------------------------------------------------------- hand-made CSD datasets

def frames(n: int, hz: float) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    return np.stack([i[:-1] / hz, i[1:] / hz], axis=1)


def write_dataset(root: Path, videos: dict[str, dict], label_cols: int = 1, with_visual: bool = True) -> DataConfig:
    """CSD files for ``videos``: each {'words': [(w, s, e)], 'segments': [(s, e, y)], 'seconds': T}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words, acoustic, visual, labels = {}, {}, {}, {}
    for vid, v in videos.items():
        if "words" in v:
            words[vid] = ([w for w, _, _ in v["words"]], np.array([[s, e] for _, s, e in v["words"]], float))
        n = int(v["seconds"] * 100)
        acoustic[vid] = (rng.normal(size=(n, 3)).astype(np.float32), frames(n, 100))
        visual[vid] = (rng.normal(size=(int(v["seconds"] * 30), 2)).astype(np.float32), frames(int(v["seconds"] * 30), 30))
        y = np.array([[row[2]] * label_cols for row in v["segments"]], np.float32)
        if label_cols > 1:
            y[:, 1:] = 0.5
        labels[vid] = (y, np.array([[s, e] for s, e, _ in v["segments"]], np.float32))
    write_csd(root / "words.csd", "words", words)
    write_csd(root / "acoustic.csd", "COVAREP", acoustic)
    if with_visual:
        write_csd(root / "visual.csd", "FACET", visual)
    write_csd(root / "labels.csd", "Opinion Segment Labels", labels)
    folds = {"train": sorted(videos)[:-1] or sorted(videos), "valid": sorted(videos)[-1:], "test": []}
    (root / "folds.json").write_text(json.dumps(folds))
    return DataConfig(source="csd", csd_dir=str(root), folds=str(root / "folds.json"),
                      files=CSDFiles(words="words.csd", acoustic="acoustic.csd",
                                     visual="visual.csd" if with_visual else None, labels="labels.csd"),
                      features_dir=str(root / "features"))


def simple_video(seconds: float = 4.0, y: float = 1.0) -> dict:
    return {"seconds": seconds,
            "words": [("it", 0.5, 0.8), ("sp", 0.8, 1.0), ("was", 1.0, 1.3), ("good", 1.3, 1.7), ("ok", 2.0, 2.4)],
            "segments": [(0.5, 1.7, y), (2.0, 2.4, -y)]}


def test_folds_with_only_train_and_valid_and_a_dataset_without_visual(tmp_path):
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "b": simple_video(y=2.0)}, with_visual=False)
    meta = extract(cfg, progress=False)
    assert meta["modalities"] == ["language", "acoustic"] and meta["dims"] == {"acoustic": 3}
    assert meta["counts"] == {"train": 2, "valid": 2, "test": 0}
    out = Path(cfg.features_dir)
    assert "visual" not in pq.read_schema(out / "train.parquet").names
    assert pq.read_table(out / "test.parquet").num_rows == 0
    rows = table(out, "train")
    assert [r["words"] for r in rows] == [["it", "was", "good"], ["ok"]]


def test_float32_segment_end_on_a_long_video_does_not_take_the_next_word(tmp_path):
    t = next(x for x in np.arange(25600, 40000) / 100 if float(np.float32(x)) - x > EPSILON)
    video = {"seconds": t + 2,
             "words": [("really", t - 1.0, t - 0.5), ("good", t - 0.5, t), ("but", t, t + 0.4), ("long", t + 0.4, t + 1)],
             "segments": [(t - 1.0, t, 2.0), (t, t + 1, 0.0)]}
    cfg = write_dataset(tmp_path / "d", {"a": video, "b": simple_video()})
    extract(cfg, progress=False)
    rows = {r["segment_id"]: r["words"] for r in table(Path(cfg.features_dir), "train")}
    assert rows["a[0]"] == ["really", "good"] and rows["a[1]"] == ["but", "long"]


def test_mosei_label_rows_pick_the_configured_column(tmp_path):
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(y=-2.0), "b": simple_video()}, label_cols=7)
    extract(cfg, progress=False)
    assert table(Path(cfg.features_dir), "train")[0]["label"] == -2.0
    extract(dataclasses.replace(cfg, label_column=3), progress=False)
    assert table(Path(cfg.features_dir), "train")[0]["label"] == 0.5
    with pytest.raises(DataError, match=r"7 column\(s\) but data.label_column = 7"):
        extract(dataclasses.replace(cfg, label_column=7), progress=False)


def test_zero_length_reversed_and_wordless_segments_are_dropped_and_reported(tmp_path):
    v = simple_video()
    v["segments"] += [(3.0, 3.0, 1.0), (3.5, 3.2, 1.0), (3.3, 3.9, 1.0)]
    cfg = write_dataset(tmp_path / "d", {"a": v, "b": simple_video()})
    meta = extract(cfg, progress=False)
    reasons = {d["segment_id"]: d["reason"] for d in meta["dropped"]}
    assert reasons["a[2]"].startswith("zero-length interval")
    assert reasons["a[3]"].startswith("reversed interval")
    assert reasons["a[4]"] == "no words in the segment interval"
    assert meta["counts"]["train"] == 2


def test_video_missing_from_a_modality_drop_or_error(tmp_path, caplog):
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "b": simple_video(), "c": simple_video()})
    acoustic = read_csd(tmp_path / "d" / "acoustic.csd")
    write_csd(tmp_path / "d" / "acoustic.csd", "COVAREP", {k: v for k, v in acoustic.data.items() if k != "b"})
    meta = extract(cfg, progress=False)
    dropped = [d for d in meta["dropped"] if d["video_id"] == "b"]
    assert len(dropped) == 2 and "missing from the acoustic file acoustic.csd" in dropped[0]["reason"]
    with pytest.raises(DataError) as err:
        extract(dataclasses.replace(cfg, on_missing="error"), progress=False)
    assert "acoustic.csd: video 'b' (in the labels) is missing" in str(err.value)


def test_fold_ids_absent_from_labels_and_labelled_videos_in_no_fold(tmp_path, caplog):
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "b": simple_video(), "c": simple_video()})
    (tmp_path / "d" / "folds.json").write_text(json.dumps({"train": ["a", "ghost"], "valid": ["b"], "test": []}))
    with caplog.at_level(logging.WARNING):
        meta = extract(cfg, progress=False)
    assert meta["fold_ids_not_in_labels"] == ["ghost"] and meta["videos_in_no_fold"] == ["c"]
    assert meta["counts"] == {"train": 2, "valid": 2, "test": 0}
    assert "ghost" in caplog.text


def test_random_and_standard_folds(tmp_path):
    cfg = write_dataset(tmp_path / "d", {f"v{i}": simple_video() for i in range(10)})
    meta = extract(dataclasses.replace(cfg, folds="random", split_seed=3), progress=False)
    assert meta["counts"] == {"train": 14, "valid": 2, "test": 4}
    with pytest.raises(DataError, match="no video of the train fold is in the labels"):
        extract(dataclasses.replace(cfg, folds="mosi"), progress=False)


# ---------------------------------------------------------------- bad input: one clear line

def _msg(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_label_values_name_the_file_video_and_row(tmp_path):
    for bad, fragment in ((np.nan, "row 1: label is NaN"), (3.5, "row 1: label = 3.5 is outside [-3, 3]")):
        v = simple_video()
        v["segments"][1] = (2.0, 2.4, bad)
        cfg = write_dataset(tmp_path / str(bad), {"a": v, "b": simple_video()})
        with pytest.raises(DataError) as err:
            extract(cfg, progress=False)
        assert f"labels.csd: video 'a', {fragment}" in _msg(err)
        assert not list(Path(cfg.features_dir).glob("*.parquet")) and not list(Path(cfg.features_dir).glob(".*"))


def test_errors_leave_no_partial_output_and_keep_previous_outputs(tmp_path):
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "z": simple_video()})
    extract(cfg, progress=False)
    out = Path(cfg.features_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    v = simple_video()
    v["segments"][0] = (0.5, 1.7, np.nan)
    write_dataset(tmp_path / "d", {"a": simple_video(), "z": v})  # the last video is bad
    with pytest.raises(DataError):
        extract(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("breakage, error, fragment", [
    ("missing", CSDError, "acoustic.csd: file not found"),
    ("not_hdf5", CSDError, "acoustic.csd: not an HDF5 file"),
    ("no_root", CSDError, "acoustic.csd: no root group"),
    ("row_mismatch", CSDError, "acoustic.csd: video 'a': features have 400 rows but intervals 399"),
    ("not_2d", CSDError, "acoustic.csd: video 'a': features must be 2-D"),
    ("width", CSDError, "acoustic.csd: video 'b': 4 features per row, but the file's first video has 3"),
])
def test_malformed_input_files(tmp_path, breakage, error, fragment):
    import h5py

    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "b": simple_video()})
    p = tmp_path / "d" / "acoustic.csd"
    if breakage == "missing":
        p.unlink()
    elif breakage == "not_hdf5":
        p.write_text("plain text")
    elif breakage == "no_root":
        p.unlink()
        h5py.File(p, "w").close()
    else:
        with h5py.File(p, "a") as f:
            g = f["COVAREP/data/a" if breakage != "width" else "COVAREP/data/b"]
            x, iv = g["features"][()], g["intervals"][()]
            del g["features"], g["intervals"]
            if breakage == "row_mismatch":
                g["features"], g["intervals"] = x, iv[:-1]
            elif breakage == "not_2d":
                g["features"], g["intervals"] = x[:, 0], iv
            else:
                g["features"], g["intervals"] = np.concatenate([x, x[:, :1]], axis=1), iv
    with pytest.raises(error) as err:
        extract(cfg, progress=False)
    assert fragment in _msg(err)


def test_params_naming_unknown_options(tmp_path):
    with pytest.raises(ConfigError, match="'data.align' = 'frames' is not allowed"):
        load_params(ROOT / "params.yaml", ["data.align=frames"])
    with pytest.raises(ConfigError, match="'data.on_missing' = 'skip' is not allowed"):
        load_params(ROOT / "params.yaml", ["data.on_missing=skip"])
    cfg = write_dataset(tmp_path / "d", {"a": simple_video(), "b": simple_video()})
    with pytest.raises(ConfigError, match="'data.folds' = 'mosii' is not allowed"):
        extract(dataclasses.replace(cfg, folds="mosii"), progress=False)
    with pytest.raises(DataError, match="nofolds.json: folds file not found"):
        extract(dataclasses.replace(cfg, folds=str(tmp_path / "nofolds.json")), progress=False)
    (tmp_path / "bad.json").write_text(json.dumps({"train": ["a"], "val": ["b"]}))
    with pytest.raises(DataError, match="unknown split 'val'"):
        extract(dataclasses.replace(cfg, folds=str(tmp_path / "bad.json")), progress=False)
    with pytest.raises(ConfigError, match="needs a words file"):
        extract(dataclasses.replace(cfg, files=dataclasses.replace(cfg.files, words=None)), progress=False)


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "stages.extract", "--set", f"data.sample_dir={tmp_path / 'nothing'}",
         "--set", f"data.features_dir={tmp_path / 'out'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: extract: ") and "labels.csd: file not found" in lines[0]
    assert "Traceback" not in proc.stderr


def test_read_split_rejects_a_wrong_schema(extracted, tmp_path):
    out, _ = extracted
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text((out / "meta.json").read_text())
    good = pq.read_table(out / "train.parquet")
    t = good.set_column(good.schema.get_field_index("label"), "label",
                        pa.array([str(v) for v in good.column("label").to_pylist()]))
    pq.write_table(t, bad / "train.parquet")
    with pytest.raises(DataError, match="column 'label' has type string"):
        read_split(bad, "train")
    pq.write_table(good.drop_columns(["words"]), bad / "train.parquet")
    with pytest.raises(DataError, match="column 'words' is missing"):
        read_split(bad, "train")
    with pytest.raises(DataError, match="valid.parquet: not found"):
        read_split(bad, "valid")


# ---------------------------------------------------------------- real MOSI text and labels

@pytest.mark.skipif(not REAL.exists(), reason="../shared/data/mosi-real-trainvalid not available")
def test_real_mosi_train_valid_with_73d_acoustic_and_no_visual(tmp_path):
    cfg = DataConfig(source="csd", csd_dir=str(REAL), folds=str(REAL / "folds.json"),
                     files=CSDFiles(visual=None), features_dir=str(tmp_path / "f"))
    meta = extract(cfg, progress=False)
    assert meta["modalities"] == ["language", "acoustic"] and meta["dims"] == {"acoustic": 73}
    # standard folds: 1284 train and 229 valid segments; the genuine labels' one zero-length
    # segment (train) is reported, not extracted
    assert meta["counts"] == {"train": 1283, "valid": 229, "test": 0}
    assert [(d["segment_id"], d["reason"].split(" (")[0]) for d in meta["dropped"]] == [
        ("2WGyTLYerpo[43]", "zero-length interval")]
    assert meta["fold_ids_not_in_labels"] == [] and meta["videos_in_no_fold"] == []
    rows = table(tmp_path / "f", "valid")
    assert all(len(r["words"]) == r["acoustic_len"] >= 1 for r in rows)
    assert any(w in ("good", "bad", "movie") for r in rows for w in r["words"])
