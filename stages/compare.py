"""Compare experiments and commits: ``python -m stages.compare [NAME_OR_REV ...]``.

Reads ``dvc exp show --json`` (all commits and experiments of the current branch, or the
``--all`` branches) and prints a Markdown table of the params that differ and the metrics
(mean ± std over seeds), best per metric in bold. Not a DVC stage: a reading tool.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from m3sa.atomic import write_atomic
from m3sa.compare import comparison_table, records_from_exp_show, select
from m3sa.errors import M3SAError
from stages._cli import EXIT_USER_ERROR


def _dvc() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def exp_show_json(all_commits: bool = False) -> list:
    cmd = [_dvc(), "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise M3SAError(f"`{' '.join(cmd[1:])}` failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiment names or revisions (default: all)")
    parser.add_argument("--split", default="test", choices=["test", "valid"], help="which metrics file")
    parser.add_argument("--all-commits", action="store_true", help="include every commit, not only HEAD")
    parser.add_argument("--json", dest="json_in", help="read this saved `dvc exp show --json` output instead")
    parser.add_argument("-o", "--output", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(Path(args.json_in).read_text()) if args.json_in else exp_show_json(args.all_commits)
        table = comparison_table(select(records_from_exp_show(payload), args.names), split=args.split)
    except (M3SAError, OSError, json.JSONDecodeError) as err:
        print(f"error: compare: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    print(table)
    if args.output:
        try:
            write_atomic(args.output, table + "\n")
        except M3SAError as err:
            print(f"error: compare: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
