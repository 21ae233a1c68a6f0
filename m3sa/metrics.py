"""Regression metrics of multimodal sentiment analysis, as the MMSA framework computes them.

On predictions p and labels y in [-3, 3] (no clipping for MAE and Corr):

- ``mae``  = mean |p - y|; ``corr`` = Pearson r (0.0 when p or y is constant: r is undefined).
- ``acc7`` = mean(round(clip(p, -3, 3)) == round(clip(y, -3, 3))); ``acc5`` likewise with
  clip(-2, 2). numpy's round: halves go to the even neighbour (0.5 -> 0, 1.5 -> 2, 2.5 -> 2).
- Binary accuracy and F1 in both conventions papers use:
  ``non0``: only samples with y != 0, positive = (> 0) -> ``acc2_non0``, ``f1_non0``;
  ``has0``: all samples, positive = (>= 0) -> ``acc2_has0``, ``f1_has0``.
  F1 is the support-weighted F1 of sklearn's ``f1_score(truth, prediction, average="weighted",
  zero_division=0)`` (the weights are the true class supports, so the order matters), computed
  here in numpy. With no non-zero label the ``non0`` values are NaN.

All values are plain floats, fractions (not percent), unrounded.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

METRIC_KEYS = ("mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0")


def _as_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain non-finite values")
    return arr


def pearson(p: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; 0.0 when either side is constant (undefined correlation)."""
    if np.all(p == p[0]) or np.all(y == y[0]):
        return 0.0
    pc, yc = p - p.mean(), y - y.mean()
    denom = np.sqrt((pc * pc).sum() * (yc * yc).sum())
    return float((pc * yc).sum() / denom) if denom > 0 else 0.0


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class (2 TP / (2 TP + FP + FN), 0 where that is 0 / 0), averaged with the true
    class counts as weights: sklearn's ``f1_score(truth, pred, average="weighted", zero_division=0)``
    for boolean arrays, without importing sklearn."""
    total = 0.0
    for cls in (False, True):
        t, p = truth == cls, pred == cls
        tp = int(np.sum(t & p))
        denom = 2 * tp + int(np.sum(~t & p)) + int(np.sum(t & ~p))
        total += (2 * tp / denom if denom else 0.0) * int(t.sum())
    return total / truth.size


def _binary(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    if truth.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(truth == pred)), weighted_f1(truth, pred)


def regression_metrics(preds: Any, labels: Any) -> dict[str, float]:
    """The eight metrics of DESIGN section 4 (see the module docstring) for 1-D ``preds``/``labels``."""
    p = _as_vector(preds, "predictions")
    y = _as_vector(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("no predictions to score")
    out = {
        "mae": float(np.mean(np.abs(p - y))),
        "corr": pearson(p, y),
        "acc7": float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))),
        "acc5": float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2)))),
    }
    nz = y != 0
    out["acc2_non0"], out["f1_non0"] = _binary(y[nz] > 0, p[nz] > 0)
    out["acc2_has0"], out["f1_has0"] = _binary(y >= 0, p >= 0)
    return out


def aggregate(per_seed: Sequence[dict[str, float]]) -> dict[str, Any]:
    """``{"mean", "std", "per_seed"}`` over seeds.

    std is the sample standard deviation (ddof = 1) for two or more seeds, and 0.0 for one.
    """
    if not per_seed:
        raise ValueError("aggregate needs at least one seed's metrics")
    keys = list(per_seed[0])
    for i, row in enumerate(per_seed):
        if set(row) != set(keys):
            raise ValueError(f"seed {i} has metrics {sorted(row)}, expected {sorted(keys)}")
    table = np.array([[float(row[k]) for k in keys] for row in per_seed])  # (n_seeds, n_keys)
    std = table.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(keys))
    return {
        "mean": {k: float(v) for k, v in zip(keys, table.mean(axis=0))},
        "std": {k: float(v) for k, v in zip(keys, std)},
        "per_seed": [{k: float(row[k]) for k in keys} for row in per_seed],
    }
