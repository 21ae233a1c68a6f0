"""Compare experiments and commits: ``python -m stages.compare [NAME_OR_REV ...]``.

Reads ``dvc exp show --json`` (all commits and experiments of the current branch, or the
``--all`` branches) and prints a Markdown table of the params that differ and the metrics
(mean ± std over seeds), best per metric in bold. ``--against REV`` adds, for every other
row, the paired comparisons of m3sa.significance against that revision: a paired t over
the seeds both ran (per-seed metrics from ``git show <rev>:metrics/<split>.json``) and a
paired bootstrap over the test segments (``git show <rev>:plots/predictions.csv``), Holm
over the rows, a verdict per metric. Not a DVC stage: a reading tool.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from m3sa.atomic import write_atomic
from m3sa.compare import Record, comparison_table, paired_table, records_from_exp_show, select
from m3sa.errors import M3SAError
from m3sa.significance import NotComparable, SystemResults, compare_to_reference, per_seed_from_doc
from stages._cli import EXIT_USER_ERROR
from stages._revisions import system_at


def _dvc() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def exp_show_json(all_commits: bool = False) -> list:
    cmd = [_dvc(), "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise M3SAError(f"`{' '.join(cmd[1:])}` failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return json.loads(proc.stdout)


def system(record: Record, split: str) -> SystemResults:
    """A record's per-seed metrics (from exp show when DVC gives them, else git) and predictions."""
    found = system_at(record.name, record.rev, split)
    stored = record.metrics.get(split, {}).get("per_seed")
    if stored is None:
        return found
    try:
        per_seed = per_seed_from_doc({"per_seed": stored})
    except NotComparable:
        return found
    return SystemResults(record.name, per_seed, found.segments, segments_missing=found.segments_missing)


def against_table(records: list[Record], reference: Record, split: str) -> str:
    """The paired comparisons of every other record against ``reference``."""
    others = [r for r in records if r is not reference]
    if not others:
        raise M3SAError(f"nothing to compare against '{reference.name}': name at least one other experiment")
    rows = compare_to_reference(system(reference, split), [system(r, split) for r in others])
    return paired_table(reference.name, rows, segments=f"{split} segments")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.compare", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiment names or revisions (default: all)")
    parser.add_argument("--split", default="test", choices=["test", "valid"], help="which metrics file")
    parser.add_argument("--all-commits", action="store_true", help="include every commit, not only HEAD")
    parser.add_argument("--json", dest="json_in", help="read this saved `dvc exp show --json` output instead")
    parser.add_argument("--against", metavar="REV", help="compare every row with this experiment or revision: "
                        "paired t over seeds, segment bootstrap, Holm, verdicts")
    parser.add_argument("-o", "--output", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(Path(args.json_in).read_text()) if args.json_in else exp_show_json(args.all_commits)
        records = records_from_exp_show(payload)
        chosen = select(records, args.names)
        if args.against:
            reference = select(records, [args.against])[0]
            chosen = [reference] + [r for r in chosen if r is not reference]
        table = comparison_table(chosen, split=args.split)
        if args.against:
            table += "\n\n" + against_table(chosen, reference, args.split)
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
