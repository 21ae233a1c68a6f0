"""Read the pipeline outputs the report is built from, tolerating absence.

Each reader returns an :class:`Input`: the value when the file exists and parses, else a
status ("missing" or "unreadable") and a one-line reason naming the file. The report
turns those into "not yet run" / "unreadable" sections instead of failing.
File shapes follow docs/architecture.md.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from m3sa.config import Config

log = logging.getLogger(__name__)

METRIC_FILES = ("test", "valid", "masks", "robustness", "train")


@dataclass(frozen=True)
class Input:
    """One loaded input: ``value`` when ``status == "ok"``, else ``reason`` says why not.

    ``path`` is the file as shown to the reader (relative to the repository root).
    """

    path: Path
    status: str = "ok"
    value: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _missing(path: Path) -> Input:
    return Input(path, "missing", reason=f"`{path}` does not exist")


def _unreadable(path: Path, why: str) -> Input:
    log.warning("report input %s unreadable: %s", path, why)
    return Input(path, "unreadable", reason=f"`{path}` could not be read: {why}")


def read_json(root: Path, path: Path, kind: type = dict) -> Input:
    """``root/path``, a JSON file whose top level must be a ``kind`` (dict or list)."""
    if not (root / path).is_file():
        return _missing(path)
    try:
        value = json.loads((root / path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return _unreadable(path, str(err))
    if not isinstance(value, kind):
        return _unreadable(path, f"top level is a {type(value).__name__}, expected a {kind.__name__}")
    return Input(path, value=value)


def read_yaml(root: Path, path: Path) -> Input:
    """``root/path``, a YAML mapping (dvc.lock)."""
    if not (root / path).is_file():
        return _missing(path)
    try:
        value = yaml.safe_load((root / path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return _unreadable(path, err.__class__.__name__)
    if not isinstance(value, dict):
        return _unreadable(path, "top level is not a mapping")
    return Input(path, value=value)


def read_predictions(root: Path, path: Path) -> Input:
    """``predictions/test.parquet``; needs at least ``seed``, ``label`` and ``pred``."""
    if not (root / path).is_file():
        return _missing(path)
    try:
        df = pd.read_parquet(root / path)
    except Exception as err:  # pyarrow raises many types for a corrupt file
        return _unreadable(path, f"{err.__class__.__name__}: {err}")
    need = {"seed", "label", "pred"}
    if not need <= set(df.columns):
        return _unreadable(path, f"columns {sorted(need - set(df.columns))} missing")
    return Input(path, value=df)


def read_curves(root: Path, live_dir: Path) -> Input:
    """dvclive step logs: ``{seed: {metric name: DataFrame(step, value)}}``.

    dvclive's ``log_metric("valid/mae", v)`` under ``Live(dir=live_dir/seed_<s>)`` writes
    ``live_dir/seed_<s>/plots/metrics/valid/mae.tsv`` with columns ``step`` and ``mae``
    (plus ``timestamp`` when enabled); the metric name is the path below ``plots/metrics``.
    """
    if not (root / live_dir).is_dir():
        return _missing(live_dir)
    curves: dict[int, dict[str, pd.DataFrame]] = {}
    for seed_dir in sorted((root / live_dir).glob("seed_*")):
        match = re.fullmatch(r"seed_(-?\d+)", seed_dir.name)
        root = seed_dir / "plots" / "metrics"
        if not match or not root.is_dir():
            continue
        per_metric: dict[str, pd.DataFrame] = {}
        for tsv in sorted(root.rglob("*.tsv")):
            name = tsv.relative_to(root).with_suffix("").as_posix()
            try:
                df = pd.read_csv(tsv, sep="\t")
            except (OSError, ValueError) as err:
                log.warning("skipping unreadable curve %s: %s", tsv, err)
                continue
            value_col = tsv.stem if tsv.stem in df.columns else df.columns[-1]
            if "step" not in df.columns or df.empty:
                continue
            per_metric[name] = pd.DataFrame({"step": df["step"], "value": pd.to_numeric(df[value_col], errors="coerce")})
        if per_metric:
            curves[int(match.group(1))] = per_metric
    if not curves:
        return Input(live_dir, "missing", reason=f"`{live_dir}` holds no `seed_<s>/plots/metrics/*.tsv` curves")
    return Input(live_dir, value=curves)


@dataclass(frozen=True)
class RunPaths:
    """Where the report finds each pipeline output (docs/architecture.md): paths relative
    to the repository ``root``."""

    root: Path
    meta: Path
    metrics_dir: Path
    predictions: Path
    live_dir: Path
    experiments: Path
    dvc_lock: Path

    @classmethod
    def from_config(cls, cfg: Config, root: str | Path = ".") -> "RunPaths":
        return cls(
            root=Path(root),
            meta=Path(cfg.data.features_dir) / "meta.json",
            metrics_dir=Path("metrics"),
            predictions=Path("predictions") / "test.parquet",
            live_dir=Path(cfg.train.live_dir),
            experiments=Path(cfg.report.experiments),
            dvc_lock=Path("dvc.lock"),
        )


@dataclass
class RunInputs:
    """Everything the report reads, each possibly missing."""

    paths: RunPaths
    meta: Input
    metrics: dict[str, Input]
    predictions: Input
    curves: Input
    experiments: Input
    dvc_lock: Input

    @classmethod
    def load(cls, paths: RunPaths) -> "RunInputs":
        root = paths.root
        return cls(
            paths=paths,
            meta=read_json(root, paths.meta),
            metrics={name: read_json(root, paths.metrics_dir / f"{name}.json") for name in METRIC_FILES},
            predictions=read_predictions(root, paths.predictions),
            curves=read_curves(root, paths.live_dir),
            experiments=read_json(root, paths.experiments, kind=list),
            dvc_lock=read_yaml(root, paths.dvc_lock),
        )

    def metric(self, name: str) -> Optional[dict[str, Any]]:
        inp = self.metrics.get(name)
        return inp.value if inp is not None and inp.ok else None
