"""The pipeline flow: dvc CLI wrappers, stage order, retries, failures that name the stage."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml
from prefect_fixtures import set_lr, sh, train_runs

from pipelines import _dvc
from pipelines._dvc import DvcError
from pipelines.pipeline import pipeline, select_stages
from pipelines.settings import apply_defaults, default_env

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- dvc wrappers, no Prefect run

MERMAID = """flowchart TD
\tnode1["evaluate"]
\tnode2["extract"]
\tnode3["report"]
\tnode4["sample"]
\tnode5["train"]
\tnode1-->node3
\tnode2-->node1
\tnode2-->node5
\tnode4-->node2
\tnode5-->node1
\tnode5-->node3
"""


def test_mermaid_dag_is_put_in_graph_order():
    nodes, edges = _dvc.parse_mermaid_dag(MERMAID)
    assert nodes == ["evaluate", "extract", "report", "sample", "train"]
    assert ("sample", "extract") in edges and len(edges) == 6
    assert _dvc.topological_order(nodes, edges) == ["sample", "extract", "train", "evaluate", "report"]


def test_topological_order_breaks_ties_by_listing_order_and_rejects_cycles():
    assert _dvc.topological_order(["b", "a", "c"], [("a", "c")]) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="cycle"):
        _dvc.topological_order(["a", "b"], [("a", "b"), ("b", "a")])


def test_select_stages_keeps_graph_order_and_names_unknown_stages():
    order = ["sample", "extract", "train"]
    assert select_stages(order, None) == order
    assert select_stages(order, ["train", "sample"]) == ["sample", "train"]
    with pytest.raises(ValueError, match=r"\['trian'\]"):
        select_stages(order, ["trian"])


@pytest.mark.parametrize(("line", "code", "transient"), [
    ("ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 2", 2, False),
    ("ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 1", 1, True),
    ("ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with -9", -9, True),
    ("ERROR: Unable to acquire lock. Most likely another DVC process is running", None, True),
])
def test_dvc_error_reads_the_stage_exit_code(line, code, transient):
    err = DvcError(["/x/dvc", "repro"], 255, ["Running stage 'train':", line], Path("."))
    assert err.stage_exit_code == code
    assert err.transient is transient
    assert str(err).startswith("`dvc repro` exited with 255")


def test_downstream_closure():
    _, edges = _dvc.parse_mermaid_dag(MERMAID)
    assert _dvc.downstream(["train"], edges) == {"train", "evaluate", "report"}
    assert _dvc.downstream(["sample"], edges) == {"sample", "extract", "train", "evaluate", "report"}
    assert _dvc.downstream([], edges) == set()


def test_describe_status_lists_params_and_files():
    changes = {"train": [{"changed deps": {"params.yaml": {"train.lr": "modified"}}}],
               "report": [{"changed outs": {"report.md": "deleted"}}, "always changed"]}
    assert _dvc.describe_status(changes) == ["train: params.yaml (train.lr modified)",
                                              "report: report.md deleted (outs); always changed"]


def test_flatten_nested_dicts():
    assert _dvc.flatten({"mean": {"mae": 1, "x": {"y": [1, 2]}}, "n": 3}) == {"mean.mae": 1, "mean.x.y": [1, 2], "n": 3}


def test_settings_fill_only_what_is_missing(tmp_path):
    env = {"PREFECT_HOME": "/mine"}
    applied = apply_defaults(env, root=tmp_path)
    assert env["PREFECT_HOME"] == "/mine" and "PREFECT_HOME" not in applied
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "m3sa,pipelines"
    assert set(applied) == set(default_env(tmp_path)) - {"PREFECT_HOME"}
    fresh: dict[str, str] = {}
    apply_defaults(fresh, root=tmp_path)
    assert fresh["PREFECT_HOME"] == str(tmp_path / ".cache" / "prefect")
    assert (tmp_path / ".cache" / "prefect").is_dir()


def test_run_command_streams_lines_to_the_logger(tmp_path, caplog):
    caplog.set_level("INFO", logger="pipelines._dvc")
    code = "import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"
    with pytest.raises(DvcError) as info:
        _dvc.run_command([sys.executable, "-c", code], tmp_path)
    assert info.value.lines == ["one", "two"] and info.value.returncode == 3
    logged = [r.getMessage() for r in caplog.records]
    assert "one" in logged and "two" in logged


def test_stage_order_of_the_toy_project(toy_project):
    # dvc.yaml lists report, train, prepare: the graph decides
    assert _dvc.stage_order(toy_project) == ["prepare", "train", "report"]


# ---------------------------------------------------------------- flow runs


@pytest.mark.usefixtures("prefect_api")
def test_pipeline_runs_each_stage_in_graph_order_then_skips(toy_project):
    set_lr(toy_project, 0.25)
    runs = pipeline(str(toy_project), retries=0)
    assert [(r.stage, r.outcome) for r in runs] == [("prepare", "skipped"), ("train", "ran"), ("report", "ran")]
    assert json.loads((toy_project / "metrics/valid.json").read_text())["mean"]["mae"] == 0.25
    assert (toy_project / "report.md").read_text() == "valid MAE 0.25\n"
    again = pipeline(str(toy_project), retries=0)
    assert [r.outcome for r in again] == ["skipped"] * 3


@pytest.mark.usefixtures("prefect_api")
def test_stage_failing_once_is_retried_and_the_flow_completes(toy_project, monkeypatch):
    monkeypatch.setenv("TOY_FAIL_TIMES", "1")
    state = pipeline(str(toy_project), force=True, retries=2, retry_delay_seconds=0, return_state=True)
    assert state.is_completed(), state.message
    assert train_runs() == 2  # failed once, retried once
    assert [r.outcome for r in state.result()] == ["ran", "ran", "ran"]


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize(("code", "retries", "expected_runs"), [(2, 2, 1), (1, 1, 2)])
def test_stage_failing_for_good_fails_the_flow_naming_it(toy_project, monkeypatch, code, retries, expected_runs):
    # exit code 2 = the stage's user error: never retried; other codes use every retry
    monkeypatch.setenv("TOY_FAIL_TIMES", "99")
    monkeypatch.setenv("TOY_FAIL_CODE", str(code))
    state = pipeline(str(toy_project), stages=["train", "report"], force=True, retries=retries,
                     retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    assert f"stage 'train' failed (its command exited with {code})" in state.message
    assert "simulated failure" in state.message
    assert train_runs() == expected_runs


# ---------------------------------------------------------------- the real pipeline


def _stages_importable() -> str | None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name in stages:
        try:
            importlib.import_module(f"stages.{name}")
        except Exception as err:  # noqa: BLE001 - any import problem means "not ready"
            return f"stages.{name} is not importable yet ({type(err).__name__}: {err})"
    return None


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_real_pipeline_on_tiny_settings(tmp_path):
    reason = _stages_importable()
    if reason:
        pytest.skip(reason)
    from e2e import make_project

    repo = make_project(tmp_path / "proj", {"data.sample_size": "tiny", "model.text_encoder": "random:tiny",
                                            "train.seeds": [0], "train.epochs": 1})
    runs = pipeline(str(repo), retries=0)
    stages = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    order = [r.stage for r in runs]
    main = [order.index(s) for s in ("sample", "extract", "train", "evaluate", "report")]
    assert main == sorted(main)
    assert {r.stage for r in runs} == set(stages) and all(r.outcome == "ran" for r in runs)
    valid = json.loads((repo / "metrics/valid.json").read_text())
    assert len(valid["per_seed"]) == 1 and valid["mean"]["mae"] >= 0
    assert (repo / "reports/report.md").exists()
    status = sh([_dvc.dvc_executable(), "status", "--json"], repo).stdout
    assert json.loads(status) == {}
