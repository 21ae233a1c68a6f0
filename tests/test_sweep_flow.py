"""The sweep flow: the paper's grids as data, task runners, parallel DVC experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.task_runners import ThreadPoolTaskRunner

from m3sa.config import load_params
from pipelines._dvc import experiments
from pipelines.grids import GRIDS, LABELS, TABLE3, TABLE4
from pipelines.sweep import exp_run_args, make_task_runner, resolve_grid, runs_here, summary_markdown, sweep

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- grids and arguments


def test_table3_is_the_ablation_grid():
    cfgs = {name: load_params(ROOT / "params.yaml", overrides).model for name, overrides in TABLE3.items()}
    assert len(cfgs) == 7
    for filt in ("soft", "hard"):
        full = cfgs[f"full-{filt}"]
        assert (full.filter, full.modulation, full.baseline_embedding) == (filt, True, True)
        assert (cfgs[f"wo-ml-{filt}"].filter, cfgs[f"wo-ml-{filt}"].modulation) == (filt, False)
        assert (cfgs[f"wo-be-{filt}"].filter, cfgs[f"wo-be-{filt}"].baseline_embedding) == (filt, False)
    assert cfgs["wo-mfm"].filter == "none"  # soft and hard coincide without the filter


def test_table4_is_every_fusion_with_either_filter():
    got = {(load_params(ROOT / "params.yaml", ov).model.fusion, load_params(ROOT / "params.yaml", ov).model.filter)
           for ov in TABLE4.values()}
    assert got == {(f, s) for f in ("add", "concat", "tensor", "graph") for s in ("soft", "hard")}


def test_every_variant_has_a_paper_label():
    names = {n for grid in GRIDS.values() for n in grid}
    assert names <= set(LABELS)


def test_resolve_grid_by_name_mapping_and_subset():
    assert resolve_grid("table4", ["graph-hard", "add-soft"]) == {"add-soft": TABLE4["add-soft"],
                                                                  "graph-hard": TABLE4["graph-hard"]}
    assert resolve_grid({"a": ["x=1"]}) == {"a": ["x=1"]}
    with pytest.raises(ValueError, match="unknown grid 'table9'"):
        resolve_grid("table9")
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['nope'\]"):
        resolve_grid("table3", ["nope"])


def test_exp_run_args():
    assert exp_run_args("t3-a", ["model.filter=hard", "train.seeds=[0]"], ["data/extra"], overwrite=True) == [
        "exp", "run", "--temp", "-n", "t3-a", "-S", "model.filter=hard", "-S", "train.seeds=[0]",
        "-C", "data/extra", "--force"]


def test_runs_on_this_machine_count_threads_or_local_workers_not_remote_ones():
    assert runs_here(None, 3) == 3
    assert runs_here("local:4", 2) == 4
    assert runs_here("local", 2) == 2
    assert runs_here("tcp://10.0.0.5:8786", 2) == 0  # not this machine's cores: no caps


def test_task_runner_choice():
    from prefect_dask import DaskTaskRunner

    threads = make_task_runner(None, jobs=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = make_task_runner("local:2")
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    assert local.cluster_kwargs["host"] == "127.0.0.1"
    remote = make_task_runner("tcp://10.0.0.5:8786")
    assert remote.address == "tcp://10.0.0.5:8786" and remote.cluster_kwargs == {}


def test_summary_table_shows_present_metrics_only():
    from pipelines.sweep import VariantResult

    text = summary_markdown([VariantResult("t3-full-soft", "M3SA (Soft)", ["model.filter=soft"], "abc",
                                           {"metrics/valid.json": {"mean.mae": 0.71234}})],
                            {"t3-x": "Task run failed\nERROR: failed to reproduce 'train'\nmore"})
    assert "| `t3-full-soft` | M3SA (Soft) | `model.filter=soft` | 0.7123 |" in text
    assert "valid mae" in text and "test" not in text
    assert "- `t3-x`: ERROR: failed to reproduce 'train'" in text


# ---------------------------------------------------------------- flow runs

TOY_GRID = {"low": ["train.lr=0.11"], "high": ["train.lr=0.42"]}


def _exp_metrics(repo: Path) -> dict[str, float]:
    return {e.name: e.metrics["metrics/valid.json"]["mean.mae"] for e in experiments(repo) if e.rev != e.baseline}


@pytest.mark.usefixtures("prefect_api")
def test_sweep_on_threads_runs_each_variant_as_an_experiment(toy_project):
    results = sweep(str(toy_project), grid=TOY_GRID, prefix="toy", jobs=2)
    assert [(r.name, r.metrics["metrics/valid.json"]["mean.mae"]) for r in results] == [("toy-low", 0.11),
                                                                                         ("toy-high", 0.42)]
    assert _exp_metrics(toy_project) == {"toy-low": 0.11, "toy-high": 0.42}
    # --temp runs leave the workspace alone
    assert (toy_project / "metrics/valid.json").read_text().count("0.5") == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_failed_variant_fails_the_sweep_after_the_others_finish(toy_project):
    state = sweep(str(toy_project), grid={"ok": ["train.lr=0.3"], "bad": ["train.lr=-1"]}, prefix="",
                  return_state=True)
    assert state.is_failed()
    assert "1 of 2 experiment(s) failed: bad: ERROR: failed to reproduce 'train'" in state.message
    assert "exited with 2" in state.message
    assert _exp_metrics(toy_project) == {"ok": 0.3}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_sweep_on_a_local_dask_cluster_of_two_workers(toy_project):
    results = sweep(str(toy_project), grid=TOY_GRID, prefix="dask", dask="local:2")
    assert {r.name for r in results} == {"dask-low", "dask-high"}
    assert _exp_metrics(toy_project) == {"dask-low": 0.11, "dask-high": 0.42}
