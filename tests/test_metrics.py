"""Metrics: hand-computed cases of DESIGN section 4 and their conventions."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.metrics import METRIC_KEYS, aggregate, regression_metrics, weighted_f1


def test_hand_computed_example():
    preds = [2.6, -0.4, 1.5, -0.1, -2.5]
    labels = [3.0, -1.0, 1.0, 0.0, -2.0]
    got = regression_metrics(preds, labels)
    assert list(got) == list(METRIC_KEYS)
    assert all(type(v) is float for v in got.values())
    assert got["mae"] == pytest.approx(2.1 / 5)
    # centred sums: sum(pc*yc) = 14.48, sum(pc^2) = 15.188, sum(yc^2) = 14.8
    assert got["corr"] == pytest.approx(14.48 / math.sqrt(15.188 * 14.8))
    # rounded preds 3, -0, 2, -0, -2 vs labels 3, -1, 1, 0, -2
    assert got["acc7"] == pytest.approx(3 / 5)
    # clipped to [-2, 2]: 2, -0, 2, -0, -2 vs 2, -1, 1, 0, -2
    assert got["acc5"] == pytest.approx(3 / 5)
    # non-zero labels (rows 0, 1, 2, 4): all signs right
    assert got["acc2_non0"] == 1.0 and got["f1_non0"] == 1.0
    # has0: truth T F T T F, pred T F T F F -> per-class F1 0.8 and 0.8
    assert got["acc2_has0"] == pytest.approx(4 / 5)
    assert got["f1_has0"] == pytest.approx(0.8)


def test_rounding_halves_to_even():
    # numpy: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0, -1.5 -> -2
    got = regression_metrics([0.5, 1.5, 2.5, -0.5, -1.5], [0.0, 2.0, 2.0, 0.0, -2.0])
    assert got["acc7"] == 1.0
    # half away from zero would give 1, 2, 3, -1, -2: only 2 of 5 right
    got = regression_metrics([0.5, 2.5], [1.0, 3.0])
    assert got["acc7"] == 0.0
    # Acc5 clips first: 2.5 -> 2
    assert regression_metrics([2.5], [2.0])["acc5"] == 1.0


def test_zero_labels_under_both_conventions():
    preds = [0.2, -0.3, 0.5, -0.5]
    labels = [0.0, 0.0, 1.0, -1.0]
    got = regression_metrics(preds, labels)
    # non0 ignores the two zero labels; the other two have the right sign
    assert got["acc2_non0"] == 1.0
    assert got["f1_non0"] == 1.0
    # has0: zero labels are positive (>= 0): truth T T T F, pred T F T F
    assert got["acc2_has0"] == pytest.approx(3 / 4)
    # class T: tp 2, fn 1 -> F1 0.8 (support 3); class F: tp 1, fp 1 -> F1 2/3 (support 1)
    assert got["f1_has0"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)


def test_prediction_zero_is_negative_in_non0_and_positive_in_has0():
    got = regression_metrics([0.0, 0.0], [1.0, 2.0])
    assert got["acc2_non0"] == 0.0
    assert got["acc2_has0"] == 1.0


def test_f1_argument_order_truth_first():
    # has0 truth T T T F, prediction T T F F
    got = regression_metrics([1.0, 1.0, -0.5, -2.0], [1.0, 2.0, 0.5, -1.0])
    truth_first = (3 * 0.8 + 1 * (2 / 3)) / 4  # weights = true supports 3 and 1
    swapped = (2 * 0.8 + 2 * (2 / 3)) / 4  # weights = predicted supports 2 and 2
    assert got["f1_has0"] == pytest.approx(truth_first)
    assert got["f1_has0"] != pytest.approx(swapped)


def test_all_zero_labels_give_nan_non0():
    got = regression_metrics([0.3, -0.2], [0.0, 0.0])
    assert math.isnan(got["acc2_non0"]) and math.isnan(got["f1_non0"])
    assert got["acc2_has0"] == 0.5


def test_constant_prediction_has_zero_corr():
    assert regression_metrics([0.7, 0.7, 0.7], [1.0, -1.0, 2.0])["corr"] == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="no predictions"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="non-finite"):
        regression_metrics([float("nan")], [1.0])


finite = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=40))
def test_metric_ranges_and_permutation_invariance(pairs):
    p, y = np.array(pairs).T
    got = regression_metrics(p, y)
    assert got["mae"] >= 0
    assert -1.0 - 1e-9 <= got["corr"] <= 1.0 + 1e-9
    for key in ("acc7", "acc5", "acc2_has0", "f1_has0"):
        assert 0.0 <= got[key] <= 1.0
    perm = np.random.default_rng(0).permutation(len(p))
    again = regression_metrics(p[perm], y[perm])
    for key, value in got.items():
        if math.isnan(value):
            assert math.isnan(again[key])
        else:
            assert again[key] == pytest.approx(value, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-300, 300).map(lambda i: i / 100), min_size=2, max_size=40, unique=True))
def test_perfect_predictions(labels):
    got = regression_metrics(labels, labels)
    assert got["mae"] == 0.0
    assert got["corr"] == pytest.approx(1.0)
    assert got["acc7"] == got["acc5"] == got["acc2_has0"] == got["f1_has0"] == 1.0


def test_aggregate_sample_std_over_seeds():
    seeds = [{"mae": 0.5, "corr": 0.1}, {"mae": 0.7, "corr": 0.3}, {"mae": 0.9, "corr": 0.2}]
    got = aggregate(seeds)
    assert got["mean"] == pytest.approx({"mae": 0.7, "corr": 0.2})
    # ddof = 1: sqrt(((-0.2)^2 + 0 + 0.2^2) / 2) = 0.2
    assert got["std"] == pytest.approx({"mae": 0.2, "corr": 0.1})
    assert got["per_seed"] == seeds


def test_aggregate_one_seed_has_zero_std():
    got = aggregate([{"mae": 0.5}])
    assert got == {"mean": {"mae": 0.5}, "std": {"mae": 0.0}, "per_seed": [{"mae": 0.5}]}


def test_aggregate_rejects_mismatched_keys():
    with pytest.raises(ValueError, match="seed 1"):
        aggregate([{"mae": 0.5}, {"corr": 0.1}])
    with pytest.raises(ValueError):
        aggregate([])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_weighted_f1_equals_sklearns(pairs):
    """The numpy F1 is sklearn's f1_score(truth, pred, average="weighted", zero_division=0),
    degenerate cases included (one class only, no prediction of a class)."""
    from sklearn.metrics import f1_score

    truth, pred = (np.array(x, dtype=bool) for x in zip(*pairs))
    want = f1_score(truth, pred, average="weighted", zero_division=0.0)
    assert weighted_f1(truth, pred) == pytest.approx(want, abs=1e-12)


def test_metrics_do_not_import_sklearn():
    """Training scores valid predictions every epoch: the metrics must not pull sklearn (and
    pandas, scipy) into the training process."""
    code = "import sys, m3sa.metrics, m3sa.training; print(sorted(m for m in ('sklearn', 'pandas', 'dvclive') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
