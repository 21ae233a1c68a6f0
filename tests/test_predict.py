"""Inference on new data: Parquet and CSD inputs agree with evaluation; bad input is refused."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3sa.config import Config, config_from_dict
from m3sa.data.csd import read_csd, write_csd
from m3sa.data.dataset import load_split
from m3sa.data.extract import extract
from m3sa.data.sample import generate_sample
from m3sa.errors import CheckpointError, CSDError, DataError, ModelError
from m3sa.evaluation import evaluate_all
from m3sa.predict import Predictor, standardise_table
from m3sa.training import train_all

ROOT = Path(__file__).resolve().parents[1]
SEQ = pa.list_(pa.list_(pa.float32()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Config, Path, pd.DataFrame]:
    """The tiny sample, extracted, trained one epoch on random:tiny and evaluated (seed 0)."""
    tmp = tmp_path_factory.mktemp("predict")
    cfg = config_from_dict({
        "data": {"sample_size": "tiny", "sample_dir": str(tmp / "sample"), "features_dir": str(tmp / "features")},
        "model": {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2, "head_hidden": 16,
                  "filter_hidden": 8, "dropout": 0.0, "max_tokens": 24},
        "train": {"seeds": [0], "epochs": 1, "batch_size": 16, "num_threads": 1, "device": "cpu",
                  "models_dir": str(tmp / "models"), "live_dir": str(tmp / "live")},
        "evaluate": {"batch_size": 8, "robustness": False},
    })
    generate_sample(cfg.data.sample_dir, "tiny", progress=False)
    extract(cfg.data, progress=False)
    train_all(cfg)
    evaluate_all(cfg, metrics_dir=tmp / "metrics", predictions_path=tmp / "predictions.parquet", device="cpu")
    return cfg, tmp, pd.read_parquet(tmp / "predictions.parquet")


@pytest.fixture(scope="module")
def predictor(trained) -> Predictor:
    return Predictor.from_checkpoint(trained[1] / "models/seed_0/best.pt", device="cpu")


def assert_same_predictions(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    both = expected.merge(got, on="segment_id", suffixes=("_e", "_g"))
    assert len(both) == len(expected)
    for col in ("pred", "pred_language", "filter_language", "filter_acoustic", "filter_visual"):
        np.testing.assert_allclose(both[f"{col}_g"], both[f"{col}_e"], rtol=0, atol=1e-5, err_msg=col)


def test_parquet_matches_evaluation(trained, predictor):
    _, tmp, expected = trained
    got = predictor.predict_parquet(tmp / "features/test.parquet")
    assert list(got.columns[:5]) == ["segment_id", "video_id", "seed", "label", "pred"]
    assert (got["seed"] == 0).all()
    assert_same_predictions(got, expected)
    assert (got["filter_acoustic"].between(0, 1)).all()


def test_csd_matches_evaluation_and_covers_every_segment(trained, predictor):
    cfg, tmp, expected = trained
    got = predictor.predict_csd(cfg.data.sample_dir)
    meta = json.loads((tmp / "features/meta.json").read_text())
    assert len(got) == sum(meta["counts"].values())  # every split's segments, none dropped here
    assert_same_predictions(got, expected)
    labels = pd.concat([pd.read_parquet(tmp / f"features/{s}.parquet", columns=["segment_id", "label"])
                        for s in ("train", "valid", "test")])
    both = labels.merge(got, on="segment_id", suffixes=("_f", "_g"))
    np.testing.assert_array_equal(both["label_f"], both["label_g"])


def test_csd_subset_of_videos(trained, predictor):
    cfg, _, expected = trained
    videos = sorted(expected["video_id"].unique())[:2]
    got = predictor.predict_csd(cfg.data.sample_dir, videos=videos)
    assert set(got["video_id"]) == set(videos)
    assert_same_predictions(got, expected[expected["video_id"].isin(videos)])
    with pytest.raises(DataError, match="video 'nope' is not in the labels file"):
        predictor.predict_csd(cfg.data.sample_dir, videos=["nope"])


def test_unstandardised_parquet_gets_the_checkpoint_statistics(trained, predictor):
    cfg, tmp, expected = trained
    raw = tmp / "raw_features"
    extract(dataclasses.replace(cfg.data, standardize=False, features_dir=str(raw)), progress=False)
    assert_same_predictions(predictor.predict_parquet(raw / "test.parquet"), expected)  # meta.json says raw
    as_is = predictor.predict_parquet(raw / "test.parquet", standardized=True)
    assert not np.allclose(as_is.sort_values("segment_id")["pred"], expected.sort_values("segment_id")["pred"])


def segment_rows(data, m: str) -> dict[str, np.ndarray]:
    """segment_id -> its (rows, d) features of modality m."""
    rag, off = data.fields[m], data.fields[m].offsets.tolist()
    return {seg: rag.values[off[i]:off[i + 1]].numpy() for i, seg in enumerate(data.segment_ids)}


def test_csd_with_zero_frames_and_gaps_is_standardised_as_in_training(trained, predictor, tmp_path):
    """All-zero frame rows (e.g. no face found) and words without frames (a gap) are two things:
    training maps the first to (0 - mean) / std and the second to 0; so must inference."""
    cfg, _, _ = trained
    sample = tmp_path / "sample"
    shutil.copytree(cfg.data.sample_dir, sample)
    visual = read_csd(sample / "visual.csd")
    data = dict(visual.data)
    (v0, (f0, i0)), (v1, (f1, i1)) = list(data.items())[:2]
    f0 = f0.copy()
    f0[: len(f0) // 3] = 0.0  # genuine all-zero frames
    data[v0] = (f0, i0)
    lo, hi = i1[:, 0].min(), i1[:, 1].max()
    keep = (i1[:, 1] < lo + (hi - lo) / 3) | (i1[:, 0] > lo + (hi - lo) / 2)  # a gap: words there have no frames
    data[v1] = (f1[keep], i1[keep])
    write_csd(sample / "visual.csd", visual.root, data)
    features = tmp_path / "features"
    meta = extract(dataclasses.replace(cfg.data, sample_dir=str(sample), features_dir=str(features)), progress=False)
    assert meta["words_without_frames"]["visual"] > 0
    # the checkpoint's model, with the statistics of this extraction, scores its Parquet and its CSD
    same = dataclasses.replace(predictor, checkpoint={**predictor.checkpoint,
                                                      "standardization": meta["standardization"]})
    # the model's visual input, row for row, then its predictions
    rows = {}
    for split in ("train", "valid", "test"):
        part = load_split(features, split, same.tokenizer, cfg.model.max_tokens)
        rows.update(segment_rows(part, "visual"))
    got, _ = same.load_csd(sample)
    for seg, x in segment_rows(got, "visual").items():
        np.testing.assert_allclose(x, rows[seg], rtol=0, atol=1e-5, err_msg=seg)
    expected = pd.concat([same.predict_parquet(features / f"{s}.parquet") for s in ("train", "valid", "test")])
    assert {v0, v1} <= set(expected["video_id"])
    assert_same_predictions(same.predict_csd(sample), expected)


def test_unlabelled_dataframe(trained, predictor):
    _, tmp, expected = trained
    df = pd.read_parquet(tmp / "features/test.parquet").drop(columns=["label", "split", "start", "end"])
    got = predictor.predict_parquet(df)
    assert "label" not in got.columns
    assert_same_predictions(got, expected)


def test_standardise_table_hand_computed():
    # two segments of 2-d rows: [[1, 2], [3, 4]] and [[0, 0]]; mean (1, 2), std (2, 4)
    col = pa.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0]]], type=SEQ)
    table = pa.table({"segment_id": ["a[0]", "b[0]"], "acoustic": col})
    stats = {"acoustic": {"mean": [1.0, 2.0], "std": [2.0, 4.0]}}
    out = standardise_table(table, stats).column("acoustic").to_pylist()
    assert out == [[[0.0, 0.0], [1.0, 0.5]], [[-0.5, -0.5]]]
    # a word without frames (stored as an all-zero row) is 0 after standardising, as in training
    out = standardise_table(table, stats, no_frame_rows=True).column("acoustic").to_pylist()
    assert out == [[[0.0, 0.0], [1.0, 0.5]], [[0.0, 0.0]]]
    assert standardise_table(table, {"visual": stats["acoustic"]}).equals(table)  # absent column: untouched


# ---------------------------------------------------------------- bad input


def test_wrong_width_and_missing_column(trained, predictor):
    _, tmp, _ = trained
    table = pq.read_table(tmp / "features/test.parquet")
    first = table.column("segment_id")[0].as_py()
    narrow = pa.array([[row[:5] for row in seg] for seg in table.column("acoustic").to_pylist()], type=SEQ)
    bad = table.set_column(table.column_names.index("acoustic"), "acoustic", narrow)
    with pytest.raises(ModelError, match=rf"segment '{first[:-3]}.*'acoustic' rows are 5-d.*74"):
        predictor.predict_parquet(bad)
    with pytest.raises(ModelError, match=r"column 'visual' \(visual\) is missing"):
        predictor.predict_parquet(table.drop_columns(["visual", "visual_len"]))
    with pytest.raises(DataError, match="segment_id"):
        predictor.predict_parquet(table.drop_columns(["segment_id"]))


def test_other_statistics_are_refused(trained, predictor, tmp_path):
    _, tmp, _ = trained
    shutil.copytree(tmp / "features", tmp_path / "features")
    meta = json.loads((tmp_path / "features/meta.json").read_text())
    meta["standardization"]["visual"]["mean"][0] += 1.0
    (tmp_path / "features/meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="standardised with the statistics in .*meta.json"):
        predictor.predict_parquet(tmp_path / "features/test.parquet")


def test_bad_csd_inputs(trained, predictor, tmp_path):
    cfg, _, _ = trained
    sample = tmp_path / "sample"
    shutil.copytree(cfg.data.sample_dir, sample)
    visual = read_csd(sample / "visual.csd")
    write_csd(sample / "visual.csd", visual.root, {v: (f[:, :10], iv) for v, (f, iv) in visual.data.items()})
    with pytest.raises(ModelError, match=r"visual.csd: 'visual' features are 10-d .*trained .*'visual': 47"):
        predictor.predict_csd(sample)
    (sample / "visual.csd").unlink()
    with pytest.raises(CSDError, match="visual.csd: file not found"):
        predictor.predict_csd(sample)
    with pytest.raises(ModelError, match="no visual file is named"):
        predictor.predict_csd(sample, files={"visual": None})
    with pytest.raises(DataError, match="unknown key 'video'"):
        predictor.predict_csd(sample, files={"video": "x.csd"})


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="x.pt"):
        Predictor.from_checkpoint(tmp_path / "x.pt", device="cpu")


def run_stage(*args: str) -> int:
    """``python -m stages.predict ARGS`` in this process; its exit code."""
    from stages import predict as stage
    from stages._cli import run

    try:
        run("predict", stage.main, argv=["--params", str(ROOT / "params.yaml"), *args], extra=stage.add_arguments)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_stage_scores_a_csd_folder_and_reports_bad_input_in_one_line(trained, tmp_path, capsys, monkeypatch):
    cfg, tmp, expected = trained
    monkeypatch.delenv("M3SA_DEBUG", raising=False)
    ckpt = str(tmp / "models/seed_0/best.pt")
    out = tmp_path / "out/new.csv"
    assert run_stage("--checkpoint", ckpt, "--input", cfg.data.sample_dir, "--output", str(out), "--device", "cpu") == 0
    assert_same_predictions(pd.read_csv(out), expected)
    assert run_stage("--checkpoint", ckpt, "--input", str(tmp / "features/test.parquet"), "--output",
                     str(tmp_path / "p.parquet"), "--device", "cpu", "--batch-size", "3") == 0
    assert_same_predictions(pd.read_parquet(tmp_path / "p.parquet"), expected)
    capsys.readouterr()
    bad = tmp / "features/meta.json"
    assert run_stage("--checkpoint", ckpt, "--input", str(bad), "--output", str(out)) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: predict: {bad}: not a .parquet file; give a folder of .csd files or a .parquet file"]
    assert run_stage("--checkpoint", ckpt, "--input", cfg.data.sample_dir, "--output", str(out),
                     "--file", "audio=a.csd") == 2
    assert "--file 'audio=a.csd': expected KEY=NAME" in capsys.readouterr().err
