"""Experiments behind the paper's Tables 3 (ablations) and 4 (fusion strategies).

``results/experiments.json`` (``report.experiments`` in params.yaml, written by
``python -m stages.collect`` or by hand) is a JSON list of entries::

    {"name": "no-ml-hard",                      # any label
     "rev": "89d9585...",                       # optional: git/DVC revision
     "params": {"model.filter": "hard",         # params.yaml keys, dotted or nested;
                "model.modulation": false},     #   model.* keys left out take their defaults
     "metrics": {"test": {"mean": {...}, "std": {...}, "per_seed": [...]}},
     "predictions": {"seeds": [...], "segment_id": [...], "label": [...],   # optional: test predictions,
                     "pred": [[...], ...]}}                                 #   one row per seed

``metrics.test`` has the shape of ``metrics/test.json`` (``per_seed`` optional, each entry
with its ``seed``); ``predictions`` is :meth:`m3sa.significance.SegmentPredictions.to_dict`.
Both feed the paired comparisons of the report's tables; without them those cells say so.
An ablation is a parameter override, so each entry is matched to its paper row by its params.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from m3sa.config import ModelConfig
from m3sa.errors import DataError
from m3sa.significance import NotComparable, SegmentPredictions, SystemResults, per_seed_from_doc

FUSION_NAMES = {"add": "Addition", "concat": "Concatenation+FC", "tensor": "Tensor Fusion", "graph": "Graph Fusion"}
SYSTEM_NAMES = {
    "late_fusion": "Late fusion (M3SA encoders, no ML/MFM)",
    "text_only": "Text only",
    "ef_lstm": "EF-LSTM",
    "lf_lstm": "LF-LSTM",
    "tfn": "TFN",
    "lmf": "LMF",
    "mult": "MULT",
    "mag_bert": "MAG-BERT",
}


@dataclass(frozen=True)
class Experiment:
    """One finished experiment: resolved dotted params and its test metrics document."""

    name: str
    params: dict[str, Any]
    test: dict[str, Any]
    rev: Optional[str] = None
    predictions: Optional[SegmentPredictions] = None  # test predictions per segment and seed
    predictions_missing: str = "no per-segment test predictions stored"
    seeds: tuple[Any, ...] = ()  # the run's seeds in order, for per_seed entries without a seed key

    def results(self, label: str) -> SystemResults:
        """What this experiment brings to a paired comparison (m3sa.significance)."""
        try:
            per_seed, missing = per_seed_from_doc(self.test, self.seeds), ""
        except NotComparable as err:
            per_seed, missing = None, str(err)
        return SystemResults(label, per_seed, self.predictions, per_seed_missing=missing,
                             segments_missing=self.predictions_missing)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"filter": "hard"}}`` -> ``{"model.filter": "hard"}``; dotted keys kept."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """Dotted params with every ``model.*`` key not given filled from :class:`ModelConfig`."""
    defaults = flatten({"model": dataclasses.asdict(ModelConfig())})
    return {**defaults, **flatten(params)}


def system_label(params: dict[str, Any]) -> str:
    """Paper-style name of the system a (resolved) parameter set trains.

    >>> system_label(resolve({"model.filter": "hard", "model.modulation": False}))
    'M3SA (Hard) (W/O ML)'
    """
    name = params.get("model.name", "m3sa")
    if name != "m3sa":
        return SYSTEM_NAMES.get(name, str(name))
    filt = params.get("model.filter", "soft")
    label = "M3SA (W/O MFM)" if filt == "none" else f"M3SA ({str(filt).capitalize()})"
    if not params.get("model.modulation", True):
        label += " (W/O ML)"
    if filt != "none" and not params.get("model.baseline_embedding", True):
        label += " (W/O BE)"
    fusion = params.get("model.fusion", "add")
    if fusion != "add":
        label += f" [{FUSION_NAMES.get(fusion, fusion)}]"
    return label


def fusion_label(params: dict[str, Any]) -> str:
    """Table 4 row name, e.g. ``'Tensor Fusion (Soft)'``."""
    fusion = params.get("model.fusion", "add")
    return f"{FUSION_NAMES.get(fusion, fusion)} ({str(params.get('model.filter')).capitalize()})"


def is_ablation(params: dict[str, Any]) -> bool:
    """Table 3 material: M3SA with addition fusion (any component removed or not)."""
    return params.get("model.name") == "m3sa" and params.get("model.fusion") == "add"


def is_fusion_variant(params: dict[str, Any]) -> bool:
    """Table 4 material: full M3SA (a filter, modulation, baseline embedding), any fusion."""
    return (params.get("model.name") == "m3sa" and params.get("model.filter") in ("soft", "hard")
            and params.get("model.modulation") is True and params.get("model.baseline_embedding") is True)


def is_full_model(params: dict[str, Any]) -> bool:
    """The reference row of Tables 3 and 4: full M3SA with the default soft filter and addition."""
    return is_fusion_variant(params) and params.get("model.filter") == "soft" and params.get("model.fusion") == "add"


def parse_experiments(raw: list[Any], source: str | Path = "experiments") -> tuple[list[Experiment], list[str]]:
    """Validate entries; return the usable ones and one note per skipped entry."""
    good: list[Experiment] = []
    notes: list[str] = []
    for i, entry in enumerate(raw):
        where = f"{source}: entry {i}"
        if not isinstance(entry, dict):
            notes.append(f"{where} skipped: not a mapping")
            continue
        test = (entry.get("metrics") or {}).get("test") if isinstance(entry.get("metrics"), dict) else None
        if not isinstance(test, dict) or not isinstance(test.get("mean"), dict):
            notes.append(f"{where} ({entry.get('name', 'unnamed')}) skipped: no metrics.test.mean")
            continue
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            notes.append(f"{where} ({entry.get('name', 'unnamed')}) skipped: params is not a mapping")
            continue
        extra: dict[str, Any] = {}
        if entry.get("predictions") is not None:
            try:
                extra["predictions"] = SegmentPredictions.from_dict(entry["predictions"])
            except NotComparable as err:
                extra["predictions_missing"] = str(err)
        good.append(Experiment(name=str(entry.get("name") or f"entry {i}"), params=resolve(params), test=test,
                               rev=entry.get("rev"), **extra))
    return good, notes


def from_exp_show(data: list[dict[str, Any]], params_file: str = "params.yaml") -> list[dict[str, Any]]:
    """Entries (the shape above) from ``dvc exp show --json`` output.

    Takes every committed baseline and every experiment that has ``metrics/test.json``;
    skips the uncommitted workspace (the current run, which the report shows anyway) and
    failed or queued experiments.
    """
    out: list[dict[str, Any]] = []

    def add(rev: dict[str, Any]) -> None:
        body = rev.get("data") or {}
        if rev.get("error") or rev.get("rev") == "workspace" or not body:
            return
        metrics = {Path(path).stem: (doc or {}).get("data") for path, doc in (body.get("metrics") or {}).items()}
        if not isinstance(metrics.get("test"), dict):
            return
        params = ((body.get("params") or {}).get(params_file) or {}).get("data") or {}
        sha = str(rev.get("rev", ""))
        out.append({"name": rev.get("name") or sha[:7], "rev": sha or None,
                    "params": flatten(params), "metrics": {k: v for k, v in metrics.items() if isinstance(v, dict)}})

    try:
        for baseline in data:
            add(baseline)
            for group in baseline.get("experiments") or []:
                for rev in group.get("revs") or []:
                    add(rev)
    except (AttributeError, TypeError) as err:
        raise DataError(f"dvc exp show --json: an entry has an unexpected shape ({err})") from None
    return out
