"""Compare experiments and commits from ``dvc exp show --json``.

Pure functions over the JSON DVC prints: flatten it into one record per revision
(name, params, metrics mean and std), find the params that differ, and render a Markdown
table with the best value per metric marked; :func:`paired_table` renders the paired
comparisons of :mod:`m3sa.significance` against a reference. The CLI lives in
``stages/compare.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from m3sa.errors import M3SAError
from m3sa.significance import (BOOTSTRAP, LOWER_IS_BETTER, METHOD_NOTE, NO_DIFFERENCE, PAIRED, SEED_METRICS,
                               SEGMENT_METRICS, WELCH, RowComparison, fmt_p)

METRIC_KEYS = ("mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0")
METRIC_LABELS = {"mae": "MAE", "corr": "Corr", "acc2_non0": "Acc2 (non0)"}


@dataclass
class Record:
    """One revision of ``dvc exp show``: a commit, the workspace or an experiment."""

    name: str
    rev: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> mean, std (per_seed when DVC gives it)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rev": self.rev, "params": self.params, "metrics": self.metrics}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _record(entry: dict[str, Any], name: str) -> Record:
    data = entry.get("data") or {}
    params: dict[str, Any] = {}
    for file_data in (data.get("params") or {}).values():
        params.update(_flatten((file_data or {}).get("data") or {}))
    metrics: dict[str, dict[str, Any]] = {}
    for path, file_data in (data.get("metrics") or {}).items():
        content = (file_data or {}).get("data") or {}
        if isinstance(content.get("mean"), dict):
            stem = path.rsplit("/", 1)[-1].removesuffix(".json")
            metrics[stem] = {"mean": dict(content["mean"]), "std": dict(content.get("std") or {})}
            if isinstance(content.get("per_seed"), list):
                metrics[stem]["per_seed"] = list(content["per_seed"])
    return Record(name=name, rev=str(entry.get("rev", "")), params=params, metrics=metrics)


def records_from_exp_show(payload: list[dict[str, Any]]) -> list[Record]:
    """Flatten ``dvc exp show --json`` output into records (workspace, commits, experiments)."""
    if not isinstance(payload, list):
        raise M3SAError("dvc exp show --json: expected a list of revisions")
    records: list[Record] = []
    try:
        for entry in payload:
            if entry.get("error"):
                continue
            rev = str(entry.get("rev", ""))
            records.append(_record(entry, entry.get("name") or (rev if rev == "workspace" else rev[:7])))
            for exp in entry.get("experiments") or []:
                for sub in exp.get("revs") or []:
                    if not sub.get("error"):
                        records.append(_record(sub, sub.get("name") or exp.get("name") or str(sub.get("rev", ""))[:7]))
    except (AttributeError, TypeError) as err:
        raise M3SAError(f"dvc exp show --json: an entry has an unexpected shape ({err})") from None
    return records


def select(records: Iterable[Record], names: list[str]) -> list[Record]:
    """Keep the records named in ``names`` (by name or revision prefix), in that order."""
    records = list(records)
    if not names:
        return records
    chosen = []
    for wanted in names:
        hits = [r for r in records if r.name == wanted or (len(wanted) >= 4 and r.rev.startswith(wanted))]
        if not hits:
            known = ", ".join(sorted({r.name for r in records}))
            raise M3SAError(f"no experiment or commit named '{wanted}'; known: {known}")
        chosen.append(hits[0])
    return chosen


def differing_params(records: list[Record]) -> list[str]:
    """Parameter keys whose value is not the same in every record."""
    keys = sorted({k for r in records for k in r.params})
    return [k for k in keys if len({repr(r.params.get(k)) for r in records}) > 1]


def best_indices(values: list[float | None], metric: str) -> set[int]:
    """Indices of the best value (lowest MAE, highest otherwise; all of them on a tie);
    empty when fewer than two values or all equal (nothing to choose)."""
    scored = {i: float(v) for i, v in enumerate(values) if isinstance(v, (int, float))}
    if len(scored) < 2 or len(set(scored.values())) == 1:
        return set()
    best = min(scored.values()) if metric in LOWER_IS_BETTER else max(scored.values())
    return {i for i, v in scored.items() if v == best}


def comparison_table(records: list[Record], split: str = "test", metrics: tuple[str, ...] = METRIC_KEYS) -> str:
    """Markdown table: differing params, then ``mean ± std`` per metric, best marked **bold**."""
    if not records:
        raise M3SAError("nothing to compare: no experiments or commits found")
    params = differing_params(records)
    present = [m for m in metrics if any(m in r.metrics.get(split, {}).get("mean", {}) for r in records)]
    header = ["experiment", *params, *present]
    rows = [[r.name, *[str(r.params.get(p, "")) for p in params]] for r in records]
    for metric in present:
        means = [r.metrics.get(split, {}).get("mean", {}).get(metric) for r in records]
        stds = [r.metrics.get(split, {}).get("std", {}).get(metric) for r in records]
        best = best_indices(means, metric)
        for i, (mean, std) in enumerate(zip(means, stds)):
            cell = "-" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
            rows[i].append(f"**{cell}**" if i in best else cell)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    note = f"\n\n{split} metrics, mean ± std over seeds; best per metric in bold (MAE: lowest, others: highest)."
    return "\n".join(lines) + note


def paired_table(reference: str, rows: list[RowComparison], seed_metrics: tuple[str, ...] = SEED_METRICS,
                 segment_metrics: tuple[str, ...] = SEGMENT_METRICS, segments: str = "test segments",
                 row_header: str = "experiment") -> str:
    """Markdown: per row and metric the paired t over seeds (with the unpaired Welch t beside
    it) and the paired bootstrap over ``segments``, each against ``reference``."""
    header = [row_header, "metric", "test", "n", f"difference vs {reference}", "95 % CI", "p", "p (Holm)",
              "verdict", "unpaired (Welch): 95 % CI, p (Holm)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        plan = [(m, PAIRED) for m in seed_metrics] + [(m, BOOTSTRAP) for m in segment_metrics]
        for metric, method in plan:
            d = row.cells.get((metric, method))
            if d is None:
                continue
            test = method if method == PAIRED else f"{BOOTSTRAP} ({segments})"
            cells = [row.name, METRIC_LABELS.get(metric, metric), test]
            if d.ok:
                cells += [str(d.n), f"{d.diff:+.3f}", f"{d.low:+.3f} to {d.high:+.3f}", fmt_p(d.p), fmt_p(d.p_holm),
                          d.verdict if d.verdict == NO_DIFFERENCE else f"**{d.verdict}**"]
            else:
                cells += ["–", f"cannot compare: {d.reason}", "–", "–", "–", "–"]
            w = row.cells.get((metric, WELCH)) if method == PAIRED else None
            cells.append("–" if w is None else (f"{w.low:+.3f} to {w.high:+.3f}, p {fmt_p(w.p_holm)}" if w.ok
                                                else "cannot compare"))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + METHOD_NOTE


def verdict_lines(reference: str, rows: list[RowComparison]) -> list[str]:
    """One Markdown bullet per row: each metric's verdict (with its direction) by each test
    that could run, and the Holm family it was corrected in."""
    out = []
    for row in rows:
        parts, families = [], {}
        for metric in dict.fromkeys(m for m, _ in row.cells):
            by_verdict: dict[str, list[str]] = {}
            for (m, method), d in row.cells.items():
                if m == metric and method != WELCH and d.ok:
                    by_verdict.setdefault(d.verdict, []).append(method)
                    families[method] = max(families.get(method, 0), d.family)
            if by_verdict:
                direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
                parts.append(f"{METRIC_LABELS.get(metric, metric)} ({direction}): " + ", ".join(
                    f"{v} ({', '.join(methods)})" for v, methods in by_verdict.items()))
        if parts:
            sizes = set(families.values())
            holm = (f"Holm over {sizes.pop()} rows" if len(sizes) == 1 else "Holm over "
                    + ", ".join(f"{n} rows ({method})" for method, n in families.items()))
            out.append(f"- {row.name} against {reference} ({holm}): " + "; ".join(parts))
        else:
            out.append(f"- {row.name} against {reference}: nothing could be compared (see the table)")
    return out
