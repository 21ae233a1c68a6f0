"""Report tables: pipeline outputs -> :class:`~m3sa.report.document.Table` with formatted cells.

Numbers are rounded here and only here. Accuracies and F1 are shown as percentages with
one decimal (the paper's style), MAE and Corr with three; ``mean ± std`` over seeds; paired
differences (m3sa.significance) in the same units, accuracies in percentage points.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

from m3sa.report.document import Table
from m3sa.report.published import PublishedRow
from m3sa.report.stats import FilterSummary
from m3sa.significance import BOOTSTRAP, PAIRED, Difference, RowComparison

METRICS = ("acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "mae", "corr")
LABELS = {"acc7": "Acc7", "acc5": "Acc5", "acc2_non0": "Acc2 (non0)", "f1_non0": "F1 (non0)",
          "acc2_has0": "Acc2 (has0)", "f1_has0": "F1 (has0)", "mae": "MAE", "corr": "Corr"}
PERCENT = {"acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0"}
CONVENTIONS = {"non0": "non0: y ≠ 0 only, positive = y > 0",
               "has0": "has0: all segments, positive = y ≥ 0"}
CONVENTION_NOTE = ("Acc2/F1 conventions (DESIGN section 4): " + "; ".join(CONVENTIONS.values())
                   + ". F1 is the weighted F1. The paper does not state its convention.")
DASH = "–"


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def fmt_metric(key: str, mean: Any, std: Any = None) -> str:
    """``fmt_metric("acc7", 0.4642, 0.0123) == "46.4 ± 1.2"``; MAE/Corr keep 3 decimals."""
    m = _num(mean)
    if m is None:
        return DASH if mean is None else "n/a"
    scale, digits = (100.0, 1) if key in PERCENT else (1.0, 3)
    text = f"{m * scale:.{digits}f}"
    s = _num(std)
    if s is not None:
        text += f" ± {s * scale:.{digits}f}"
    return text


def n_seeds(doc: dict[str, Any]) -> Optional[int]:
    per_seed = doc.get("per_seed")
    return len(per_seed) if isinstance(per_seed, list) else None


def metric_cell(doc: dict[str, Any], key: str) -> str:
    """``mean ± std`` of ``key`` in a metrics document (no ± for a single seed)."""
    std = (doc.get("std") or {}).get(key) if n_seeds(doc) != 1 else None
    return fmt_metric(key, (doc.get("mean") or {}).get(key), std)


def _published_cell(value: Optional[float], digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


RUN_METRICS = ("acc7", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "mae", "corr")
PAIRED_COLUMNS = (("mae", PAIRED), ("corr", PAIRED), ("acc2_non0", PAIRED), ("mae", BOOTSTRAP), ("acc2_non0", BOOTSTRAP))
_SHORT = {"mae": "MAE", "corr": "Corr", "acc2_non0": "Acc2 non0"}


def paired_cell(d: Difference) -> str:
    """Difference, 95 % CI, Holm p and verdict; accuracies in percentage points."""
    scale, digits = (100.0, 1) if d.metric in PERCENT else (1.0, 3)
    return d.cell(scale, digits)


def comparison_table(caption: str, runs: Sequence[tuple[str, str, dict[str, Any]]],
                     comparisons: Optional[Sequence[RowComparison]] = None, notes: Iterable[str] = ()) -> Table:
    """One row per run with both Acc2/F1 conventions as columns (the paper's metrics).

    ``runs``: (system label, data label, metrics document). With ``comparisons`` the first
    run is the reference and ``comparisons[i]`` (m3sa.significance) belongs to ``runs[i + 1]``:
    each row gets the paired differences against the reference beside it.
    """
    header = ["System", "Data", "Seeds", *(LABELS[k] for k in RUN_METRICS)]
    if comparisons is not None:
        header += [f"Δ {_SHORT[m]} ({method})" for m, method in PAIRED_COLUMNS]
    rows = []
    for i, (label, data, doc) in enumerate(runs):
        row = [label, data, str(n_seeds(doc) or "?"), *(metric_cell(doc, k) for k in RUN_METRICS)]
        if comparisons is not None:
            if i == 0:
                row += ["reference"] * len(PAIRED_COLUMNS)
            else:
                cells = comparisons[i - 1].cells
                row += [paired_cell(cells[key]) if key in cells else DASH for key in PAIRED_COLUMNS]
        rows.append(row)
    return Table(caption, header, rows, notes=[CONVENTION_NOTE, *notes], row_kinds=["run"] * len(rows))


def published_table(caption: str, published: Sequence[PublishedRow]) -> Table:
    """The paper's own rows, apart from this project's runs (its Acc2/F1 convention is not stated)."""
    rows = [[r.system, r.dataset, r.source, _published_cell(r.acc7, 1), _published_cell(r.acc2, 1),
             _published_cell(r.f1, 1), _published_cell(r.mae, 3), _published_cell(r.corr, 3)] for r in published]
    return Table(caption, ["System", "Dataset", "Source", "Acc7", "Acc2", "F1", "MAE", "Corr"], rows,
                 notes=["Copied from the paper; it does not state its Acc2/F1 convention, and publishes no seeds "
                        "or spread, so no paired comparison with it is possible."],
                 row_kinds=["published"] * len(rows))


def metrics_table(docs: dict[str, dict[str, Any]]) -> Table:
    """All eight metrics, one row per split (mean ± std over seeds)."""
    rows = [[split, str(n_seeds(doc) or "?"), *(metric_cell(doc, k) for k in METRICS)] for split, doc in docs.items()]
    return Table("All metrics of this run (mean ± std over seeds)", ["Split", "Seeds", *(LABELS[k] for k in METRICS)],
                 rows, notes=[CONVENTION_NOTE])


def per_seed_table(doc: dict[str, Any], seeds: Sequence[Any] = (), split: str = "test") -> Table:
    """One row per entry of ``doc["per_seed"]``, labelled by its ``seed`` key, else by
    ``seeds`` (the run's seeds in order) when the counts agree, else by position."""
    entries = [e for e in doc.get("per_seed") or [] if isinstance(e, dict)]
    rows = []
    for i, entry in enumerate(entries):
        seed = entry.get("seed", seeds[i] if len(seeds) == len(entries) else f"#{i + 1}")
        rows.append([str(seed), *(fmt_metric(k, entry.get(k)) for k in METRICS)])
    return Table(f"Per-seed {split} metrics", ["Seed", *(LABELS[k] for k in METRICS)], rows)


def robustness_table(test: Optional[dict[str, Any]], robustness: dict[str, Any]) -> Table:
    """Test metrics with each modality in turn replaced by its baseline embedding."""
    keys = ("acc7", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0", "mae", "corr")
    full_mae = _num(((test or {}).get("mean") or {}).get("mae"))
    rows, kinds = [], []
    conditions = ([("all modalities", test)] if test else []) + [
        (f"without {m} (baseline embedding)", doc) for m, doc in robustness.items() if isinstance(doc, dict)]
    for name, doc in conditions:
        mae = _num((doc.get("mean") or {}).get("mae"))
        delta = f"{mae - full_mae:+.3f}" if mae is not None and full_mae is not None and doc is not test else DASH
        rows.append([name, *(metric_cell(doc, k) for k in keys), delta])
        kinds.append("run")
    return Table("Missing-modality robustness on test (mean ± std over seeds)",
                 ["Condition", *(LABELS[k] for k in keys), "ΔMAE vs all"], rows,
                 notes=["A dropped modality's embedding is replaced by its learned baseline embedding b_m "
                        "(eq. 16), as the filter does when it removes a modality."], row_kinds=kinds)


def filter_table(summaries: Sequence[FilterSummary], masks: Optional[dict[str, Any]],
                 published_mean: dict[str, float]) -> Table:
    """Per-modality filter statistics on test; planted ground truth columns when known."""
    hard = (masks or {}).get("hard_keep_rate") or {}
    with_gt = any(s.n_informative or s.n_noise for s in summaries)
    header = ["Modality", "Mean s", "Mean s, published", "Kept (s > 0.5)", "Hard keep rate"]
    if with_gt:
        header += ["Mean s, informative", "Mean s, noise", "AUC"]
    rows = []
    for s in summaries:
        row = [s.modality, f"{s.mean:.3f}", _published_cell(published_mean.get(s.modality), 3), f"{s.keep_rate:.1%}",
               f"{hard[s.modality]:.1%}" if _num(hard.get(s.modality)) is not None else DASH]
        if with_gt:
            row += [f"{s.mean_informative:.3f} (n={s.n_informative})" if s.mean_informative is not None else DASH,
                    f"{s.mean_noise:.3f} (n={s.n_noise})" if s.mean_noise is not None else DASH,
                    f"{s.auc:.3f}" if s.auc is not None else DASH]
        rows.append(row)
    notes = ["s = share of the unimodal embedding kept (eq. 16; the paper's Mask1), 1 - s = share replaced by "
             "the baseline embedding (Mask2). This run's values are pooled over seeds; 'published' is M3SA (Soft) "
             "on CMU-MOSI (section 4.2.4). Hard keep rate: from metrics/masks.json, hard filter only."]
    if with_gt:
        notes.append("Informative / noise: segments where the embedded sample's planted ground truth says the "
                     "modality carries the sentiment / does not (n = segments, all seeds). AUC: ROC AUC of s for "
                     "telling them apart (1.0 = perfectly, 0.5 = not at all).")
    return Table("Modality filter values on test (paper Figure 2, section 4.2.4)", header, rows, notes=notes)


def scalar_records_table(caption: str, records: Sequence[dict[str, Any]], first: Sequence[str] = ()) -> Table:
    """Rows of scalar fields (union of keys, ``first`` keys leading); nested values are left out."""
    keys: list[str] = [k for k in first if any(k in r for r in records)]
    for r in records:
        keys += [k for k, v in r.items() if k not in keys and not isinstance(v, (dict, list))]
    rows = [[_fmt_scalar(r.get(k)) for k in keys] for r in records]
    return Table(caption, keys, rows)


def key_value_table(caption: str, items: dict[str, Any], header: tuple[str, str] = ("Item", "Value")) -> Table:
    return Table(caption, list(header), [[str(k), _fmt_scalar(v)] for k, v in items.items()])


def _fmt_scalar(v: Any) -> str:
    if v is None:
        return DASH
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def data_tables(meta: dict[str, Any]) -> list[Table]:
    """Segments per split, dropped segments by reason, non-finite values, feature widths."""
    counts = meta.get("counts") or {}
    videos = meta.get("videos") if isinstance(meta.get("videos"), dict) else None
    header, rows = ["Split", "Segments"], [[str(k), str(v)] for k, v in counts.items()]
    rows.append(["total", str(sum(v for v in counts.values() if isinstance(v, int)))])
    if videos:
        header.append("Videos")
        for row in rows:
            n = videos.get(row[0]) if row[0] != "total" else sum(v for v in videos.values() if isinstance(v, int))
            row.append(DASH if n is None else str(n))
    tables = [Table("Segments per split", header, rows)]
    dropped = [d for d in meta.get("dropped") or [] if isinstance(d, dict)]
    by_reason = Counter(str(d.get("reason", "unknown")) for d in dropped)
    rows = []
    for reason, n in by_reason.most_common():
        ids = [str(d.get("segment_id")) for d in dropped if str(d.get("reason", "unknown")) == reason]
        rows.append([reason, str(n), ", ".join(ids[:5]) + (" …" if len(ids) > 5 else "")])
    tables.append(Table(f"Dropped segments ({len(dropped)})", ["Reason", "Segments", "Examples"],
                        rows or [["none dropped", "0", DASH]]))
    nonfinite = meta.get("nonfinite") or {}
    tables.append(Table("Non-finite feature values replaced (NaN, ±inf)", ["Modality", "Values"],
                        [[str(k), str(v)] for k, v in nonfinite.items()]))
    dims = {"language": "text (words)", **{k: f"{v}-d" for k, v in (meta.get("dims") or {}).items()}}
    tables.append(Table("Modalities", ["Modality", "Features"],
                        [[m, dims.get(m, DASH)] for m in meta.get("modalities") or []]))
    other = _other_counts(meta)
    if other:
        tables.append(key_value_table("Other extraction records (meta.json)", other, header=("Key", "Value")))
    return tables


_SHOWN_META = {"format", "version", "source", "align", "modalities", "dims", "counts", "videos", "dropped", "nonfinite",
               "standardization", "inputs", "params", "has_ground_truth", *("wall_s", "wall_time_s", "elapsed_s",
                                                                           "duration_s", "seconds", "timing")}


def _other_counts(meta: dict[str, Any]) -> dict[str, Any]:
    """meta.json entries the tables above do not show: scalars, one level of mapping
    (``key.sub``), and lists by their length."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if key in _SHOWN_META:
            continue
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
            if not value:
                out[key] = "none"
        elif isinstance(value, list):
            out[key] = f"{len(value)} entries" + (": " + ", ".join(map(str, value[:5])) if value else "")
        else:
            out[key] = value
    return out
