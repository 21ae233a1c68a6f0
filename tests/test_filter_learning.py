"""Does the soft filter learn to drop a modality that is pure noise? (docs/filter.md)

The planted features of ``tiny_features`` carry the sentiment in the words and, almost
exactly, in acoustic feature 0; the visual rows are pure noise. The paper's claim (section
3.4, Figure 2) is that the soft filter keeps what informs and filters such a modality out.
Checked here, per seed, on the last epoch's mean valid filter values: the run has not
collapsed, acoustic (the planted near-perfect signal) keeps at least ``KEEP``, visual at most
``DROP`` and less than ``RATIO`` times acoustic.

Measured on this machine (128 train / 32 valid segments, 24 epochs at a constant lr 3e-3,
the tiny random text encoder at lr_text 1e-3, batch 16), language / acoustic / visual:

- default recipe, seeds 0-4: 0.004 / 0.972 / 0.001, 0.203 / 0.917 / 0.161,
  0.043 / 0.905 / 0.041, 0.036 / 0.903 / 0.046, 0.059 / 0.925 / 0.079 (valid Corr 0.99 in
  every seed). Language is closed as well: with the weak random text encoder acoustic
  suffices, and the sparsity prior closes every gate the fused model does not need;
- paper recipe (eq. 14-21 as written): binary and seed-dependent, seed 0 1.0 / 1.0 / 1.0
  (nothing filtered), seed 1 0.0 / 1.0 / 0.0. Its check is an expected failure, marked
  strict: a change that makes the paper's form separate the noise in every seed turns it
  into an unexpected pass (any error other than the assertion fails it too).
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest

from m3sa.config import config_from_dict
from m3sa.training import train
from tiny_features import TINY_MODEL as TINY, write_features

KEEP = 0.85  # acoustic's last filter value must be at least this (measured 0.903-0.972)
DROP = 0.25  # visual's at most this (measured 0.001-0.161)
RATIO = 0.3  # and below this share of acoustic's (measured 0.001-0.18)


def trained_filter(tmp_path: Path, seed: int, recipe: str) -> tuple[dict[str, float], str | None]:
    """Train 24 epochs on the planted features; the last epoch's mean valid filter values and
    the seed's collapse verdict."""
    import torch

    features = write_features(tmp_path / "features", sizes=(128, 32, 16))
    cfg = config_from_dict({
        "model": {**TINY, "filter": "soft", "recipe": recipe},
        "train": {"seeds": [seed], "epochs": 24, "patience": 24, "lr": 3e-3, "lr_text": 1e-3, "batch_size": 16,
                  "schedule": "constant", "num_threads": 1, "device": "cpu"},
    })
    out = tmp_path / f"seed{seed}"
    result = train(cfg, features, out / "models", out / "live", seed)
    history = json.loads((out / f"models/seed_{seed}/state.json").read_text())["train_state"]["history"]
    return history[-1]["filter"], result["collapsed"]


def check_drops_noise(means: dict[str, float], collapsed: str | None, seed: int) -> None:
    assert set(means) == {"language", "acoustic", "visual"}
    assert collapsed is None, (seed, collapsed)
    assert means["acoustic"] >= KEEP, (seed, means)
    assert means["visual"] <= DROP, (seed, means)
    assert means["visual"] < RATIO * means["acoustic"], (seed, means)


def test_default_recipe_drops_the_noise_modality_seed0(tmp_path):
    check_drops_noise(*trained_filter(tmp_path, 0, "default"), 0)


@pytest.mark.slow
def test_default_recipe_drops_the_noise_modality_seeds_1_to_4(tmp_path):
    """With seed 0 above: 5 tiny seeds of the default recipe, none collapsed, each drops the noise."""
    for seed in range(1, 5):
        check_drops_noise(*trained_filter(tmp_path, seed, "default"), seed)


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="measured: the paper's form keeps the pure-noise modality in seed 0 (docs/filter.md)")
def test_paper_recipe_drops_the_noise_modality(tmp_path):
    for seed in range(3):
        check_drops_noise(*trained_filter(tmp_path, seed, "paper"), seed)

