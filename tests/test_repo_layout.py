"""What git holds of the pipeline's outputs, the DVC way: small metrics and plot tables
(``cache: false`` in dvc.yaml) are committed to git, everything DVC caches is git-ignored, so
a fresh clone shows no untracked file after ``dvc repro``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


pytestmark = pytest.mark.skipif(git("rev-parse", "--git-dir").returncode != 0, reason="not a git checkout")


def declared_outputs() -> tuple[list[str], list[str]]:
    """(paths with cache: false, cached paths) of dvc.yaml's outs, metrics and plots."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    uncached, cached = [], []
    for stage in raw["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for item in stage.get(kind, []):
                path, opts = (item, {}) if isinstance(item, str) else next(iter(item.items()))
                if path.startswith("${"):
                    section, key = path[2:-1].split(".")
                    path = params[section][key]
                (uncached if (opts or {}).get("cache") is False else cached).append(path)
    return uncached, cached


def test_metrics_and_plot_tables_are_committed_to_git():
    uncached, _ = declared_outputs()
    assert uncached, "dvc.yaml declares no cache: false output"
    untracked = [p for p in uncached if git("ls-files", "--error-unmatch", p).returncode != 0]
    assert untracked == [], f"cache: false outputs not tracked by git (commit them after `dvc repro`): {untracked}"


def test_cached_outputs_are_ignored_by_git():
    _, cached = declared_outputs()
    not_ignored = [p for p in cached if git("check-ignore", "-q", p).returncode != 0]
    assert not_ignored == [], f"DVC-cached outputs git would show as untracked: {not_ignored}"
