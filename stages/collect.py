"""``python -m stages.collect``: gather finished DVC experiments into ``report.experiments``.

Runs ``dvc exp show --json`` (or reads its saved output with ``--json FILE``) and writes
one entry per committed baseline and experiment that has ``metrics/test.json``, in the
shape :mod:`m3sa.report.experiments` documents (name, rev, dotted params, metrics). The
report's ablation (paper Table 3) and fusion (Table 4) sections read that file. Not a
DVC stage (it reads DVC's experiment store); run it after ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from m3sa.atomic import write_atomic
from m3sa.config import Config
from m3sa.errors import DataError
from m3sa.report.experiments import from_exp_show
from stages._cli import run

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
    out = Path(cfg.report.experiments)
    write_atomic(out, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    log.info("wrote %d experiments to %s", len(entries), out)


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="read saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD")


if __name__ == "__main__":
    run("collect", main, extra=_extra)
