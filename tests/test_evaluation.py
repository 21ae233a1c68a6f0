"""Evaluation of trained checkpoints: outputs, their shapes and consistency, bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from m3sa.checkpoint import load_model
from m3sa.config import Config, config_from_dict
from m3sa.data.dataset import load_split, load_tokenizer
from m3sa.errors import CheckpointError, DataError, ModelError
from m3sa.evaluation import evaluate_all, predict
from m3sa.metrics import METRIC_KEYS, regression_metrics
from m3sa.training import train_all
from tiny_features import write_features

ROOT = Path(__file__).resolve().parents[1]
MODS = ["language", "acoustic", "visual"]
N_TEST = 20


def make_cfg(tmp: Path, **model) -> Config:
    return config_from_dict({
        "data": {"features_dir": str(tmp / "features")},
        "model": {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2, "head_hidden": 16,
                  "filter_hidden": 8, "dropout": 0.0, "max_tokens": 24, **model},
        "train": {"seeds": [0, 1], "epochs": 1, "batch_size": 16, "num_threads": 1, "device": "cpu",
                  "max_batches": 2, "models_dir": str(tmp / "models"), "live_dir": str(tmp / "live")},
        "evaluate": {"batch_size": 8},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Config, Path, dict]:
    tmp = tmp_path_factory.mktemp("trained")
    write_features(tmp / "features", sizes=(32, 12, N_TEST))
    cfg = make_cfg(tmp)
    train_all(cfg)
    result = evaluate_all(cfg, metrics_dir=tmp / "metrics", predictions_path=tmp / "predictions/test.parquet")
    return cfg, tmp, result


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_metric_files_shapes(trained):
    cfg, tmp, result = trained
    for name in ("test", "valid"):
        doc = load(tmp / f"metrics/{name}.json")
        assert set(doc) == {"mean", "std", "per_seed"}
        assert set(doc["mean"]) == set(doc["std"]) == set(METRIC_KEYS)
        assert len(doc["per_seed"]) == 2
        assert doc == result[name]
    masks = load(tmp / "metrics/masks.json")
    assert set(masks["mean"]) == set(MODS) and masks["hard_keep_rate"] is None
    assert [s["seed"] for s in masks["per_seed"]] == [0, 1]
    assert all(0.0 <= v <= 1.0 for v in masks["mean"].values())
    robust = load(tmp / "metrics/robustness.json")
    assert set(robust) == set(MODS)
    for m in MODS:
        assert set(robust[m]["mean"]) == set(METRIC_KEYS) and len(robust[m]["per_seed"]) == 2


def test_predictions_table_matches_metrics(trained):
    cfg, tmp, result = trained
    table = pq.read_table(tmp / "predictions/test.parquet")
    expected = ["segment_id", "video_id", "seed", "label", "pred"] + [f"pred_{m}" for m in MODS] \
        + [f"filter_{m}" for m in MODS] + [f"gt_{m}" for m in MODS]
    assert table.column_names == expected
    assert table.num_rows == 2 * N_TEST
    df = table.to_pandas()
    assert sorted(df["seed"].unique()) == [0, 1]
    assert df["gt_visual"].eq(False).all() and df["gt_language"].eq(True).all()
    assert df[[f"filter_{m}" for m in MODS]].apply(lambda c: c.between(0, 1)).all().all()
    for i, seed in enumerate((0, 1)):
        part = df[df["seed"] == seed]
        assert part["segment_id"].is_unique and len(part) == N_TEST
        again = regression_metrics(part["pred"].to_numpy(), part["label"].to_numpy())
        entry = dict(result["test"]["per_seed"][i])
        assert entry.pop("seed") == seed
        assert again == pytest.approx(entry)
        masks = load(tmp / "metrics/masks.json")["per_seed"][i]
        assert masks["language"] == pytest.approx(part["filter_language"].mean(), abs=1e-6)


def test_predict_matches_checkpoint_and_drop_changes_output(trained):
    cfg, tmp, _ = trained
    model, ckpt, mcfg = load_model(tmp / "models/seed_0/best.pt")
    data = load_split(tmp / "features", "test", load_tokenizer(mcfg.model.text_encoder), mcfg.model.max_tokens)
    full = predict(model, data, 5, torch.device("cpu"))
    table = pq.read_table(tmp / "predictions/test.parquet").to_pandas()
    assert np.allclose(full.pred, table[table["seed"] == 0]["pred"].to_numpy(), atol=1e-6)
    assert set(full.unimodal) == set(MODS) and full.pred.shape == (N_TEST,)
    batched = predict(model, data, 64, torch.device("cpu"))
    assert np.allclose(full.pred, batched.pred, atol=1e-5)  # independent of batching and padding
    dropped = predict(model, data, 5, torch.device("cpu"), drop="acoustic")
    assert not np.allclose(full.pred, dropped.pred)


def test_hard_filter_reports_keep_rate(tmp_path):
    write_features(tmp_path / "features", sizes=(16, 8, 8))
    cfg = make_cfg(tmp_path, filter="hard")
    train_all(cfg)
    result = evaluate_all(cfg, metrics_dir=tmp_path / "metrics", predictions_path=tmp_path / "p.parquet")
    assert result["masks"]["hard_keep_rate"] == result["masks"]["mean"]
    filters = pq.read_table(tmp_path / "p.parquet").to_pandas()[[f"filter_{m}" for m in MODS]].to_numpy()
    assert set(np.unique(filters)) <= {0.0, 1.0}  # deterministic 0/1 gates at evaluation


def test_per_seed_entries_carry_their_seed_in_run_order(trained, tmp_path):
    cfg, tmp, result = trained
    doc = cfg.to_dict()
    reordered = config_from_dict({**doc, "train": {**doc["train"], "seeds": [1, 0]}})
    again = evaluate_all(reordered, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")
    by_seed = {e["seed"]: e for e in result["test"]["per_seed"]}
    for name in ("test", "valid"):
        assert [e["seed"] for e in load(tmp_path / f"m/{name}.json")["per_seed"]] == [1, 0]
    for entry in again["test"]["per_seed"]:
        assert entry == pytest.approx(by_seed[entry["seed"]])
    for m in MODS:
        assert [e["seed"] for e in again["robustness"][m]["per_seed"]] == [1, 0]


def test_masks_std_is_sample_std_over_seeds(trained):
    _, tmp, _ = trained
    doc = load(tmp / "metrics/masks.json")
    assert len(doc["per_seed"]) == 2
    for m in MODS:
        values = [s[m] for s in doc["per_seed"]]
        assert doc["std"][m] == pytest.approx(float(np.std(values, ddof=1)))  # as test.json's std


def test_nan_predictions_are_a_model_error(trained, tmp_path):
    cfg, tmp, _ = trained
    models = tmp_path / "models"
    for seed in (0, 1):
        (models / f"seed_{seed}").mkdir(parents=True)
        ckpt = torch.load(tmp / f"models/seed_{seed}/best.pt", weights_only=False)
        if seed == 1:
            for name in ckpt["model_state"]:
                if name.startswith("head.") and name.endswith("bias"):
                    ckpt["model_state"][name].fill_(float("nan"))
        torch.save(ckpt, models / f"seed_{seed}/best.pt")
    cfg = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "models_dir": str(models)}})
    with pytest.raises(ModelError, match=r"seed_1/best\.pt: 12 of 12 predictions on .*valid\.parquet are NaN/inf"):
        evaluate_all(cfg, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")
    assert not (tmp_path / "m").exists()


def test_widths_disagreeing_with_checkpoint(trained, tmp_path):
    cfg, tmp, _ = trained
    other = write_features(tmp_path / "features", sizes=(8, 4, 4), dims={"acoustic": 6, "visual": 4})
    with pytest.raises(ModelError, match=r"'acoustic' features were 5-d in training, but .*meta.json says 6"):
        evaluate_all(cfg, features_dir=other, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")
    fewer = write_features(tmp_path / "f2", sizes=(8, 4, 4), modalities=("language", "acoustic"))
    with pytest.raises(ModelError, match="trained on modalities"):
        evaluate_all(cfg, features_dir=fewer, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")
    assert not (tmp_path / "m").exists()


def test_wrong_schema_is_data_error(trained, tmp_path):
    cfg, tmp, _ = trained
    features = tmp_path / "features"
    features.mkdir()
    for name in ("train.parquet", "valid.parquet", "test.parquet", "meta.json"):
        (features / name).write_bytes((tmp / "features" / name).read_bytes())
    table = pq.read_table(features / "test.parquet").drop_columns(["label"])
    pq.write_table(table, features / "test.parquet")
    with pytest.raises(DataError, match=r"test\.parquet: column 'label' is missing"):
        evaluate_all(cfg, features_dir=features, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")


def test_missing_checkpoint(trained, tmp_path):
    cfg, tmp, _ = trained
    with pytest.raises(CheckpointError, match=r"seed_0/best\.pt: checkpoint not found"):
        evaluate_all(cfg, models_dir=tmp_path, metrics_dir=tmp_path / "m", predictions_path=tmp_path / "p.parquet")


def test_stage_writes_declared_outputs(trained, tmp_path, monkeypatch):
    from stages import evaluate as stage

    cfg, tmp, result = trained
    monkeypatch.chdir(tmp_path)
    stage.main(cfg, Namespace())
    for path in ("metrics/test.json", "metrics/valid.json", "metrics/masks.json", "metrics/robustness.json",
                 "predictions/test.parquet", "plots/predictions.csv", "plots/filter_values.csv"):
        assert (tmp_path / path).is_file(), path
    assert load(tmp_path / "metrics/test.json") == result["test"]
    rows = list(csv.DictReader(open(tmp_path / "plots/predictions.csv")))
    assert len(rows) == 2 * N_TEST and set(rows[0]) == {"segment_id", "seed", "label", "pred"}
    filters = list(csv.DictReader(open(tmp_path / "plots/filter_values.csv")))
    assert [r["modality"] for r in filters] == MODS


def test_stage_error_is_one_line(tmp_path):
    write_features(tmp_path / "features", sizes=(4, 4, 4))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("M3SA_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(ROOT / "params.yaml"),
         "--set", f"data.features_dir={tmp_path / 'features'}", "--set", f"train.models_dir={tmp_path / 'none'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "best.pt: checkpoint not found" in lines[0]
    assert "Traceback" not in proc.stderr


def test_empty_test_split_gives_null_test_metrics_and_real_valid_ones(tmp_path):
    """Datasets with only train and valid folds (e.g. the real MOSI train/valid files)."""
    write_features(tmp_path / "features", sizes=(16, 8, 0))
    cfg = make_cfg(tmp_path)
    train_all(cfg)
    result = evaluate_all(cfg, metrics_dir=tmp_path / "metrics", predictions_path=tmp_path / "p.parquet")
    assert all(np.isnan(v) for v in result["test"]["mean"].values())
    assert np.isfinite(result["valid"]["mean"]["mae"])
    assert load(tmp_path / "metrics/test.json")["mean"]["mae"] is None  # NaN is written as null
