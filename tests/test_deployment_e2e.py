"""End to end: a real Prefect server, a process work pool, prefect.yaml's retraining
deployment, a worker, and a run triggered with ``run_deployment`` reaching Completed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect_fixtures import git_out, set_lr

from pipelines.retrain import load_champion

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started as a process-group leader, and its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``prefect server start`` on 127.0.0.1 with its home in tmp; yields the clients' env."""
    port = _free_port()
    env = dict(os.environ)
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")})
    Path(env["PREFECT_HOME"]).mkdir()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(env["PREFECT_API_URL"] + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("prefect server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.5)
        yield env
    finally:
        _stop(proc)
        log.close()


def _cli(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_prefect_yaml_declares_the_nightly_retraining():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["entrypoint"] == "pipelines/retrain.py:retrain"
    assert nightly["work_pool"]["name"] == "local-process"
    assert nightly["schedules"][0]["cron"] == "0 3 * * *"


@pytest.mark.slow
def test_deployed_retraining_runs_on_a_worker(server, toy_project, tmp_path):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _cli(["work-pool", "create", "local-process", "--type", "process"], server)
    out = _cli(["--no-prompt", "deploy", "--name", "nightly"], server)
    assert "m3sa-retrain/nightly" in out
    set_lr(toy_project, 0.2)  # a better model: the run retrains and promotes it
    worker_log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "local-process", "--type", "process"],
                              cwd=ROOT, env=server, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}):
            flow_run = run_deployment("m3sa-retrain/nightly", parameters={"project_dir": str(toy_project)},
                                      timeout=300, poll_interval=2)
        logs = (tmp_path / "worker.log").read_text()
        assert flow_run.state.is_completed(), f"{flow_run.state}\n{logs[-4000:]}"
    finally:
        _stop(worker)
        worker_log.close()
    assert load_champion(toy_project).tag == "champion-1"
    assert git_out(["tag", "--list"], toy_project) == "champion-1"
