"""Collapse check: is a trained seed's fused prediction (close to) a constant?

A seed collapses when the model predicts (nearly) the same value for every segment: every
gate of the modality filter closed (x_m2 = b_m for all m, so y_M no longer depends on the
input), or the encoders stopped carrying signal. Its MAE then looks plausible (about the
labels' mean absolute deviation) while its correlation is undefined or near 0. The check
runs on the valid split at the selected epoch; training logs it, ``metrics/train.json``
records it per seed and the report shows it.
"""

from __future__ import annotations

import numpy as np

#: Predictions whose spread is below this share of the labels' spread count as constant.
MIN_RELATIVE_STD = 0.02
#: |valid Pearson r| below this counts as "near 0" (r is 0.0 when undefined, see m3sa.metrics).
MIN_ABS_CORR = 0.05
#: Every modality's mean filter value below this counts as "all gates closed".
CLOSED_GATE = 0.05


def collapse_reason(pred_std: float, label_std: float, corr: float, filter_means: dict[str, float]) -> str | None:
    """Why a seed counts as collapsed, or None when it does not.

    pred_std / label_std: standard deviations of the valid predictions and labels;
    corr: valid Pearson r; filter_means: mean valid filter value per modality (empty
    without a filter).
    """
    reasons = []
    if filter_means and all(v < CLOSED_GATE for v in filter_means.values()):
        reasons.append("every filter gate closed (" + ", ".join(f"{m} {v:.3f}" for m, v in filter_means.items()) + ")")
    if not np.isfinite(pred_std) or pred_std < MIN_RELATIVE_STD * max(label_std, 1e-12):
        reasons.append(f"constant prediction (std {pred_std:.2g} against the labels' {label_std:.2g})")
    if not np.isfinite(corr) or abs(corr) < MIN_ABS_CORR:
        reasons.append(f"valid Corr {corr:.3f} (undefined or within {MIN_ABS_CORR} of 0)")
    return "; ".join(reasons) or None
