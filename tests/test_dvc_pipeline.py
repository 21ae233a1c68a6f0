"""End-to-end: the real `dvc` CLI on the real pipeline, tiny data, temp git repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e import make_project, set_params, sh

pytestmark = pytest.mark.slow

METRIC_KEYS = {"mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}


def restore(repo: Path) -> None:
    """Back to the committed baseline: params, dvc.lock and the outputs it names."""
    sh(["git", "reset", "-q", "--hard"], repo)
    sh(["dvc", "checkout", "-f"], repo)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("dvc") / "proj")
    sh(["dvc", "repro"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "baseline run"], repo)
    return repo


def test_repro_from_scratch_writes_every_declared_output(project):
    for rel in ["data/features/train.parquet", "data/features/meta.json", "models/seed_0/best.pt",
                "predictions/test.parquet", "reports/report.html", "reports/report.md",
                "plots/predictions.csv", "plots/filter_values.csv"]:
        assert (project / rel).exists(), rel
    test = json.loads((project / "metrics/test.json").read_text())
    assert set(test["mean"]) == METRIC_KEYS and len(test["per_seed"]) == 1
    assert (project / "dvc.lock").exists()


def test_second_repro_is_a_noop(project):
    out = sh(["dvc", "repro"], project).stdout
    assert "Data and pipelines are up to date" in out
    assert "Running stage" not in out


def test_report_only_param_reruns_only_the_report(project):
    set_params(project / "params.yaml", {"report.title": "Another title"})
    status = sh(["dvc", "status", "--json"], project).stdout
    assert set(json.loads(status)) == {"report"}
    out = sh(["dvc", "repro"], project).stdout
    assert "Running stage 'report'" in out
    assert "Running stage 'train'" not in out and "Running stage 'extract'" not in out
    assert "Another title" in (project / "reports/report.md").read_text()
    restore(project)


def test_filter_change_does_not_rerun_extract(project):
    set_params(project / "params.yaml", {"model.filter": "hard"})
    status = json.loads(sh(["dvc", "status", "--json"], project).stdout)
    assert "train" in status and "extract" not in status and "sample" not in status
    restore(project)


def test_exp_run_hard_filter_creates_an_experiment_with_other_metrics(project):
    sh(["dvc", "exp", "run", "-n", "hard", "-S", "model.filter=hard"], project)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], project).stdout)
    baseline = next(e for e in shown if e["rev"] != "workspace")
    exps = {r["name"]: r for exp in baseline["experiments"] or [] for r in exp["revs"]}
    assert "hard" in exps
    hard = exps["hard"]["data"]["metrics"]["metrics/test.json"]["data"]["mean"]
    base = baseline["data"]["metrics"]["metrics/test.json"]["data"]["mean"]
    assert set(hard) == METRIC_KEYS
    assert hard != base
    assert exps["hard"]["data"]["params"]["params.yaml"]["data"]["model"]["filter"] == "hard"
    # back to the baseline workspace for the other tests
    restore(project)


def test_bad_override_fails_before_work_with_allowed_values(project):
    proc = sh(["dvc", "exp", "run", "-S", "model.filter=medium"], project, check=False)
    assert proc.returncode != 0
    assert "choose one of: soft, hard, none" in proc.stderr + proc.stdout
    restore(project)


def test_remote_round_trip_needs_no_retraining(project, tmp_path):
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-d", "store", str(remote)], project)
    sh(["dvc", "push"], project)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    sh(["dvc", "remote", "add", "-d", "--local", "store", str(remote)], clone)
    sh(["dvc", "pull"], clone)
    out = sh(["dvc", "status"], clone).stdout
    assert "Data and pipelines are up to date" in out
    assert (clone / "models/seed_0/best.pt").exists()
    restore(project)
