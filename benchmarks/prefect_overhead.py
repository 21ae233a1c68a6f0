"""Overhead of the Prefect pipeline flow over plain ``dvc repro``.

Builds a throw-away copy of this repository (files git tracks or would track) on tiny
settings, runs it once, then times, ``--repeats`` times each, in one run:

- no-op: ``dvc repro`` with everything up to date, against the flow
  (``pipelines.pipeline``) in a process whose Prefect API is already up, and against
  ``python -m pipelines.pipeline`` in a fresh process (imports plus a temporary server);
- tiny full run: ``dvc repro --force`` against the flow with ``force=True``, each after
  deleting the persisted checkpoints (``train.models_dir``), so training starts over.

Writes a markdown table (medians, ratios) to ``--out`` (default docs/benchmarks-prefect.md).
Usage: ``python benchmarks/prefect_overhead.py [--repeats 3] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {"data.sample_size": "tiny", "model.text_encoder": "random:tiny", "train.seeds": [0], "train.epochs": 1}


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = str(Path(sys.executable).parent) + os.pathsep + out.get("PATH", "")
    out.pop("PREFECT_API_URL", None)  # every fresh process starts its own temporary server
    return out


def sh(args: list[str], cwd: Path) -> float:
    """Run a command, fail loudly, return its wall time (s)."""
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def make_project(dest: Path) -> Path:
    """Copy the repository's files into ``dest`` with tiny params; a committed git + DVC repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in files:
        if rel and (ROOT / rel).is_file() and not rel.startswith(("tests/", "benchmarks/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for dotted, value in TINY.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    sh(["git", "init", "-q"], dest)
    if not (dest / ".dvc").exists():
        sh([dvc, "init", "-q"], dest)
    sh([dvc, "config", "--local", "core.site_cache_dir", str(dest.parent / "dvc-site")], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench"], dest)
    return dest


def timed(fn, repeats: int, prepare=None) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn``; ``prepare`` runs untimed before each."""
    out = []
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-prefect.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="m3sa-prefect-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect-home"))
    os.environ.pop("PREFECT_API_URL", None)
    sys.path.insert(0, str(ROOT))
    from pipelines._dvc import dvc_executable
    from pipelines.pipeline import pipeline  # imports Prefect with the offline defaults

    try:
        repo = make_project(work / "proj")
        dvc = dvc_executable()
        load_before = os.getloadavg()
        first_run = sh([dvc, "repro"], repo)
        cold_cmd = [sys.executable, "-m", "pipelines.pipeline", "--project-dir", str(repo)]
        sh(cold_cmd, ROOT)  # creates the Prefect database once: not part of the timings
        pipeline(str(repo))  # starts this process's temporary server

        models = repo / yaml.safe_load((repo / "params.yaml").read_text())["train"]["models_dir"]

        def from_scratch() -> None:  # checkpoints persist across runs (resume): start over
            shutil.rmtree(models, ignore_errors=True)

        rows = {
            "no-op: dvc repro": timed(lambda: sh([dvc, "repro"], repo), args.repeats),
            "no-op: flow, API up": timed(lambda: pipeline(str(repo)), args.repeats),
            "no-op: flow, fresh process": timed(lambda: sh(cold_cmd, ROOT), args.repeats),
            "tiny full run: dvc repro --force": timed(lambda: sh([dvc, "repro", "--force"], repo), args.repeats,
                                                      from_scratch),
            "tiny full run: flow force=True, API up": timed(lambda: pipeline(str(repo), force=True), args.repeats,
                                                            from_scratch),
        }
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {name: statistics.median(times) for name, times in rows.items()}
    ratios = {
        "no-op: flow, API up": med["no-op: flow, API up"] / med["no-op: dvc repro"],
        "no-op: flow, fresh process": med["no-op: flow, fresh process"] / med["no-op: dvc repro"],
        "tiny full run: flow force=True, API up":
            med["tiny full run: flow force=True, API up"] / med["tiny full run: dvc repro --force"],
    }
    import prefect

    lines = [
        "# Prefect overhead over plain `dvc repro`",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `python benchmarks/prefect_overhead.py "
        f"--repeats {args.repeats}` on {os.cpu_count()} CPU cores ({platform.machine()}, Python "
        f"{platform.python_version()}, prefect {prefect.__version__}); load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (other work shared the machine when > cores).",
        f"Project: this repository on tiny settings ({', '.join(f'`{k}={v}`' for k, v in TINY.items())}); "
        f"the first full `dvc repro` took {first_run:.1f} s. Pipeline flow: `dvc dag` and `dvc status`, then "
        "one task per stage running `dvc repro --single-item` (a stage found unchanged skips the dvc call).",
        "",
        "| case | median (s) | runs (s) | flow / dvc |",
        "|---|---|---|---|",
    ]
    for name, times in rows.items():
        ratio = f"{ratios[name]:.2f}x" if name in ratios else ""
        lines.append(f"| {name} | {med[name]:.2f} | {', '.join(f'{t:.2f}' for t in times)} | {ratio} |")
    noop_extra = med["no-op: flow, API up"] - med["no-op: dvc repro"]
    full_extra = med["tiny full run: flow force=True, API up"] - med["tiny full run: dvc repro --force"]
    lines += [
        "",
        f"Added time: {noop_extra:+.2f} s for the no-op, {full_extra:+.2f} s for the tiny full run, with the "
        "Prefect API already up (a worker's flow process, or `flow.serve`). A fresh process also imports "
        "Prefect and starts a temporary server unless `PREFECT_API_URL` points at a running one.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
