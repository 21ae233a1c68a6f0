"""Scheduled retraining: rerun the pipeline when data or params changed, keep the better model.

Steps: take the retrain lock (a second run waits up to ``lock_timeout`` seconds, then fails
with a message naming the holder); optionally ``dvc pull``; ``dvc status`` to see what
changed, and stop with "nothing to do" when nothing did; else ``dvc exp run -n <name>``
(all out-of-date stages, saved as a named DVC experiment); compare the experiment's
validation metric (``metrics/valid.json`` ``mean.<train.select_metric>``, never test) with
the champion's (HEAD's committed metric while there is no ``champion.json``); promote only a
strictly better one: ``dvc exp apply``, commit the files the experiment changed plus
``champion.json``, and tag the commit ``champion-<n>``. A markdown summary (what changed,
metric before and after, promoted or not) goes to the run's artifacts.

The champion record, ``champion.json`` at the project root, is versioned by git; its tag
``champion-<n>`` marks the commit holding that model's dvc.lock (``git checkout champion-<n>
&& dvc checkout`` or ``dvc pull`` restores it). A candidate that is not promoted stays in
the workspace and in ``dvc exp show`` under its name; HEAD keeps the champion.

Run locally, no server needed: ``python -m pipelines.retrain [--pull] [--push]``.
"""

from __future__ import annotations

from pipelines.settings import apply_defaults

apply_defaults()  # before Prefect reads its settings

import argparse  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from pipelines._dvc import DvcError, describe_status, experiments, git, run_command, run_dvc, status  # noqa: E402
from pipelines.pipeline import retry_options, retry_transient  # noqa: E402

CHAMPION_FILE = "champion.json"
LOCK_FILE = ".dvc/tmp/retrain.lock"
METRIC_FILE = "metrics/valid.json"
#: Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"mae", "loss", "mse", "rmse"})
#: Author of promotion commits when git has no user configured (e.g. on a fresh worker).
FALLBACK_IDENTITY = ("m3sa retrain", "retrain@localhost")


class RetrainBusy(RuntimeError):
    """Another retrain run holds the lock of this project."""


# ------------------------------------------------------------------ lock


@contextmanager
def retrain_lock(project_dir: str | Path, timeout: float, poll: float = 0.5) -> Iterator[Path]:
    """Hold ``<project>/.dvc/tmp/retrain.lock`` (``flock``, freed when the process ends).

    Waits up to ``timeout`` seconds for a running holder, then raises :class:`RetrainBusy`
    naming it. Only runs on the same machine are serialised.
    """
    path = Path(project_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    holder = path.read_text(errors="replace").strip() or "unknown process"
                    raise RetrainBusy(
                        f"another retrain run holds {path} ({holder}); gave up after {timeout:g} s. "
                        "Let it finish, or raise lock_timeout to wait longer.") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}".encode())
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ champion record


@dataclass(frozen=True)
class Champion:
    """The promoted model: where it is (tag, experiment) and its validation metric."""

    version: int
    tag: str
    experiment: str
    rev: str
    metric_file: str
    metric: str
    value: float
    lower_is_better: bool
    promoted_at: str


def load_champion(project_dir: str | Path) -> Champion | None:
    """The record in ``champion.json``, or ``None`` when there is no champion yet."""
    path = Path(project_dir) / CHAMPION_FILE
    if not path.exists():
        return None
    try:
        return Champion(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} is not a champion record ({err}); fix or delete it") from None


def write_champion(project_dir: str | Path, champion: Champion) -> Path:
    path = Path(project_dir) / CHAMPION_FILE
    path.write_text(json.dumps(asdict(champion), indent=2, sort_keys=True) + "\n")
    return path


def lower_is_better(metric: str) -> bool:
    """Direction of a selection metric: ``mae`` lower is better; ``corr``, ``acc*``, ``f1*`` higher."""
    return metric.split(".")[-1] in LOWER_IS_BETTER


def is_better(candidate: float, champion: float | None, lower: bool) -> bool:
    """Strictly better than the champion (any finite value beats no champion; ties keep it)."""
    if not math.isfinite(candidate):
        return False
    if champion is None:
        return True
    return candidate < champion if lower else candidate > champion


def select_metric(project_dir: str | Path) -> str:
    """``train.select_metric`` of the project's params.yaml (``mae`` when absent)."""
    params = yaml.safe_load((Path(project_dir) / "params.yaml").read_text()) or {}
    return str((params.get("train") or {}).get("select_metric", "mae"))


# ------------------------------------------------------------------ tasks


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[10, 30])
def pull(project_dir: str) -> None:
    """``dvc pull``: data and cached outputs of the current dvc.lock from the default remote."""
    run_dvc(["pull"], project_dir, get_run_logger())


@task(cache_policy=NO_CACHE, persist_result=False)
def detect_changes(project_dir: str) -> dict[str, list[Any]]:
    """``dvc status``: stages whose deps, params or outputs differ from dvc.lock."""
    return status(project_dir)


@task(task_run_name="dvc-exp-run-{name}", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retry_transient)
def run_experiment(project_dir: str, name: str) -> dict[str, Any]:
    """``dvc exp run -n <name>`` in the workspace; returns the experiment's rev and metrics."""
    run_dvc(["exp", "run", "-n", name], project_dir, get_run_logger())
    head = git(["rev-parse", "HEAD"], project_dir)
    rows = experiments(project_dir)
    baseline = next((r.metrics for r in rows if r.rev == head and r.baseline == head), {})
    for row in rows:
        if row.name == name and row.baseline == head:
            return {"rev": row.rev, "metrics": row.metrics, "baseline_metrics": baseline}
    raise RuntimeError(f"experiment '{name}' ran but `dvc exp show` does not list it on {head[:7]}")


def _commit_identity(project_dir: str) -> list[str]:
    try:
        git(["config", "user.email"], project_dir)
        return []
    except DvcError:
        name, email = FALLBACK_IDENTITY
        return ["-c", f"user.name={name}", "-c", f"user.email={email}"]


@task(cache_policy=NO_CACHE, persist_result=False)
def promote(project_dir: str, name: str, rev: str, champion: Champion) -> str:
    """Apply experiment ``name`` (``rev``), commit its files with ``champion.json``, tag it.

    Only the files the experiment changed (``git diff HEAD <rev>``) and the record are
    committed; other staged or modified files are left alone. Returns the new commit.
    """
    logger = get_run_logger()
    run_dvc(["exp", "apply", name], project_dir, logger)
    changed = [p for p in git(["diff", "--name-only", "HEAD", rev], project_dir).splitlines() if p]
    write_champion(project_dir, champion)
    paths = sorted(set(changed) | {CHAMPION_FILE})
    identity = _commit_identity(project_dir)
    git(["add", "--", *paths], project_dir)
    message = (f"Promote {champion.tag}: experiment {name}, "
               f"valid {champion.metric} {champion.value:.6g}")
    git([*identity, "commit", "--quiet", "--only", "-m", message, "--", *paths], project_dir)
    git([*identity, "tag", "-a", champion.tag, "-m", message], project_dir)
    commit = git(["rev-parse", "HEAD"], project_dir)
    logger.info("promoted %s as %s (commit %s; files: %s)", name, champion.tag, commit[:7], ", ".join(paths))
    return commit


@task(cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[10, 30])
def publish(project_dir: str, tag: str, git_remote: str = "origin") -> None:
    """``dvc push`` (the champion's cached outputs to the default DVC remote), then push the
    promotion commit and its tag to ``git_remote``, so a throw-away worker loses nothing."""
    logger = get_run_logger()
    run_dvc(["push"], project_dir, logger)
    run_command(["git", "push", git_remote, "HEAD", tag], project_dir, logger)


# ------------------------------------------------------------------ flow


@dataclass(frozen=True)
class RetrainResult:
    """Outcome of one retrain run: ``nothing-to-do``, ``promoted`` or ``kept-champion``."""

    outcome: str
    changes: list[str]
    metric: str
    experiment: str | None = None
    candidate: float | None = None
    champion_before: float | None = None
    champion: Champion | None = None
    commit: str | None = None
    summary: str = ""


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_markdown(result: RetrainResult) -> str:
    """The run summary: what changed, the metric before and after, promoted or not."""
    title = {"nothing-to-do": "nothing to do", "promoted": "new champion promoted",
             "kept-champion": "champion kept"}[result.outcome]
    lines = [f"# Retraining: {title}", ""]
    lines += ["## What changed", ""]
    lines += [f"- {c}" for c in result.changes] or ["- nothing: data, params and code match dvc.lock"]
    if result.outcome != "nothing-to-do":
        lines += ["", f"## Validation {result.metric}", "",
                  "| | value |", "|---|---|",
                  f"| champion before | {_fmt(result.champion_before)} |",
                  f"| candidate `{result.experiment}` | {_fmt(result.candidate)} |", ""]
        if result.outcome == "promoted" and result.champion is not None:
            lines.append(f"Promoted: tag `{result.champion.tag}`, commit `{(result.commit or '')[:7]}`.")
        else:
            lines.append(f"Not promoted: the candidate is not better. It stays available as "
                         f"experiment `{result.experiment}` (`dvc exp show`).")
    return "\n".join(lines) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@flow(name="m3sa-retrain")
def retrain(project_dir: str = ".", pull_first: bool = False, experiment_name: str | None = None,
            metric: str | None = None, lock_timeout: float = 600.0, retries: int = 1,
            retry_delay_seconds: float = 30.0, push: bool = False, git_remote: str = "origin") -> RetrainResult:
    """Retrain when data or params changed; promote the new model only when it is better.

    Steps: lock, [dvc pull], dvc status, dvc exp run -n <name>, compare validation
    ``metric`` (default ``train.select_metric``) with champion.json, promote (dvc exp apply,
    git commit, tag ``champion-<n>``; with ``push``, also dvc push and git push to
    ``git_remote``) or keep, write the summary artifact.
    """
    logger = get_run_logger()
    root = str(Path(project_dir).resolve())
    with retrain_lock(root, lock_timeout):
        if pull_first:
            pull(root)
        changes = detect_changes(root)
        change_lines = describe_status(changes)
        name_metric = metric or select_metric(root)
        lower = lower_is_better(name_metric)
        if not changes:
            logger.info("nothing to do: data, params and code match dvc.lock")
            result = RetrainResult("nothing-to-do", [], name_metric)
        else:
            logger.info("changed since the last run:\n%s", "\n".join(change_lines))
            name = experiment_name or "retrain-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            exp = run_experiment.with_options(**retry_options(retries, retry_delay_seconds))(root, name)
            key = f"mean.{name_metric}"
            try:
                candidate = float(exp["metrics"][METRIC_FILE][key])
            except KeyError:
                raise KeyError(f"experiment '{name}' has no '{key}' in {METRIC_FILE}; "
                               f"metrics seen: {sorted(exp['metrics'])}") from None
            current = load_champion(root)
            if current is not None and current.metric == name_metric:
                before = current.value
            else:  # no record of this metric: the committed model (HEAD's metrics) is the one to beat
                if current is not None:
                    logger.warning("champion.json records %s, not %s: comparing with the committed model's %s",
                                   current.metric, name_metric, name_metric)
                value = exp["baseline_metrics"].get(METRIC_FILE, {}).get(key)
                before = float(value) if value is not None else None
            if is_better(candidate, before, lower):
                version = (current.version if current else 0) + 1
                new = Champion(version=version, tag=f"champion-{version}", experiment=name, rev=exp["rev"],
                               metric_file=METRIC_FILE, metric=name_metric, value=candidate,
                               lower_is_better=lower, promoted_at=_now())
                commit = promote(root, name, exp["rev"], new)
                if push:
                    publish(root, new.tag, git_remote)
                result = RetrainResult("promoted", change_lines, name_metric, name, candidate, before, new, commit)
            else:
                logger.info("candidate %s %s=%.4f is not better than the champion's %s; champion kept",
                            name, name_metric, candidate, _fmt(before))
                result = RetrainResult("kept-champion", change_lines, name_metric, name, candidate, before, current)
    summary = summary_markdown(result)
    create_markdown_artifact(markdown=summary, key="retrain-summary",
                             description=f"m3sa retraining: {result.outcome}")
    return replace(result, summary=summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.retrain", description=retrain.__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".", help="DVC project (default: .)")
    parser.add_argument("--pull", action="store_true", help="dvc pull before checking for changes")
    parser.add_argument("--name", help="experiment name (default: retrain-<UTC time>)")
    parser.add_argument("--metric", help="validation metric to compare (default: train.select_metric)")
    parser.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for a running retrain")
    parser.add_argument("--push", action="store_true", help="after a promotion: dvc push, git push commit and tag")
    parser.add_argument("--git-remote", default="origin", help="git remote of --push (default: origin)")
    args = parser.parse_args(argv)
    state = retrain(args.project_dir, args.pull, args.name, args.metric, args.lock_timeout,
                    push=args.push, git_remote=args.git_remote, return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    print(state.result().summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
