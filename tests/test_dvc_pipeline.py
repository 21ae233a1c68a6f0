"""End-to-end: the real `dvc` CLI on the real pipeline, tiny data, temp git repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e import SHARED, make_project, set_params, sh

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
    status = sh(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout
    (repo.parent / "status-after-repro.txt").write_text(status)
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


def test_repro_leaves_no_untracked_file_and_finished_seeds_no_resume_state(project):
    """metrics/ and plots/ are committed to git (DVC's get-started layout), the cached outputs
    git-ignored; a finished seed keeps best.pt and state.json only."""
    status = (project.parent / "status-after-repro.txt").read_text().splitlines()
    assert [line for line in status if line.startswith("??")] == []
    assert sorted(p.name for p in (project / "models/seed_0").iterdir()) == ["best.pt", "state.json"]


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


REAL = SHARED / "data" / "mosi-real-trainvalid"
REAL_FILES = {"words": "CMU_MOSI_TimestampedWords.csd", "acoustic": "CMU_MOSI_COVAREP.csd",
              "labels": "CMU_MOSI_Opinion_Labels.csd"}


def _real_subset(dest: Path, n_videos: int = 12) -> Path:
    """A small CSD folder in the genuine MOSI layout (real words, labels, 73-d acoustic; no
    visual), with its own train/valid/test folds drawn from the shared train/valid videos."""
    from m3sa.data.csd import read_csd, write_csd

    folds = json.loads((REAL / "folds.json").read_text())
    videos = folds["train"][: n_videos - 4] + folds["valid"][:4]
    dest.mkdir(parents=True)
    for name in REAL_FILES.values():
        csd = read_csd(REAL / name)
        write_csd(dest / name, csd.root, {v: csd.data[v] for v in videos if v in csd.data}, csd.metadata)
    split = {"train": videos[: n_videos - 6], "valid": videos[n_videos - 6: n_videos - 4], "test": videos[n_videos - 4:]}
    (dest / "folds.json").write_text(json.dumps(split))
    return dest


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data/mosi-real-trainvalid is absent")
def test_pipeline_on_real_csd_layout_without_visual(tmp_path):
    data = _real_subset(tmp_path / "mosi")
    repo = make_project(tmp_path / "proj", {
        "data.source": "csd", "data.csd_dir": str(data), "data.folds": str(data / "folds.json"),
        "data.files.words": REAL_FILES["words"], "data.files.acoustic": REAL_FILES["acoustic"],
        "data.files.visual": None, "data.files.labels": REAL_FILES["labels"], "data.sample_size": "tiny"})
    sh(["dvc", "repro"], repo)
    meta = json.loads((repo / "data/features/meta.json").read_text())
    assert meta["modalities"] == ["language", "acoustic"] and meta["dims"]["acoustic"] == 73
    assert all(meta["counts"][s] > 0 for s in ("train", "valid", "test"))
    masks = json.loads((repo / "metrics/masks.json").read_text())
    assert set(masks["mean"]) == {"language", "acoustic"}
    test = json.loads((repo / "metrics/test.json").read_text())
    assert set(test["mean"]) == METRIC_KEYS
    assert "CMU-MOSI" in (repo / "reports/report.md").read_text()
