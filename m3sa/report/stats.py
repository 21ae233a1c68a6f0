"""Small summaries of test predictions shown in the report (DESIGN section 4 conventions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

CLASSES_7 = np.arange(-3, 4)  # sentiment classes -3..3 of Acc7


def seven_class(y: np.ndarray) -> np.ndarray:
    """Acc7 class of each score: round(clip(y, -3, 3)), numpy rounding (halves to even)."""
    return np.round(np.clip(np.asarray(y, dtype=np.float64), -3, 3)).astype(np.int64)


def confusion_7class(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(7, 7) counts; row = true class, column = predicted class, both in -3..3.

    Its trace divided by its sum is Acc7 (DESIGN section 4).
    """
    t = seven_class(labels) + 3  # (N,) in 0..6
    p = seven_class(preds) + 3
    counts = np.zeros((7, 7), dtype=np.int64)
    np.add.at(counts, (t, p), 1)
    return counts


@dataclass(frozen=True)
class FilterSummary:
    """The soft/hard filter's values s_m (eq. 16) for one modality on the test split."""

    modality: str
    n: int
    mean: float
    keep_rate: float  # share of segments with s_m > 0.5 (the hard filter's keep decision)
    mean_informative: Optional[float] = None  # planted ground truth only
    mean_noise: Optional[float] = None
    n_informative: int = 0
    n_noise: int = 0
    auc: Optional[float] = None  # ROC AUC of s_m for "informative" vs "noise"


def filter_summary(preds: pd.DataFrame, modality: str) -> Optional[FilterSummary]:
    """Summary of column ``filter_<m>`` (and ``gt_<m>`` when present); None without it."""
    col = f"filter_{modality}"
    if col not in preds.columns:
        return None
    s = pd.to_numeric(preds[col], errors="coerce")
    keep = s.notna()
    values = s[keep].to_numpy(dtype=np.float64)
    if values.size == 0:
        return None
    summary = dict(modality=modality, n=int(values.size), mean=float(values.mean()),
                   keep_rate=float((values > 0.5).mean()))
    gt_col = f"gt_{modality}"
    if gt_col in preds.columns:
        gt = preds.loc[keep, gt_col]
        known = gt.notna().to_numpy()
        truth = gt[known].astype(bool).to_numpy()
        v = values[known]
        summary.update(n_informative=int(truth.sum()), n_noise=int((~truth).sum()))
        if truth.any():
            summary["mean_informative"] = float(v[truth].mean())
        if (~truth).any():
            summary["mean_noise"] = float(v[~truth].mean())
        if truth.any() and (~truth).any():
            summary["auc"] = float(roc_auc_score(truth, v))
    return FilterSummary(**summary)
