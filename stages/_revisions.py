"""Read a revision's metrics and per-segment predictions back from git.

``metrics/`` and ``plots/`` are git-tracked (``cache: false`` in dvc.yaml), so every commit
and every DVC experiment commit holds ``metrics/<split>.json`` and ``plots/predictions.csv``:
``git show <rev>:<path>`` reads them. The revision ``workspace`` reads the working tree.
Used by ``stages.compare --against`` and ``stages.collect``; the statistics live in
:mod:`m3sa.significance`.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

from m3sa.significance import NotComparable, SegmentPredictions, SystemResults, per_seed_from_doc, segment_predictions

PREDICTIONS_CSV = "plots/predictions.csv"


def read_at(rev: str, path: str, root: str | Path = ".") -> str:
    """The text of ``path`` at ``rev``; :class:`NotComparable` (one line) when it is not there."""
    if rev == "workspace":
        try:
            return (Path(root) / path).read_text()
        except OSError as err:
            raise NotComparable(f"{path} cannot be read in the workspace ({err.strerror or err})") from None
    try:
        done = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    except OSError as err:
        raise NotComparable(f"git cannot run ({err.strerror or err})") from None
    if done.returncode != 0:
        raise NotComparable(f"{path} is not committed at {rev[:7]} (metrics/ and plots/ are git-tracked: "
                            "commit them with the run)")
    return done.stdout


def metrics_doc_at(rev: str, split: str = "test", root: str | Path = ".") -> dict[str, Any]:
    """``metrics/<split>.json`` at ``rev``."""
    path = f"metrics/{split}.json"
    try:
        doc = json.loads(read_at(rev, path, root))
    except json.JSONDecodeError as err:
        raise NotComparable(f"{path} at {rev[:7]} is not JSON ({err.msg})") from None
    if not isinstance(doc, dict):
        raise NotComparable(f"{path} at {rev[:7]} is not a metrics document")
    return doc


def predictions_at(rev: str, root: str | Path = ".") -> SegmentPredictions:
    """``plots/predictions.csv`` (segment_id, seed, label, pred per test segment and seed) at ``rev``."""
    rows = list(csv.DictReader(io.StringIO(read_at(rev, PREDICTIONS_CSV, root))))
    try:
        return segment_predictions([r["segment_id"] for r in rows], [r["seed"] for r in rows],
                                   [float(r["label"]) for r in rows], [float(r["pred"]) for r in rows])
    except (KeyError, TypeError, ValueError) as err:
        raise NotComparable(f"{PREDICTIONS_CSV} at {rev[:7]}: needs columns segment_id, seed, label, pred with "
                            f"numbers ({err})") from None


def system_at(name: str, rev: str, split: str = "test", root: str | Path = ".") -> SystemResults:
    """Per-seed metrics and (test split only) per-segment predictions of one revision,
    each replaced by its one-line reason when it cannot be read."""
    fields: dict[str, Any] = {}
    try:
        fields["per_seed"] = per_seed_from_doc(metrics_doc_at(rev, split, root))
    except NotComparable as err:
        fields["per_seed_missing"] = str(err)
    if split != "test":
        fields["segments_missing"] = f"{PREDICTIONS_CSV} holds test predictions only"
    else:
        try:
            fields["segments"] = predictions_at(rev, root)
        except NotComparable as err:
            fields["segments_missing"] = str(err)
    return SystemResults(name, **fields)
