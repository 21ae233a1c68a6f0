"""Run the ``dvc`` (and ``git``) CLI for the flows, in subprocesses.

The flows never import stage code; they run ``dvc`` in a subprocess, stream its output line
by line into a logger (the Prefect run logger inside a task), and parse ``--json`` output.
No Prefect import here: these functions work and are tested on their own.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Exit code of ``python -m stages.<name>`` for a user-caused error (``stages/_cli.py``):
#: rerunning cannot help, so such a failure is never retried.
STAGE_USER_ERROR = 2

_STAGE_EXIT = re.compile(r"failed to reproduce '([^']+)'.*exited with (-?\d+)")
_LOCK_BUSY = "Unable to acquire lock"
_MERMAID_NODE = re.compile(r'^\s*(node\d+)\["(.*)"\]\s*$')
_MERMAID_EDGE = re.compile(r"^\s*(node\d+)-->(node\d+)\s*$")


def _show(args: Sequence[str]) -> str:
    """A command line for messages, the executable by its name only."""
    return " ".join([Path(args[0]).name, *args[1:]]) if args else ""


class DvcError(RuntimeError):
    """A ``dvc``/``git`` command exited non-zero; the message ends with its last output lines."""

    def __init__(self, args: Sequence[str], returncode: int, lines: Sequence[str], cwd: Path) -> None:
        self.command = list(args)
        self.returncode = returncode
        self.lines = list(lines)
        self.cwd = cwd
        tail = "\n".join(self.lines[-15:])
        super().__init__(f"`{_show(self.command)}` exited with {returncode} in {cwd}:\n{tail}")

    @property
    def stage_exit_code(self) -> int | None:
        """Exit code of the failed stage command, when DVC reports one."""
        for line in reversed(self.lines):
            match = _STAGE_EXIT.search(line)
            if match:
                return int(match.group(2))
        return None

    @property
    def failed_stage(self) -> str | None:
        """Name of the stage DVC failed to reproduce, when it says."""
        for line in reversed(self.lines):
            match = _STAGE_EXIT.search(line)
            if match:
                return match.group(1)
        return None

    @property
    def lock_busy(self) -> bool:
        """True when DVC could not take its repository lock (another dvc process runs)."""
        return any(_LOCK_BUSY in line for line in self.lines)

    @property
    def transient(self) -> bool:
        """Worth retrying: anything but a stage's user error (exit code 2, see stages/_cli.py)."""
        return self.lock_busy or self.stage_exit_code != STAGE_USER_ERROR


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its arguments, exit code, output lines and wall time (s)."""

    args: list[str]
    returncode: int
    lines: list[str] = field(repr=False)
    seconds: float

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def dvc_executable() -> str:
    """The ``dvc`` next to the running interpreter (the project venv), else the one on PATH."""
    sibling = Path(sys.executable).parent / ("dvc.exe" if os.name == "nt" else "dvc")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("dvc")
    if found is None:
        raise FileNotFoundError(
            f"no `dvc` executable next to {sys.executable} or on PATH; install the project "
            "(`bash scripts/setup.sh`) or put dvc on PATH")
    return found


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for dvc and the stage commands it runs.

    The interpreter's folder goes first on PATH, so ``python -m stages.x`` in dvc.yaml means
    this venv's python even when a worker was started without activating it; Python output is
    unbuffered (lines arrive as they are printed) and tqdm redraws at most every 10 s.
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bindir:
        env["PATH"] = bindir + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TQDM_MININTERVAL", "10")
    if extra:
        env.update(extra)
    return env


def run_command(args: Sequence[str], cwd: str | Path, logger: logging.Logger | logging.LoggerAdapter | None = None,
                check: bool = True, level: int = logging.INFO, env: Mapping[str, str] | None = None) -> CommandResult:
    """Run ``args`` in ``cwd``, logging each output line (stdout and stderr merged) as it comes;
    ``env``: variables added to :func:`subprocess_env`'s.

    Raises :class:`DvcError` when the command exits non-zero and ``check`` is true.
    """
    logger = logger or log
    cwd = Path(cwd)
    lines: list[str] = []
    start = time.perf_counter()
    logger.info("$ %s", _show(args))
    with subprocess.Popen(list(args), cwd=cwd, env=subprocess_env(env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                          encoding="utf-8", errors="replace", bufsize=1) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:  # universal newlines: tqdm's '\r' redraws become lines too
            line = raw.rstrip()
            if line:
                lines.append(line)
                logger.log(level, "%s", line)
        returncode = proc.wait()
    result = CommandResult(list(args), returncode, lines, time.perf_counter() - start)
    if check and returncode != 0:
        raise DvcError(args, returncode, lines, cwd)
    return result


def run_dvc(args: Sequence[str], cwd: str | Path, logger: logging.Logger | logging.LoggerAdapter | None = None,
            check: bool = True, env: Mapping[str, str] | None = None) -> CommandResult:
    """Run ``dvc <args>`` in ``cwd``, streaming its output to ``logger``."""
    return run_command([dvc_executable(), *args], cwd, logger, check, env=env)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def thread_share(jobs: int, environ: Mapping[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """Thread caps for ``jobs`` training runs at once on this machine: each gets its share of
    the cores. Without them torch gives every run all the cores, and the runs' threads fight:
    two runs on 2 cores trained at 3 samples/s each, against 28-36 with one thread each
    (measured). Variables already set in ``environ`` (default: this process's) are kept."""
    if jobs <= 1:
        return {}
    environ = os.environ if environ is None else environ
    share = str(max(1, (cores or os.cpu_count() or 1) // jobs))
    return {name: share for name in THREAD_VARIABLES if name not in environ}


def capture(args: Sequence[str], cwd: str | Path) -> str:
    """Run a command quietly and return its stdout; :class:`DvcError` (with stderr) on failure."""
    proc = subprocess.run(list(args), cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DvcError(args, proc.returncode, (proc.stdout + proc.stderr).splitlines(), Path(cwd))
    return proc.stdout


def dvc_json(args: Sequence[str], cwd: str | Path) -> Any:
    """Run ``dvc <args> --json`` and parse its output."""
    out = capture([dvc_executable(), *args, "--json"], cwd)
    return json.loads(out) if out.strip() else None


def git(args: Sequence[str], cwd: str | Path) -> str:
    """Run ``git <args>`` in ``cwd`` and return its stripped stdout."""
    return capture(["git", *args], cwd).strip()


# ------------------------------------------------------------------ pipeline graph


def parse_mermaid_dag(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Stages and edges (upstream, downstream) from ``dvc dag --mermaid`` output."""
    names: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    for line in text.splitlines():
        node = _MERMAID_NODE.match(line)
        if node:
            names[node.group(1)] = node.group(2)
            continue
        edge = _MERMAID_EDGE.match(line)
        if edge:
            edges.append((edge.group(1), edge.group(2)))
    return list(names.values()), [(names[a], names[b]) for a, b in edges]


def topological_order(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm; among stages ready at the same time, the earlier one in ``nodes`` first."""
    rank = {name: i for i, name in enumerate(nodes)}
    children: dict[str, list[str]] = {name: [] for name in nodes}
    indegree = {name: 0 for name in nodes}
    for up, down in edges:
        children[up].append(down)
        indegree[down] += 1
    ready = [(rank[n], n) for n in nodes if indegree[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for child in children[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, (rank[child], child))
    if len(order) != len(nodes):
        raise ValueError(f"the stage graph has a cycle among {sorted(set(nodes) - set(order))}")
    return order


def pipeline_graph(cwd: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The project's stages in graph order and the edges between them, from ``dvc dag``
    (dvc.yaml is the one source)."""
    nodes, edges = parse_mermaid_dag(capture([dvc_executable(), "dag", "--mermaid"], cwd))
    return topological_order(nodes, edges), edges


def stage_order(cwd: str | Path) -> list[str]:
    """The project's stages in graph order."""
    return pipeline_graph(cwd)[0]


def downstream(stages: Iterable[str], edges: Iterable[tuple[str, str]]) -> set[str]:
    """``stages`` and every stage that depends on one of them, directly or not."""
    children: dict[str, list[str]] = {}
    for up, down in edges:
        children.setdefault(up, []).append(down)
    seen = set(stages)
    todo = list(seen)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


# ------------------------------------------------------------------ status and experiments


def status(cwd: str | Path) -> dict[str, list[Any]]:
    """``dvc status --json``: stage -> list of changes; empty when everything is up to date."""
    return dvc_json(["status"], cwd) or {}


def describe_status(changes: Mapping[str, list[Any]]) -> list[str]:
    """One readable line per changed stage, e.g. ``train: params.yaml (train.lr modified)``."""
    lines = []
    for stage, items in changes.items():
        parts: list[str] = []
        for item in items:
            if isinstance(item, str):  # "always changed"
                parts.append(item)
                continue
            for kind, paths in item.items():
                for path, what in paths.items():
                    if isinstance(what, dict):  # params: {key: "modified"}
                        detail = ", ".join(f"{k} {v}" for k, v in what.items())
                        parts.append(f"{path} ({detail})")
                    else:
                        parts.append(f"{path} {what} ({kind.replace('changed ', '')})")
        lines.append(f"{stage}: " + "; ".join(parts))
    return lines


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


@dataclass(frozen=True)
class Experiment:
    """One row of ``dvc exp show``: a baseline commit or an experiment on top of one."""

    name: str | None
    rev: str
    baseline: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    error: str | None = None


def _row(entry: Mapping[str, Any], baseline: str) -> Experiment:
    data = entry.get("data") or {}
    params: dict[str, Any] = {}
    for file in (data.get("params") or {}).values():
        params.update(flatten(file.get("data") or {}))
    metrics = {path: flatten(m.get("data") or {}) for path, m in (data.get("metrics") or {}).items()}
    error = entry.get("error")
    return Experiment(entry.get("name"), entry["rev"], baseline, params, metrics,
                      None if error is None else str(error.get("msg", error) if isinstance(error, dict) else error))


def experiments(cwd: str | Path) -> list[Experiment]:
    """Baselines and their experiments from ``dvc exp show --json``, flattened."""
    rows: list[Experiment] = []
    for base in dvc_json(["exp", "show"], cwd) or []:
        rows.append(_row(base, base["rev"]))
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                rows.append(_row(rev, base["rev"]))
    return rows
