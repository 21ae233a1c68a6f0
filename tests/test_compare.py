"""Comparison table from `dvc exp show --json` (real DVC output shape)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from _report_outputs import commit_run, git
from m3sa.compare import best_indices, comparison_table, differing_params, paired_table, records_from_exp_show, select
from m3sa.errors import M3SAError
from m3sa.metrics import regression_metrics
from m3sa.significance import SystemResults, compare_to_reference
from stages import compare as stage

REPO = Path(__file__).resolve().parents[1]


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


# ------------------------------------------------------------------ --against: paired comparisons from git revisions

@pytest.fixture()
def two_revision_repo(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-3, 3, 120) * 3) / 3
    ref = commit_run(repo, rng, labels, 0.0)
    worse = commit_run(repo, rng, labels, 0.6)  # predictions shifted up: MAE clearly worse
    few = commit_run(repo, rng, labels, 0.0, seeds=(0, 1), with_plots=False)
    payload = [_rev(few, "main", "soft", 0.8, 0.7, exps=[
        {"name": "ref", "revs": [_rev(ref, "ref", "soft", 0.80, 0.70)]},
        {"name": "worse", "revs": [_rev(worse, "worse", "hard", 0.90, 0.70)]}])]
    (tmp_path / "exp.json").write_text(json.dumps(payload))
    monkeypatch.chdir(repo)
    return tmp_path / "exp.json"


def test_against_prints_paired_verdicts_from_git_revisions(two_revision_repo, capsys):
    stage.main(["worse", "main", "--json", str(two_revision_repo), "--against", "ref"])
    out = capsys.readouterr().out
    assert out.splitlines()[2].startswith("| ref |")  # the reference row first
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in out.splitlines() if line.startswith("| ")}
    mae_t = rows["worse", "MAE", "paired t"]
    assert "| 5 |" in mae_t and "**worse**" in mae_t
    assert "**worse**" in rows["worse", "MAE", "bootstrap (test segments)"]
    assert "| 120 |" in rows["worse", "MAE", "bootstrap (test segments)"]
    few = rows["main", "MAE", "paired t"]
    assert "cannot compare: 2 shared seeds (0, 1); the t test over seeds needs 3" in few
    assert "cannot compare: plots/predictions.csv is not committed at" in rows["main", "MAE", "bootstrap (test segments)"]
    assert "Holm-corrected over the rows" in out


def test_against_a_single_row_or_unknown_reference_is_one_line(two_revision_repo, capsys):
    for argv, msg in ((["ref", "--against", "ref"], "nothing to compare against 'ref'"),
                      (["ref", "--against", "nope"], "no experiment or commit named 'nope'")):
        with pytest.raises(SystemExit) as err:
            stage.main([*argv, "--json", str(two_revision_repo)])
        assert err.value.code == 2
        assert msg in capsys.readouterr().err


def test_paired_table_renders_cannot_compare_and_welch():
    ref = SystemResults("ref", {str(s): {"mae": 0.8 + 0.01 * s, "corr": 0.7, "acc2_non0": 0.8} for s in range(4)})
    row = SystemResults("b", {str(s): {"mae": 0.85 + 0.01 * s + 0.001 * (s % 2), "corr": 0.7, "acc2_non0": 0.8}
                              for s in range(4)})
    table = paired_table("ref", compare_to_reference(ref, [row]))
    mae = next(line for line in table.splitlines() if line.startswith("| b | MAE | paired t"))
    assert "| 4 | +0.050 | +0.050 to +0.051 |" in mae and "**worse**" in mae and mae.endswith("|") and ", p " in mae.split("|")[-2]
    assert "| b | MAE | bootstrap (test segments) | – | cannot compare: no per-segment predictions |" in table


# ------------------------------------------------------------------ benchmarks/quality_bench.py --report-only

def _bench_json(path, systems, rng, labels):

    out = {}
    for name, gap in systems.items():
        for seed in range(5):
            pred = 0.7 * labels + rng.normal(0, 0.4, labels.size) + gap
            out.setdefault(name, {})[str(seed)] = {
                "valid": regression_metrics(pred, labels), "filter": {}, "collapsed": None, "best_epoch": 1,
                "epochs_run": 2, "wall_s": 1.0, "curve": [],
                "valid_predictions": {"segment_id": [f"s{i}" for i in range(labels.size)],
                                      "label": labels.tolist(), "pred": pred.tolist()}}
    path.write_text(json.dumps(out))


def test_quality_bench_report_only_merges_json_files_and_compares(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quality_bench", REPO / "benchmarks/quality_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-3, 3, 150) * 3) / 3
    _bench_json(tmp_path / "a.json", {"m3sa": 0.0, "text_only": 0.0}, rng, labels)
    _bench_json(tmp_path / "b.json", {"wo_ml": 0.5}, rng, labels)
    (tmp_path / "f").mkdir()
    (tmp_path / "f/meta.json").write_text(json.dumps({"counts": {"valid": 150}, "modalities": ["language"]}))
    argv = ["--features", str(tmp_path / "f"), "--systems", "m3sa", "text_only", "wo_ml", "--report-only",
            "--json", str(tmp_path / "a.json"), "--json", str(tmp_path / "b.json")]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "Paired comparisons against M3SA (default recipe) (valid split):" in out
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in out.splitlines() if line.startswith("| ")}
    assert "**worse**" in rows["M3SA W/O ML", "MAE", "paired t"]
    assert "**worse**" in rows["M3SA W/O ML", "MAE", "bootstrap (valid segments)"]
    assert "| 150 |" in rows["M3SA W/O ML", "MAE", "bootstrap (valid segments)"]
    assert ("- M3SA W/O ML against M3SA (default recipe) (Holm over 2 rows): MAE (lower is better): worse "
            "(paired t, bootstrap); Corr (higher is better): worse (paired t)") in out
    assert "| Text only | MAE | paired t | 5 |" in out
    with pytest.raises(SystemExit):  # a training run writes one file: refused before anything trains
        bench.main([a for a in argv if a != "--report-only"])
    assert "several --json files are merged for --report-only" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"wo_ml": {"0": {"valid": {}}}}))
    with pytest.raises(SystemExit, match="wo_ml seed 0 is in two --json files with different results"):
        bench.main(argv + ["--json", str(tmp_path / "c.json")])
