"""Determinism: the tiny pipeline run twice with the same params writes the same bytes (CPU).

Two workspaces run sample -> extract -> train -> evaluate, each stage as
``python -m stages.<name>`` would, in fresh interpreters with different hash seeds (so
that nothing may depend on set or dict-of-str ordering). The metrics files are compared
byte for byte; so are the sample's CSD files, the features, the predictions and the plot
tables.
``metrics/train.json`` also records wall-clock time and throughput, which differ between
any two runs: it is compared without those keys.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from e2e import TINY_PARAMS, set_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {**TINY_PARAMS, "data.source": "sample", "train.device": "cpu", "train.num_threads": 1,
          "model.transformer_heads": 2}
TIMING = {"wall_s", "train_s", "samples_per_s", "data_wait_share"}
PIPELINE = """
import importlib
from stages._cli import run
for name in ("sample", "extract", "train", "evaluate"):
    run(name, importlib.import_module("stages." + name).main, argv=[])
"""


def run_pipeline(ws: Path, hash_seed: str) -> None:
    ws.mkdir()
    shutil.copy(ROOT / "params.yaml", ws / "params.yaml")
    set_params(ws / "params.yaml", PARAMS)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed}
    env.pop("M3SA_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", PIPELINE], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def without_timing(path: Path) -> dict:
    doc = json.loads(path.read_text())
    doc.pop("mean", None)  # means of the timing keys among others; per_seed holds the rest
    for row in doc["per_seed"]:
        for key in TIMING:
            row.pop(key)
    return doc


@pytest.mark.slow
def test_two_runs_write_identical_metrics(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_pipeline(a, "1")
    run_pipeline(b, "2")
    names = sorted(p.name for p in (a / "metrics").iterdir())
    assert names == ["masks.json", "robustness.json", "test.json", "train.json", "valid.json"]
    for name in names:
        if name != "train.json":
            assert (a / "metrics" / name).read_bytes() == (b / "metrics" / name).read_bytes(), name
    assert without_timing(a / "metrics" / "train.json") == without_timing(b / "metrics" / "train.json")
    for rel in ("data/sample/words.csd", "data/sample/acoustic.csd", "data/sample/visual.csd",
                "data/sample/labels.csd", "data/sample/folds.json", "data/sample/ground_truth.json",
                "data/features/train.parquet", "data/features/valid.parquet", "data/features/test.parquet",
                "data/features/meta.json", "predictions/test.parquet", "plots/predictions.csv",
                "plots/filter_values.csv"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    wa = torch.load(a / "models/seed_0/best.pt", weights_only=True)["model_state"]
    wb = torch.load(b / "models/seed_0/best.pt", weights_only=True)["model_state"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    test = json.loads((a / "metrics" / "test.json").read_text())
    assert set(test["mean"]) == {"mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}
