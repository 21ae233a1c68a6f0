"""m3sa.significance: paired t over seeds, segment bootstrap, Holm, verdicts, honest edges."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from m3sa import significance as sig
from m3sa.compare import verdict_lines
from m3sa.metrics import regression_metrics
from m3sa.significance import NotComparable, SegmentPredictions, SystemResults


def _seeds(values) -> dict[str, float]:
    return {str(i): float(v) for i, v in enumerate(values)}


def _segments(labels, preds_per_seed, ids=None) -> SegmentPredictions:
    """Long rows from (seeds, segments) predictions."""
    n = len(labels)
    ids = ids or [f"v{i}" for i in range(n)]
    seeds = [s for s in range(len(preds_per_seed)) for _ in range(n)]
    return sig.segment_predictions(ids * len(preds_per_seed), seeds, list(labels) * len(preds_per_seed),
                                   [v for row in preds_per_seed for v in row])


# ----------------------------------------------------------------------------- t over seeds

def test_paired_t_hand_case_and_scipy():
    cand, ref = [1.0, 2.1, 3.0], [0.9, 2.2, 2.7]
    d = sig.paired_t("mae", _seeds(cand), _seeds(ref))
    # d = (0.1, -0.1, 0.3): mean 0.1, sd 0.2, se 0.2 / sqrt(3), t(0.975, 2) = 4.302653
    half = 4.302653 * 0.2 / math.sqrt(3)
    assert (d.n, d.method) == (3, sig.PAIRED)
    assert d.diff == pytest.approx(0.1) and d.low == pytest.approx(0.1 - half, abs=1e-6)
    assert d.high == pytest.approx(0.1 + half, abs=1e-6)
    t = 0.1 / (0.2 / math.sqrt(3))
    assert d.p == pytest.approx(2 * stats.t.sf(t, 2)) and d.p == pytest.approx(stats.ttest_rel(cand, ref).pvalue)
    assert d.p == pytest.approx(0.4778, abs=1e-4)


def test_paired_t_pairs_by_seed_not_by_position():
    cand = {"2": 3.0, "0": 1.0, "1": 2.1, "7": 9.9}  # seed 7 only here: left out
    ref = {"0": 0.9, "1": 2.2, "2": 2.7, "5": 0.0}
    assert sig.paired_t("mae", cand, ref).p == pytest.approx(stats.ttest_rel([1.0, 2.1, 3.0], [0.9, 2.2, 2.7]).pvalue)


def test_planted_difference_is_detected_and_null_is_not():
    rng = np.random.default_rng(3)
    seed_effect = rng.normal(0, 0.02, 5)
    ref = 0.80 + seed_effect
    worse = ref + 0.03 + rng.normal(0, 0.005, 5)
    same = ref + rng.normal(0, 0.005, 5)
    d = sig.paired_t("mae", _seeds(worse), _seeds(ref))
    assert d.low > 0 and d.p < 0.01
    assert sig.verdict("mae", d.diff, d.p) == sig.WORSE
    assert sig.verdict("corr", d.diff, d.p) == sig.BETTER  # higher Corr is better
    n = sig.paired_t("mae", _seeds(same), _seeds(ref))
    assert n.low < 0 < n.high and sig.verdict("mae", n.diff, n.p) == sig.NO_DIFFERENCE


def test_false_positive_rate_of_the_paired_t_is_near_five_percent():
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(400):
        base = rng.normal(0.8, 0.05, 5)  # shared per-seed effect
        a, b = base + rng.normal(0, 0.01, 5), base + rng.normal(0, 0.01, 5)
        hits += sig.paired_t("mae", _seeds(a), _seeds(b)).p < 0.05
    assert 0.02 <= hits / 400 <= 0.09


def test_paired_sees_a_shared_seed_effect_that_welch_does_not():
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0, 0.05, 5)  # large: data order and init shared by both systems
    ref = 0.8 + seed_effect
    cand = ref + 0.01 + rng.normal(0, 0.002, 5)
    paired = sig.paired_t("mae", _seeds(cand), _seeds(ref))
    welch = sig.welch_t("mae", _seeds(cand), _seeds(ref))
    assert paired.diff == pytest.approx(welch.diff)  # same mean difference
    assert paired.p < 0.01 and welch.p > 0.5
    assert welch.high - welch.low > 10 * (paired.high - paired.low)
    assert welch.p == pytest.approx(stats.ttest_ind(cand, ref, equal_var=False).pvalue)


def test_differences_without_spread():
    assert sig.paired_t("mae", _seeds([1, 2, 3]), _seeds([1, 2, 3])).p == 1.0
    d = sig.paired_t("mae", _seeds([1.5, 2.5, 3.5]), _seeds([1, 2, 3]))
    assert (d.diff, d.low, d.high, d.p) == (0.5, 0.5, 0.5, 0.0)


@pytest.mark.parametrize("cand, ref, shared", [({"0": 1.0, "1": 2.0}, {"0": 1.0, "1": 2.5, "2": 3.0}, "2 shared seeds (0, 1)"),
                                               ({"0": 1.0}, {"1": 1.0}, "0 shared seeds;")])
def test_fewer_than_three_seeds_is_one_line(cand, ref, shared):
    with pytest.raises(NotComparable) as err:
        sig.paired_t("mae", cand, ref)
    msg = str(err.value)
    assert shared in msg and "needs 3" in msg and "bootstrap does not" in msg and "\n" not in msg


def test_per_seed_from_doc():
    doc = {"per_seed": [{"seed": 4, "mae": 0.5}, {"seed": 7, "mae": 0.6}]}
    assert sig.per_seed_from_doc(doc) == {"4": {"mae": 0.5}, "7": {"mae": 0.6}}
    assert sig.per_seed_from_doc({"per_seed": [{"mae": 0.5}]}, seeds=[3]) == {"3": {"mae": 0.5}}
    for doc, msg in (({"mean": {}}, "no per-seed metrics stored"), ({"per_seed": [{"mae": 1}]}, "no seed numbers"),
                     ({"per_seed": [{"seed": 1}, {"seed": 1}]}, "a seed appears twice")):
        with pytest.raises(NotComparable, match=msg):
            sig.per_seed_from_doc(doc)


# ----------------------------------------------------------------------------- segment bootstrap

def _pair(n=300, gap=0.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.round(rng.uniform(-3, 3, n) * 3) / 3  # some exact zeros
    ref = [0.7 * y + rng.normal(0, 0.6, n) for _ in range(3)]
    cand = [0.7 * y + rng.normal(0, 0.6, n) + gap * np.sign(y) for _ in range(3)]
    return y, _segments(y, cand), _segments(y, ref)


def test_bootstrap_point_estimate_is_the_metric_difference_of_seed_averaged_predictions():
    y, cand, ref = _pair()
    out = sig.paired_bootstrap(cand, ref, n_resamples=500)
    y = cand.labels  # ids sorted
    mc, mr = regression_metrics(cand.mean_pred, y), regression_metrics(ref.mean_pred, y)
    assert out["mae"].diff == pytest.approx(mc["mae"] - mr["mae"])
    assert out["acc2_non0"].diff == pytest.approx(mc["acc2_non0"] - mr["acc2_non0"])
    assert out["mae"].n == 300 and out["acc2_non0"].n == int((y != 0).sum())
    for d in out.values():
        assert d.low <= d.diff <= d.high


def test_bootstrap_detects_a_planted_gain():
    _, cand, ref = _pair(gap=0.4)  # predictions pushed towards the label's sign: lower MAE, higher Acc2
    out = sig.paired_bootstrap(cand, ref, n_resamples=2000)
    assert out["mae"].high < 0 and out["acc2_non0"].low > 0
    assert sig.verdict("mae", out["mae"].diff, out["mae"].p) == sig.BETTER
    assert sig.verdict("acc2_non0", out["acc2_non0"].diff, out["acc2_non0"].p) == sig.BETTER


def test_bootstrap_false_positive_rate_on_null_pairs():
    hits = 0
    for draw in range(100):
        _, cand, ref = _pair(n=200, seed=100 + draw)
        hits += sig.paired_bootstrap(cand, ref, metrics=("mae",), n_resamples=400, seed=draw)["mae"].p < 0.05
    assert hits <= 12  # about 5 expected; a broken pairing or interval gives far more


def test_bootstrap_is_reproducible_with_its_seed_and_shaped_right():
    _, cand, ref = _pair(n=686)
    a = sig.paired_bootstrap(cand, ref, seed=7)
    b = sig.paired_bootstrap(cand, ref, seed=7)
    c = sig.paired_bootstrap(cand, ref, seed=8)
    assert a == b and a["mae"].low != c["mae"].low
    blocks = list(sig.resample_counts(686, 5000, np.random.default_rng(0)))
    assert sum(w.shape[0] for w in blocks) == 5000 and all(w.shape[1] == 686 for w in blocks)
    assert all(np.all(w.sum(axis=1) == 686) for w in blocks)  # each resample draws 686 segments


def test_identical_systems_show_no_difference():
    _, cand, _ = _pair()
    out = sig.paired_bootstrap(cand, cand, n_resamples=300)
    assert out["mae"].diff == 0 and out["mae"].p == 1.0 and sig.verdict("mae", 0.0, 1.0) == sig.NO_DIFFERENCE


def test_segment_edges_are_one_line():
    y = [0.5, -1.0, 0.0, 2.0]
    ref = _segments(y, [[0.1, 0.2, 0.3, 0.4]] * 3)
    other_ids = _segments(y, [[0.1, 0.2, 0.3, 0.4]] * 3, ids=["v0", "v1", "v2", "w9"])
    with pytest.raises(NotComparable, match=r"different test segment sets: 1 segments only in the candidate, 1 only"):
        sig.paired_bootstrap(other_ids, ref)
    relabelled = _segments([0.5, -1.0, 0.0, 2.5], [[0.1, 0.2, 0.3, 0.4]] * 3)
    with pytest.raises(NotComparable, match=r"different labels for the same segment: 'v3' is 2.5 in the candidate and 2 "):
        sig.paired_bootstrap(relabelled, ref)
    with pytest.raises(NotComparable, match="no per-segment predictions for the candidate"):
        sig.paired_bootstrap(None, ref)
    with pytest.raises(NotComparable, match="seed 1 has no prediction for 1 segments"):
        sig.segment_predictions(["a", "b", "a"], [0, 0, 1], [1.0, 2.0, 1.0], [0.0, 0.0, 0.0])
    with pytest.raises(NotComparable, match="segment 'a' appears 2 times for seed 0"):
        sig.segment_predictions(["a", "a"], [0, 0], [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(NotComparable, match="segment 'a' has different labels in different seeds"):
        sig.segment_predictions(["a", "a"], [0, 1], [1.0, 2.0], [0.0, 0.0])
    zeros = _segments([0.0, 0.0, 0.0], [[0.1, 0.2, 0.3]] * 2)
    assert "no segment with a non-zero label" in sig.paired_bootstrap(zeros, zeros, n_resamples=50)["acc2_non0"].reason


def test_segment_predictions_round_trip():
    sp = _segments([0.5, -1.0, 0.0], [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    back = SegmentPredictions.from_dict(sp.to_dict())
    assert back.segment_ids == sp.segment_ids and np.allclose(back.preds, sp.preds) and back.seeds == ("0", "1")
    with pytest.raises(NotComparable, match="stored predictions"):
        SegmentPredictions.from_dict({"seeds": [0], "segment_id": ["a"], "label": [1.0], "pred": [[1.0, 2.0]]})


# ----------------------------------------------------------------------------- Holm and tables

def test_holm_hand_case():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert sig.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = sig.holm([0.5, math.nan, 0.01])  # NaN is not counted: m = 2
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert sig.holm([0.6, 0.7]) == [1.0, 1.0]


def test_compare_to_reference_applies_holm_per_metric_and_method():
    rng = np.random.default_rng(2)
    base = {str(s): {"mae": 0.8 + e, "corr": 0.7 - e, "acc2_non0": 0.8} for s, e in enumerate(rng.normal(0, 0.02, 5))}

    def shifted(d):
        return {s: {"mae": m["mae"] + d + rng.normal(0, 0.003), "corr": m["corr"], "acc2_non0": 0.8} for s, m in base.items()}

    rows = [SystemResults("worse", shifted(0.03)), SystemResults("same", shifted(0.0)),
            SystemResults("two seeds", {k: v for k, v in shifted(0.0).items() if k in ("0", "1")})]
    out = sig.compare_to_reference(SystemResults("ref", base), rows, segment_metrics=())
    worse, same, two = (r.cells for r in out)
    assert worse["mae", sig.PAIRED].verdict == sig.WORSE and worse["mae", sig.PAIRED].family == 2
    pw, ps = worse["mae", sig.PAIRED].p, same["mae", sig.PAIRED].p  # two tests in the family: pw < ps
    assert worse["mae", sig.PAIRED].p_holm == pytest.approx(2 * pw)
    assert same["mae", sig.PAIRED].p_holm == pytest.approx(min(1.0, max(2 * pw, ps)))
    assert same["mae", sig.PAIRED].verdict == sig.NO_DIFFERENCE
    assert not two["mae", sig.PAIRED].ok and "2 shared seeds" in two["mae", sig.PAIRED].cell()
    lines = verdict_lines("ref", out)
    assert lines[0] == ("- worse against ref (Holm over 2 rows): MAE (lower is better): worse (paired t); "
                        "Corr (higher is better): no difference detected at 95 % (paired t); "
                        "Acc2 (non0) (higher is better): no difference detected at 95 % (paired t)")  # equal: p 1
    assert lines[2] == "- two seeds against ref: nothing could be compared (see the table)"
    rows = [SystemResults("a", shifted(0.0), _pair(n=50)[1]), SystemResults("b", None, _pair(n=50)[1])]
    mixed = verdict_lines("ref", sig.compare_to_reference(SystemResults("ref", base, _pair(n=50)[2]), rows,
                                                          n_resamples=200))
    assert mixed[0].startswith("- a against ref (Holm over 1 rows (paired t), 2 rows (bootstrap)): MAE")
    missing = sig.compare_to_reference(SystemResults("ref", base), [SystemResults("x", None, per_seed_missing="gone")])
    assert missing[0].cells["mae", sig.PAIRED].reason == "gone"
    assert missing[0].cells["mae", sig.BOOTSTRAP].reason == "no per-segment predictions"  # the row lacks them first
