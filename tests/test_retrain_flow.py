"""The retraining flow: nothing to do, promote only a better model, the lock, dvc pull."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prefect_fixtures import git_out, set_lr, sh, train_runs

from pipelines._dvc import experiments
from pipelines.retrain import (CHAMPION_FILE, LOCK_FILE, Champion, RetrainBusy, is_better, load_champion,
                               lower_is_better, retrain, retrain_lock, summary_markdown, write_champion)

# ---------------------------------------------------------------- champion logic, no Prefect run


def test_direction_of_the_selection_metrics():
    assert lower_is_better("mae") and lower_is_better("mean.mae")
    assert not any(lower_is_better(m) for m in ("corr", "acc7", "acc2_non0", "f1_non0"))


def test_is_better_hand_cases():
    assert is_better(0.70, 0.71, lower=True) and not is_better(0.72, 0.71, lower=True)
    assert is_better(0.80, 0.79, lower=False) and not is_better(0.78, 0.79, lower=False)
    assert not is_better(0.71, 0.71, lower=True)  # a tie keeps the champion
    assert is_better(5.0, None, lower=True)  # no champion yet
    assert not is_better(math.nan, None, lower=True) and not is_better(math.inf, 1.0, lower=False)


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(finite, finite, st.booleans())
def test_is_better_is_a_strict_order(a, b, lower):
    assert not (is_better(a, b, lower) and is_better(b, a, lower))
    assert is_better(a, b, lower) == (a != b and not is_better(b, a, lower))


def test_champion_record_round_trips(tmp_path):
    assert load_champion(tmp_path) is None
    champ = Champion(3, "champion-3", "retrain-x", "abc", "metrics/valid.json", "mae", 0.7, True, "2024-01-01T00:00:00Z")
    write_champion(tmp_path, champ)
    assert load_champion(tmp_path) == champ
    (tmp_path / CHAMPION_FILE).write_text('{"version": 1}')
    with pytest.raises(ValueError, match="champion.json is not a champion record"):
        load_champion(tmp_path)


def test_lock_times_out_naming_the_holder(tmp_path):
    with retrain_lock(tmp_path, timeout=0):
        start = time.monotonic()
        with pytest.raises(RetrainBusy, match=r"another retrain run holds .*retrain.lock \(pid \d+ on .* since"):
            with retrain_lock(tmp_path, timeout=0.3, poll=0.05):
                pass
        assert time.monotonic() - start >= 0.3
    with retrain_lock(tmp_path, timeout=0):  # released
        pass


def test_summary_names_both_values_and_the_outcome():
    from pipelines.retrain import RetrainResult

    text = summary_markdown(RetrainResult("kept-champion", ["train: params.yaml (train.lr modified)"], "mae",
                                          "retrain-1", 0.9, 0.5))
    assert "champion kept" in text and "| champion before | 0.5000 |" in text
    assert "| candidate `retrain-1` | 0.9000 |" in text and "train.lr modified" in text


# ---------------------------------------------------------------- flow runs


def _head(repo: Path) -> str:
    return git_out(["rev-parse", "HEAD"], repo)


def commit_champion(repo: Path, champ: Champion) -> None:
    write_champion(repo, champ)
    sh(["git", "add", CHAMPION_FILE], repo)
    sh(["git", "commit", "-qm", "champion"], repo)


@pytest.mark.usefixtures("prefect_api")
def test_unchanged_inputs_do_nothing(toy_project):
    from prefect.artifacts import Artifact

    head = _head(toy_project)
    start = time.perf_counter()
    state = retrain(str(toy_project), return_state=True)
    elapsed = time.perf_counter() - start
    result = state.result()
    assert result.outcome == "nothing-to-do" and result.changes == []
    assert train_runs() == 0 and _head(toy_project) == head
    assert [e.rev for e in experiments(toy_project) if e.rev != e.baseline] == []
    artifact = Artifact.get("retrain-summary")
    assert artifact.flow_run_id == state.state_details.flow_run_id
    assert "nothing to do" in artifact.data
    assert elapsed < 30  # no stage runs: only dvc status


@pytest.mark.usefixtures("prefect_api")
def test_better_candidate_is_promoted_and_tagged(toy_project):
    # no champion.json yet: the committed model (valid mae 0.5) is the one to beat
    base = _head(toy_project)
    set_lr(toy_project, 0.2)
    result = retrain(str(toy_project), experiment_name="try-a")
    assert result.outcome == "promoted" and result.candidate == 0.2 and result.champion_before == 0.5
    assert result.changes == ["train: params.yaml (train.lr modified)"]
    champ = load_champion(toy_project)
    assert (champ.version, champ.tag, champ.experiment, champ.value) == (1, "champion-1", "try-a", 0.2)
    head = _head(toy_project)
    assert head == result.commit and git_out(["rev-parse", "HEAD~1"], toy_project) == base
    assert git_out(["rev-parse", "champion-1^{commit}"], toy_project) == head
    committed = set(git_out(["show", "--name-only", "--format=", "HEAD"], toy_project).split())
    assert committed == {CHAMPION_FILE, "dvc.lock", "params.yaml", "metrics/valid.json"}
    assert git_out(["status", "--porcelain"], toy_project) == ""
    assert "Promoted: tag `champion-1`" in result.summary
    # nothing changed since: quick no-op, champion untouched
    assert retrain(str(toy_project)).outcome == "nothing-to-do"


@pytest.mark.usefixtures("prefect_api")
def test_worse_candidate_keeps_the_champion(toy_project):
    champ = Champion(1, "champion-1", "seed", "0" * 40, "metrics/valid.json", "mae", 0.1, True, "2024-01-01T00:00:00Z")
    commit_champion(toy_project, champ)
    head = _head(toy_project)
    set_lr(toy_project, 0.2)  # better than HEAD's 0.5 but worse than the champion's 0.1
    result = retrain(str(toy_project), experiment_name="try-b")
    assert result.outcome == "kept-champion" and result.candidate == 0.2 and result.champion_before == 0.1
    assert _head(toy_project) == head and load_champion(toy_project) == champ
    assert git_out(["tag", "--list"], toy_project) == ""
    assert "try-b" in {e.name for e in experiments(toy_project)}
    assert "Not promoted" in result.summary and train_runs() == 1


@pytest.mark.usefixtures("prefect_api")
def test_champion_of_another_metric_is_not_compared(toy_project):
    # champion.json holds a corr value; a value of another metric says nothing about mae
    champ = Champion(1, "champion-1", "seed", "0" * 40, "metrics/valid.json", "corr", 0.1, False, "2024-01-01T00:00:00Z")
    commit_champion(toy_project, champ)
    set_lr(toy_project, 0.2)  # mae 0.2: better than HEAD's 0.5
    result = retrain(str(toy_project), experiment_name="try-c")
    assert result.outcome == "promoted" and result.champion_before == 0.5  # HEAD's mae, not corr's 0.1
    assert load_champion(toy_project).metric == "mae"


@pytest.mark.usefixtures("prefect_api")
def test_second_run_gives_up_on_a_held_lock_with_a_clear_message(toy_project):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "os.write(fd, b'pid 4242 on testhost since now'); print('locked', flush=True); sys.stdin.read()",
         str(toy_project / LOCK_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        state = retrain(str(toy_project), lock_timeout=0.5, return_state=True)
        assert state.is_failed()
        assert "another retrain run holds" in state.message and "pid 4242 on testhost" in state.message
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert train_runs() == 0


@pytest.mark.usefixtures("prefect_api")
def test_second_run_waits_for_the_lock(toy_project):
    ready = threading.Event()

    def hold() -> None:
        with retrain_lock(toy_project, timeout=0):
            ready.set()
            time.sleep(1.5)

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(5)
    start = time.perf_counter()
    result = retrain(str(toy_project), lock_timeout=60)
    thread.join()
    assert result.outcome == "nothing-to-do"
    assert time.perf_counter() - start >= 1.0


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_pull_restores_outputs_from_the_remote(toy_project, tmp_path):
    sh(["dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "remote")], toy_project)
    sh(["dvc", "push", "-q"], toy_project)
    for rel in ("model.json", "report.md", "data/prepared.json"):
        (toy_project / rel).unlink()
    sh(["rm", "-rf", ".dvc/cache"], toy_project)
    result = retrain(str(toy_project), pull_first=True)
    assert result.outcome == "nothing-to-do"
    assert json.loads((toy_project / "model.json").read_text()) == {"weights": [0.5] * 3}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_promotion_is_pushed_to_the_git_and_dvc_remotes(toy_project, tmp_path):
    sh(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], tmp_path)
    sh(["git", "remote", "add", "origin", str(tmp_path / "origin.git")], toy_project)
    sh(["git", "push", "-q", "origin", "main"], toy_project)
    sh(["dvc", "remote", "add", "--local", "-d", "store", str(tmp_path / "remote")], toy_project)
    set_lr(toy_project, 0.2)
    result = retrain(str(toy_project), push=True)
    assert result.outcome == "promoted"
    remote_refs = git_out(["ls-remote", "origin"], toy_project)
    assert f"{result.commit}\trefs/heads/main" in remote_refs and "refs/tags/champion-1" in remote_refs
    assert json.loads(sh(["dvc", "status", "--cloud", "--json"], toy_project).stdout or "{}") == {}


def test_serve_entry_point_schedules_the_retraining(monkeypatch):
    from pipelines import serve

    calls = []
    monkeypatch.setattr(serve.retrain, "serve", lambda **kwargs: calls.append(kwargs))
    serve.main(["--pull", "--project-dir", "/data/m3sa"])
    assert calls == [{"name": "nightly-retrain", "cron": "0 3 * * *",
                      "parameters": {"project_dir": "/data/m3sa", "pull_first": True}}]
