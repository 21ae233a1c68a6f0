"""Fixtures of the Prefect flow tests: a temporary Prefect API and a toy DVC project.

The toy project is a real git + DVC repository with three stages (``prepare -> train ->
report``, listed out of order in dvc.yaml) whose scripts write ``metrics/valid.json`` with
``mean.mae = train.lr``: a test picks the validation metric by editing params. Its train
stage can fail on demand through environment variables (they reach the stage through
dvc): ``TOY_ATTEMPTS`` (a file that gets one line per run), ``TOY_FAIL_TIMES`` (fail the
first N runs) and ``TOY_FAIL_CODE`` (exit code of a failure, default 1). ``train.lr < 0``
makes it exit 2, the project's "user error" code.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.settings import apply_defaults

# Prefect reads its settings at import: keep its home out of the repository for the tests.
if "PREFECT_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="m3sa-prefect-home-")
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
    os.environ["PREFECT_HOME"] = _home
apply_defaults()

TOY_PARAMS = """\
data:
  n: 3
train:
  lr: 0.5
  select_metric: mae
"""

TOY_DVC_YAML = """\
stages:
  report:
    cmd: python src/report.py
    deps: [src/report.py, metrics/valid.json]
    outs: [report.md]
  train:
    cmd: python src/train.py
    deps: [src/train.py, data/prepared.json]
    params: [train.lr]
    outs: [model.json]
    metrics:
      - metrics/valid.json:
          cache: false
  prepare:
    cmd: python src/prepare.py
    deps: [src/prepare.py]
    params: [data.n]
    outs: [data/prepared.json]
"""

TOY_SCRIPTS = {
    "src/prepare.py": """\
import json, pathlib, yaml
n = yaml.safe_load(open("params.yaml"))["data"]["n"]
pathlib.Path("data").mkdir(exist_ok=True)
json.dump(list(range(n)), open("data/prepared.json", "w"))
print(f"prepared {n} rows")
""",
    "src/train.py": """\
import json, os, pathlib, sys, yaml
attempts = os.environ.get("TOY_ATTEMPTS")
if attempts:
    with open(attempts, "a") as f:
        f.write("run\\n")
    runs = len(open(attempts).read().splitlines())
    if runs <= int(os.environ.get("TOY_FAIL_TIMES", "0")):
        print(f"simulated failure on run {runs}", file=sys.stderr)
        sys.exit(int(os.environ.get("TOY_FAIL_CODE", "1")))
lr = yaml.safe_load(open("params.yaml"))["train"]["lr"]
if lr < 0:
    print(f"error: train: params.yaml: train.lr must be >= 0, got {lr}", file=sys.stderr)
    sys.exit(2)
rows = json.load(open("data/prepared.json"))
pathlib.Path("metrics").mkdir(exist_ok=True)
json.dump({"weights": [lr] * len(rows)}, open("model.json", "w"))
json.dump({"mean": {"mae": lr}, "std": {"mae": 0.0}}, open("metrics/valid.json", "w"))
print(f"trained on {len(rows)} rows: valid mae {lr}")
""",
    "src/report.py": """\
import json
mae = json.load(open("metrics/valid.json"))["mean"]["mae"]
open("report.md", "w").write(f"valid MAE {mae}\\n")
""",
}


def tool_env() -> dict[str, str]:
    """This interpreter's python and dvc first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def sh(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def git_out(args: list[str], cwd: Path) -> str:
    return sh(["git", *args], cwd).stdout.strip()


def make_toy_project(dest: Path) -> Path:
    """Write the toy project into ``dest``, run it once and commit everything (dvc.lock too)."""
    dest.mkdir(parents=True)
    (dest / "params.yaml").write_text(TOY_PARAMS)
    (dest / "dvc.yaml").write_text(TOY_DVC_YAML)
    for rel, text in TOY_SCRIPTS.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "config", "user.name", "toy"], dest)
    sh(["git", "config", "user.email", "toy@example.com"], dest)
    sh(["dvc", "init", "-q"], dest)
    sh(["dvc", "config", "core.analytics", "false"], dest)
    sh(["dvc", "config", "core.check_update", "false"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "toy project"], dest)
    localize_toy_project(dest)
    sh(["dvc", "repro"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "baseline run"], dest)
    return dest


def localize_toy_project(repo: Path) -> None:
    """Give a (copied) project its own DVC site cache, next to it under the test's tmp dir."""
    sh(["dvc", "config", "--local", "core.site_cache_dir", str(repo.parent / f".{repo.name}-dvc-site")], repo)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API (SQLite in a temp dir) shared by the whole test run.

    It starts in about 7 s on an idle 2-core machine; the generous timeout covers a busy one.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy project, built and committed once per test run (copy it, do not modify it)."""
    return make_toy_project(tmp_path_factory.mktemp("toy-template") / "toy")


@pytest.fixture
def toy_project(toy_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the toy project, its train stage counting runs in ``TOY_ATTEMPTS``."""
    repo = tmp_path / "toy"
    shutil.copytree(toy_template, repo, symlinks=True)
    localize_toy_project(repo)
    monkeypatch.setenv("TOY_ATTEMPTS", str(tmp_path / "attempts.txt"))
    return repo


def train_runs() -> int:
    """How many times the toy project's train stage ran in this test (``TOY_ATTEMPTS``)."""
    path = Path(os.environ["TOY_ATTEMPTS"])
    return len(path.read_text().splitlines()) if path.exists() else 0


def set_lr(repo: Path, lr: float) -> None:
    text = (repo / "params.yaml").read_text()
    lines = [f"  lr: {lr}" if line.startswith("  lr:") else line for line in text.splitlines()]
    (repo / "params.yaml").write_text("\n".join(lines) + "\n")
