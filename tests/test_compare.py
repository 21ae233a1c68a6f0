"""Comparison table from `dvc exp show --json` (real DVC output shape)."""

import pytest

from m3sa.compare import best_indices, comparison_table, differing_params, records_from_exp_show, select
from m3sa.errors import M3SAError


def _rev(rev, name, filt, mae, corr, exps=None):
    return {
        "rev": rev, "name": name, "error": None, "experiments": exps,
        "data": {
            "params": {"params.yaml": {"data": {"model": {"filter": filt, "dim": 64}}}},
            "metrics": {"metrics/test.json": {"data": {"mean": {"mae": mae, "corr": corr},
                                                        "std": {"mae": 0.01, "corr": 0.02}}}},
        },
    }


PAYLOAD = [
    _rev("workspace", None, "soft", 0.80, 0.70),
    _rev("abcdef1234", "main", "soft", 0.80, 0.70, exps=[
        {"name": "hard", "revs": [_rev("1234abcd99", "hard", "hard", 0.75, 0.60)]},
        {"name": "none", "revs": [_rev("9999aaaa00", "none", "none", 0.90, 0.72)]},
    ]),
]


def test_records_flatten_params_and_metrics():
    recs = records_from_exp_show(PAYLOAD)
    assert [r.name for r in recs] == ["workspace", "main", "hard", "none"]
    assert recs[2].params["model.filter"] == "hard"
    assert recs[2].metrics["test"]["mean"]["mae"] == 0.75


def test_table_marks_best_per_metric_and_lists_only_differing_params():
    recs = select(records_from_exp_show(PAYLOAD), ["main", "hard", "none"])
    assert differing_params(recs) == ["model.filter"]
    table = comparison_table(recs)
    lines = table.splitlines()
    assert lines[0] == "| experiment | model.filter | mae | corr |"
    assert "**0.750 ± 0.010**" in lines[3]  # lowest MAE is best
    assert "**0.720 ± 0.020**" in lines[4]  # highest corr is best
    assert "model.dim" not in table


def test_best_indices_directions_and_ties():
    assert best_indices([0.5, 0.4, None], "mae") == {1}
    assert best_indices([0.5, 0.4], "corr") == {0}
    assert best_indices([0.5, 0.5, 0.4], "corr") == {0, 1}
    assert best_indices([0.5, 0.5], "corr") == set()
    assert best_indices([0.5], "corr") == set()


def test_unknown_name_is_a_clear_error():
    with pytest.raises(M3SAError, match="no experiment or commit named 'nope'"):
        select(records_from_exp_show(PAYLOAD), ["nope"])


@pytest.mark.parametrize("payload", [[1], ["rev"], [{"rev": "workspace", "experiments": ["x"]}],
                                     [{"rev": "abc", "experiments": [{"revs": [3]}]}]])
def test_malformed_exp_show_entries_are_a_clear_error(payload):
    with pytest.raises(M3SAError, match="dvc exp show --json: an entry has an unexpected shape"):
        records_from_exp_show(payload)
