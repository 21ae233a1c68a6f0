"""``python -m stages.collect``: gather finished DVC experiments into ``report.experiments``.

Runs ``dvc exp show --json`` (or reads its saved output with ``--json FILE``) and writes
one entry per committed baseline and experiment that has ``metrics/test.json``, in the
shape :mod:`m3sa.report.experiments` documents (name, rev, dotted params, metrics). DVC's
JSON carries no lists, so each entry's per-seed test metrics and its test predictions per
segment and seed are read back from git (``git show <rev>:metrics/test.json`` and
``<rev>:plots/predictions.csv``; both git-tracked) for the report's paired comparisons; an
entry whose revision lacks them is kept without them, with a warning. The report's results
(Table 1), ablation (Table 3) and fusion (Table 4) sections read that file. Not a DVC stage
(it reads DVC's experiment store); run it after ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from m3sa.atomic import write_atomic
from m3sa.config import Config
from m3sa.errors import DataError
from m3sa.report.experiments import from_exp_show
from m3sa.significance import NotComparable, per_seed_from_doc
from stages._cli import run
from stages._revisions import metrics_doc_at, predictions_at

log = logging.getLogger("stages.collect")


def dvc_exp_show(all_commits: bool = False) -> list:
    """Parsed ``dvc exp show --json`` of the repository in the current directory."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`{' '.join(cmd[2:])}` failed: {last}")
    try:
        data = json.loads(done.stdout or "[]")
    except json.JSONDecodeError as err:
        raise DataError(f"`{' '.join(cmd[2:])}` printed no JSON ({err})") from None
    if not isinstance(data, list):
        raise DataError(f"`{' '.join(cmd[2:])}` printed a {type(data).__name__}, expected a list of revisions")
    return data


def attach_revision_data(entries: list[dict[str, Any]], root: str | Path = ".") -> list[str]:
    """Add per-seed test metrics (when DVC gave none) and test predictions from each entry's
    revision; returns one line per entry and item that could not be read."""
    missing = []
    for entry in entries:
        rev, test = entry.get("rev"), (entry.get("metrics") or {}).get("test")
        if not rev or not isinstance(test, dict):
            continue
        try:
            if not isinstance(test.get("per_seed"), list):
                doc = metrics_doc_at(rev, "test", root)
                per_seed_from_doc(doc)  # usable: every entry names its seed
                test["per_seed"] = doc["per_seed"]
        except NotComparable as err:
            missing.append(f"{entry['name']}: per-seed test metrics: {err}")
        try:
            entry["predictions"] = predictions_at(rev, root).to_dict()
        except NotComparable as err:
            missing.append(f"{entry['name']}: test predictions: {err}")
    return missing


def dumps(value: Any, level: int = 0) -> str:
    """JSON with one key per line, but every list of plain values on one line (the
    predictions stay short and readable)."""
    pad = " " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {dumps(v, level + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(pad + dumps(v, level + 1) for v in value) + "\n" + " " * level + "]"
    return json.dumps(value)


def main(cfg: Config, args: argparse.Namespace) -> None:
    if args.json:
        path = Path(args.json)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: cannot read `dvc exp show --json` output ({err})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected the list `dvc exp show --json` prints, got a {type(data).__name__}")
    else:
        data = dvc_exp_show(args.all_commits)
    entries = from_exp_show(data)
    for line in attach_revision_data(entries):
        log.warning("%s (its paired comparisons in the report will say so)", line)
    out = Path(cfg.report.experiments)
    write_atomic(out, dumps(entries) + "\n")
    log.info("wrote %d experiments to %s", len(entries), out)


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="read saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD")


if __name__ == "__main__":
    run("collect", main, extra=_extra)
