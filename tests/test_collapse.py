"""The collapse check (m3sa.collapse) and its reporting by training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from m3sa.collapse import collapse_reason
from m3sa.config import config_from_dict
from m3sa.training import train_all
from tiny_features import TINY_MODEL as TINY, write_features


def test_healthy_seed_is_not_collapsed():
    assert collapse_reason(0.8, 1.5, 0.7, {"language": 0.9, "acoustic": 0.3, "visual": 0.01}) is None
    assert collapse_reason(0.8, 1.5, -0.4, {}) is None  # anti-correlated is wrong, not constant


@pytest.mark.parametrize("args,needle", [
    ((0.8, 1.5, 0.7, {"language": 0.01, "visual": 0.0}), "every filter gate closed (language 0.010, visual 0.000)"),
    ((0.02, 1.5, 0.7, {}), "constant prediction"),  # 0.02 < 2 % of 1.5
    ((float("nan"), 1.5, 0.7, {}), "constant prediction"),
    ((0.8, 1.5, 0.0, {}), "valid Corr 0.000"),  # undefined Corr is reported as 0
    ((0.8, 1.5, float("nan"), {}), "valid Corr nan"),
])
def test_collapse_reasons(args, needle):
    reason = collapse_reason(*args)
    assert reason is not None and needle in reason


def test_forced_shut_gates_are_reported_per_seed(tmp_path: Path, caplog):
    """All gates forced shut at the start (keep 1e-6 at lambda 1000: the softmax is saturated
    and its gradient vanishes) -> a constant predictor, named in the log and metrics/train.json."""
    features = write_features(tmp_path / "features", sizes=(48, 16, 16))
    cfg = config_from_dict({
        "model": {**TINY, "recipe": "paper", "filter_init_keep": 1e-6},
        "train": {"seeds": [0, 1], "epochs": 1, "batch_size": 16, "num_threads": 1, "device": "cpu"},
    })
    with caplog.at_level(logging.WARNING, logger="m3sa.training"):
        summary = train_all(cfg, features, tmp_path / "models", tmp_path / "live", tmp_path / "train.json")
    assert summary["collapsed_seeds"] == [0, 1]
    for row in summary["per_seed"]:
        assert "every filter gate closed" in row["collapsed"] and "constant prediction" in row["collapsed"]
    assert "seed 0 COLLAPSED" in caplog.text and "2 of 2 seeds collapsed" in caplog.text
    written = json.loads((tmp_path / "train.json").read_text())
    assert written["collapsed_seeds"] == [0, 1] and all(r["collapsed"] for r in written["per_seed"])
