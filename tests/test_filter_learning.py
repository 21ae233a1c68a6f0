"""Does the soft filter learn to drop a modality that is pure noise? (docs/filter.md)

The planted features of ``tiny_features`` carry the sentiment in the words and in acoustic
feature 0; the visual rows are pure noise. The paper's claim (section 3.4, Figure 2) is that
the soft filter keeps language and filters such a modality out. The threshold checked here:
after training, the visual modality's mean valid filter value is below half of language's.

Measured on this machine (128 train / 32 valid segments, 12 epochs, lr 3e-3, the tiny random
text encoder at lr_text 1e-3, seed 0):

- lambda = 1000 (the paper's and params.yaml's default): language 1.000, acoustic 1.000,
  visual 1.000; every value saturates during the first epoch and never moves again;
- lambda = 1: language 0.440, acoustic 0.451, visual 0.465; the three move together, although
  dropping visual at evaluation leaves the valid MAE unchanged (0.374 -> 0.371).

Neither meets the threshold, so the check is an expected failure, marked strict: a change
that makes the filter separate the noise modality turns it into an unexpected pass and the
suite says so (any error other than the assertion fails it too). docs/filter.md records why (the soft gate's gradient measures the scale of
x_m - b_m, which the rest of the network can absorb, not the modality's usefulness) and the
variants tried.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from m3sa.config import config_from_dict
from m3sa.training import train
from tiny_features import write_features

TINY = {"text_encoder": "random:tiny", "dim": 16, "transformer_heads": 2, "head_hidden": 16, "filter_hidden": 8,
        "dropout": 0.0, "max_tokens": 24}
#: visual's mean filter value must be below this share of language's
RATIO = 0.5


def trained_filter_means(tmp_path: Path, **model: object) -> dict[str, float]:
    """Train 12 epochs on the planted features; the last epoch's mean valid filter values."""
    features = write_features(tmp_path / "features", sizes=(128, 32, 16))
    cfg = config_from_dict({
        "model": {**TINY, "filter": "soft", **model},
        "train": {"seeds": [0], "epochs": 12, "patience": 12, "lr": 3e-3, "lr_text": 1e-3, "batch_size": 16,
                  "num_threads": 1, "device": "cpu"},
    })
    train(cfg, features, tmp_path / "models", tmp_path / "live", 0)
    import torch

    history = torch.load(tmp_path / "models/seed_0/last.pt", weights_only=False)["train_state"]["history"]
    return history[-1]["filter"]


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="measured: the soft filter keeps the pure-noise modality (docs/filter.md)")
@pytest.mark.parametrize("soft_lambda", [1000.0, 1.0])
def test_soft_filter_drops_the_noise_modality(tmp_path, soft_lambda):
    means = trained_filter_means(tmp_path, soft_lambda=soft_lambda)
    assert set(means) == {"language", "acoustic", "visual"}
    assert means["visual"] < RATIO * means["language"], means

