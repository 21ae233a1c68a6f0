"""Helpers for end-to-end tests: a throw-away git + DVC copy of this repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Small enough for seconds per stage, large enough to exercise every stage for real.
TINY_PARAMS = {
    "data.sample_size": "tiny",
    "model.text_encoder": "random:tiny",
    "model.dim": 16,
    "model.max_tokens": 24,
    "train.seeds": [0],
    "train.epochs": 2,
    "train.batch_size": 16,
    "report.dpi": 40,
}


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment where `python` and `dvc` are this interpreter's, offline and quiet."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
                "PYTHONHASHSEED": "0", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"})
    env.pop("M3SA_DEBUG", None)
    env.update(extra or {})
    return env


def sh(args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None,
       timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def project_files() -> list[str]:
    """Files of this repository that git tracks or would track (not ignored)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file() and not f.startswith(("tests/", "benchmarks/"))]


def set_params(params_file: Path, overrides: dict) -> None:
    raw = yaml.safe_load(params_file.read_text())
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the project into ``dest``, make it a git + DVC repository, commit it."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    set_params(dest / "params.yaml", {**TINY_PARAMS, **(overrides or {})})
    sh(["git", "init", "-q", "-b", "main"], dest)
    if not (dest / ".dvc").exists():
        sh(["dvc", "init", "-q"], dest)
    sh(["dvc", "config", "core.analytics", "false"], dest)
    sh(["dvc", "config", "core.check_update", "false"], dest)
    sh(["dvc", "config", "--local", "core.site_cache_dir", str(dest.parent / f".{dest.name}-dvc-site")], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "commit", "-qm", "project"], dest)
    return dest
