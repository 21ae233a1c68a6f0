"""Whether a difference between two systems is real: paired tests over seeds and segments.

A candidate system is compared with a reference trained on the same seeds; every
difference is ``candidate - reference``.

- Paired t over seeds: d_s = candidate_s - reference_s on each seed both ran. Mean, 95 %
  CI mean ± t(0.975, n-1) · sd(d) / √n (Student t, n = shared seeds), p from
  ``scipy.stats.ttest_rel``. Needs 3 shared seeds (2 leave one degree of freedom).
- Welch t (unpaired) on the same seeds' values, for contrast: it ignores that seed s of
  both systems shares its data order and initialisation, so an effect shared per seed
  widens its interval instead of cancelling.
- Paired bootstrap over test segments: each system's prediction per segment is averaged
  over its seeds first, then the segments are resampled with replacement, the same
  resample for both systems; percentile 95 % CI of the MAE and Acc2 (non0: labels ≠ 0,
  positive = > 0, as m3sa.metrics) differences, p = twice the smaller share of resampled
  differences on one side of 0 ((k + 1) / (R + 1) form).
- Holm's step-down correction over a table's rows against its reference, per metric and
  method; the verdict reads the Holm-adjusted p at 5 %: "better" / "worse" (MAE lower is
  better, the others higher) or "no difference detected at 95 %". Intervals are not adjusted.

What cannot be compared (too few seeds, other segments, other labels, no predictions) is a
:class:`NotComparable` with one line, or a :class:`Difference` carrying that line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from m3sa.errors import M3SAError

LOWER_IS_BETTER = frozenset({"mae"})
SEED_METRICS = ("mae", "corr", "acc2_non0")  # paired t over seeds
SEGMENT_METRICS = ("mae", "acc2_non0")  # paired bootstrap over segments
PAIRED, WELCH, BOOTSTRAP = "paired t", "Welch t", "bootstrap"
MIN_SEEDS = 3
LEVEL = 0.95
N_RESAMPLES = 10_000
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no difference detected at 95 %"
_BLOCK = 2_000  # resamples per block: bounds memory at block x segments weights


class NotComparable(M3SAError):
    """Two systems' results cannot be compared this way; the message says why."""


@dataclass(frozen=True)
class Difference:
    """``candidate - reference`` of one metric by one method (``PAIRED``, ``WELCH``, ``BOOTSTRAP``).

    ``n``: shared seeds (t tests) or segments (bootstrap). ``p_holm``, ``family`` and
    ``verdict`` are filled by :func:`apply_holm`. ``reason`` (one line) is set instead of
    the numbers when the comparison cannot be made.
    """

    metric: str
    method: str
    n: int = 0
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    family: int = 0
    verdict: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def cell(self, scale: float = 1.0, digits: int = 3) -> str:
        """``"+0.017 [+0.005, +0.029], p 0.012 (Holm): worse"`` or the reason."""
        if not self.ok:
            return f"cannot compare: {self.reason}"
        d, lo, hi = (f"{v * scale:+.{digits}f}" for v in (self.diff, self.low, self.high))
        return f"{d} [{lo}, {hi}], p {fmt_p(self.p_holm)} (Holm): {self.verdict}"


def fmt_p(p: float) -> str:
    """``0.0123 -> "0.012"``, below 0.001 ``"<0.001"``, NaN ``"–"``."""
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# ----------------------------------------------------------------------------- over seeds

def shared_values(candidate: Mapping[Any, float],
                  reference: Mapping[Any, float]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The seeds both hold (keys compared as strings, sorted) and their values, candidate then reference."""
    cand = {str(k): v for k, v in candidate.items()}
    ref = {str(k): v for k, v in reference.items()}
    seeds = sorted(set(cand) & set(ref), key=lambda s: (len(s), s))
    c = np.array([float(cand[s]) for s in seeds], dtype=np.float64)
    r = np.array([float(ref[s]) for s in seeds], dtype=np.float64)
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise NotComparable("a per-seed value is NaN or infinite")
    return seeds, c, r


def _need_seeds(seeds: list[Any]) -> None:
    if len(seeds) < MIN_SEEDS:
        have = f" ({', '.join(seeds)})" if seeds else ""
        raise NotComparable(f"{len(seeds)} shared seed{'s' if len(seeds) != 1 else ''}{have}; the t test over seeds "
                            f"needs {MIN_SEEDS} (the per-segment bootstrap does not)")


def paired_t(metric: str, candidate: Mapping[Any, float], reference: Mapping[Any, float],
             level: float = LEVEL) -> Difference:
    """Paired Student t over the shared seeds. Differences without spread give p 1 (all 0)
    or 0 (all the same non-zero value: the t statistic is infinite)."""
    seeds, c, r = shared_values(candidate, reference)
    _need_seeds(seeds)
    d = c - r  # (n,)
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return Difference(metric, PAIRED, n, mean, mean, mean, 1.0 if mean == 0.0 else 0.0)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(c, r).pvalue)
    return Difference(metric, PAIRED, n, mean, mean - half, mean + half, p)


def welch_t(metric: str, candidate: Mapping[Any, float], reference: Mapping[Any, float],
            level: float = LEVEL) -> Difference:
    """Unpaired Welch t on the same shared seeds (Welch-Satterthwaite degrees of freedom)."""
    seeds, c, r = shared_values(candidate, reference)
    _need_seeds(seeds)
    vc, vr = c.var(ddof=1) / c.size, r.var(ddof=1) / r.size
    mean = float(c.mean() - r.mean())
    se = math.sqrt(vc + vr)
    if se == 0.0:
        return Difference(metric, WELCH, len(seeds), mean, mean, mean, 1.0 if mean == 0.0 else 0.0)
    df = (vc + vr) ** 2 / (vc ** 2 / (c.size - 1) + vr ** 2 / (r.size - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(stats.ttest_ind(c, r, equal_var=False).pvalue)
    return Difference(metric, WELCH, len(seeds), mean, mean - half, mean + half, p)


def seed_values(per_seed: Optional[Mapping[Any, Mapping[str, Any]]], metric: str) -> dict[str, float]:
    """``{seed: value}`` of one metric from ``{seed: {metric: value}}`` (seeds lacking it left out)."""
    out = {}
    for seed, row in (per_seed or {}).items():
        value = row.get(metric) if isinstance(row, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(seed)] = float(value)
    return out


def per_seed_from_doc(doc: Optional[Mapping[str, Any]], seeds: Sequence[Any] = ()) -> dict[str, dict[str, float]]:
    """``{seed: metrics}`` from a metrics document's ``per_seed`` list (the shape of
    metrics/test.json). An entry is labelled by its ``seed`` key, else by ``seeds`` (the
    run's seeds in order) when the counts agree; anything else is not comparable."""
    entries = (doc or {}).get("per_seed")
    if not isinstance(entries, list) or not entries:
        raise NotComparable("no per-seed metrics stored")
    if not all(isinstance(e, Mapping) for e in entries):
        raise NotComparable("a per-seed entry is not a mapping")
    if all("seed" in e for e in entries):
        labels = [str(e["seed"]) for e in entries]
    elif len(seeds) == len(entries):
        labels = [str(s) for s in seeds]
    else:
        raise NotComparable("the per-seed metrics carry no seed numbers")
    if len(set(labels)) != len(labels):
        raise NotComparable(f"a seed appears twice in the per-seed metrics ({', '.join(labels)})")
    return {s: {k: v for k, v in e.items() if k != "seed"} for s, e in zip(labels, entries)}


# ----------------------------------------------------------------------------- over segments

@dataclass(frozen=True, eq=False)
class SegmentPredictions:
    """Test predictions of one system: ``preds[i, j]`` is seed ``seeds[i]`` on segment
    ``segment_ids[j]`` (ids sorted), ``labels[j]`` its label."""

    segment_ids: tuple[str, ...]
    labels: np.ndarray  # (N,)
    seeds: tuple[str, ...]
    preds: np.ndarray  # (S, N)

    @property
    def mean_pred(self) -> np.ndarray:
        """(N,) each segment's prediction averaged over the seeds."""
        return self.preds.mean(axis=0)

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        """JSON-ready, predictions and labels to ``digits`` significant digits."""
        def r(x: np.ndarray) -> list[float]:
            return [float(f"{v:.{digits}g}") for v in x]

        return {"seeds": list(self.seeds), "segment_id": list(self.segment_ids), "label": r(self.labels),
                "pred": [r(row) for row in self.preds]}

    @classmethod
    def from_dict(cls, data: Any) -> "SegmentPredictions":
        """Inverse of :meth:`to_dict`, checked like :func:`segment_predictions`."""
        try:
            seeds, ids, labels, preds = (data[k] for k in ("seeds", "segment_id", "label", "pred"))
            if len(preds) != len(seeds) or any(len(row) != len(ids) for row in preds):
                raise NotComparable("stored predictions: one row of len(segment_id) values per seed expected")
            n = len(ids)
            return segment_predictions([i for _ in seeds for i in ids], [s for s in seeds for _ in range(n)],
                                       list(labels) * len(seeds), [v for row in preds for v in row])
        except (KeyError, TypeError, ValueError) as err:
            raise NotComparable(f"stored predictions have an unexpected shape ({err})") from None


def segment_predictions(segment_ids: Sequence[Any], seeds: Sequence[Any], labels: Sequence[float],
                        preds: Sequence[float]) -> SegmentPredictions:
    """Long rows (one per segment and seed, as plots/predictions.csv) -> :class:`SegmentPredictions`.

    Every seed must predict every segment exactly once, and a segment's label must be the
    same in every row; otherwise :class:`NotComparable`.
    """
    ids = np.asarray([str(s) for s in segment_ids])
    sd = np.asarray([str(s) for s in seeds])
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(preds, dtype=np.float64)
    if not (ids.size == sd.size == y.size == p.size):
        raise NotComparable(f"{ids.size} segment ids, {sd.size} seeds, {y.size} labels, {p.size} predictions")
    if ids.size == 0:
        raise NotComparable("no per-segment predictions")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise NotComparable("a label or prediction is NaN or infinite")
    uid, j = np.unique(ids, return_inverse=True)
    useed, i = np.unique(sd, return_inverse=True)
    useed_sorted = sorted(useed.tolist(), key=lambda s: (len(s), s))
    order = np.array([useed_sorted.index(s) for s in useed.tolist()])
    i = order[i]
    count = np.bincount(i * uid.size + j, minlength=useed.size * uid.size).reshape(useed.size, uid.size)
    if np.any(count > 1):
        s, k = np.argwhere(count > 1)[0]
        raise NotComparable(f"segment '{uid[k]}' appears {count[s, k]} times for seed {useed_sorted[s]}")
    if np.any(count == 0):
        s, k = np.argwhere(count == 0)[0]
        raise NotComparable(f"seed {useed_sorted[s]} has no prediction for {int((count[s] == 0).sum())} segments "
                            f"(e.g. '{uid[k]}')")
    pm = np.empty((useed.size, uid.size))
    lm = np.empty((useed.size, uid.size))
    pm[i, j], lm[i, j] = p, y
    bad = np.flatnonzero(np.any(lm != lm[0], axis=0))
    if bad.size:
        raise NotComparable(f"segment '{uid[bad[0]]}' has different labels in different seeds "
                            f"({', '.join(f'{v:g}' for v in np.unique(lm[:, bad[0]]))})")
    return SegmentPredictions(tuple(uid.tolist()), lm[0], tuple(useed_sorted), pm)


def aligned(candidate: SegmentPredictions, reference: SegmentPredictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, candidate mean prediction, reference mean prediction) on the same segments;
    :class:`NotComparable` when the segment sets or their labels differ."""
    if candidate.segment_ids != reference.segment_ids:
        a, b = set(candidate.segment_ids), set(reference.segment_ids)
        only_c, only_r = sorted(a - b), sorted(b - a)
        example = (only_c or only_r)[0] if (only_c or only_r) else None
        raise NotComparable(f"different test segment sets: {len(only_c)} segments only in the candidate, "
                            f"{len(only_r)} only in the reference" + (f" (e.g. '{example}')" if example else ""))
    differ = np.flatnonzero(candidate.labels != reference.labels)
    if differ.size:
        k = differ[0]
        raise NotComparable(f"different labels for the same segment: '{candidate.segment_ids[k]}' is "
                            f"{candidate.labels[k]:g} in the candidate and {reference.labels[k]:g} in the reference "
                            f"({differ.size} segments differ)")
    return reference.labels, candidate.mean_pred, reference.mean_pred


def _segment_scores(y: np.ndarray, pc: np.ndarray, pr: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric: (per-segment numerator difference, per-segment denominator weight)."""
    nz = (y != 0).astype(np.float64)  # (N,) non0 convention
    right_c = ((pc > 0) == (y > 0)).astype(np.float64)
    right_r = ((pr > 0) == (y > 0)).astype(np.float64)
    return {"mae": (np.abs(pc - y) - np.abs(pr - y), np.ones_like(y)),
            "acc2_non0": ((right_c - right_r) * nz, nz)}


def resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> Iterable[np.ndarray]:
    """Blocks of bootstrap weights: row b holds how often each of the ``n`` items is drawn
    in resample b (a multinomial(n, 1/n) draw made from an index matrix with bincount)."""
    done = 0
    while done < n_resamples:
        b = min(_BLOCK, n_resamples - done)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) drawn segment indices
        flat = (idx + n * np.arange(b)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)  # (b, n)
        done += b


def paired_bootstrap(candidate: Optional[SegmentPredictions], reference: Optional[SegmentPredictions],
                     metrics: Sequence[str] = SEGMENT_METRICS, n_resamples: int = N_RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict[str, Difference]:
    """Paired percentile bootstrap of the MAE and Acc2 (non0) differences over segments."""
    if candidate is None or reference is None:
        raise NotComparable("no per-segment predictions for the " + ("candidate" if candidate is None else "reference"))
    unknown = sorted(set(metrics) - {"mae", "acc2_non0"})
    if unknown:
        raise ValueError(f"the segment bootstrap knows mae and acc2_non0, not {unknown}")
    y, pc, pr = aligned(candidate, reference)
    scores = {m: _segment_scores(y, pc, pr)[m] for m in metrics}
    out = {}
    for m, (num, den) in scores.items():
        if den.sum() == 0:
            out[m] = Difference(m, BOOTSTRAP, y.size, reason="no segment with a non-zero label")
    live = [m for m in metrics if m not in out]
    if not live:
        return out
    values = np.stack([v for m in live for v in scores[m]], axis=1)  # (N, 2 * metrics): numerator, weight
    rng = np.random.default_rng(seed)
    sums = np.concatenate([w @ values for w in resample_counts(y.size, n_resamples, rng)])  # (R, 2 * metrics)
    tail = (1 - level) / 2
    for k, m in enumerate(live):
        num, den = scores[m]
        observed = float(num.sum() / den.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = sums[:, 2 * k] / sums[:, 2 * k + 1]  # (R,)
        boot = boot[np.isfinite(boot)]
        low, high = np.quantile(boot, [tail, 1 - tail])
        below, above = int((boot <= 0).sum()), int((boot >= 0).sum())
        p = min(1.0, 2 * (min(below, above) + 1) / (boot.size + 1))
        out[m] = Difference(m, BOOTSTRAP, int(den.sum()), observed, float(low), float(high), p)
    return {m: out[m] for m in metrics}


# ----------------------------------------------------------------------------- tables

def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m:
        order = finite[np.argsort(p[finite], kind="stable")]
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
        out[order] = adjusted
    return out.tolist()


def verdict(metric: str, diff: float, p_adjusted: float, alpha: float = 1 - LEVEL) -> str:
    """"better" / "worse" for the candidate when the adjusted p is below ``alpha``, else no difference."""
    if not (math.isfinite(p_adjusted) and p_adjusted < alpha) or diff == 0:
        return NO_DIFFERENCE
    lower = metric in LOWER_IS_BETTER
    return BETTER if (diff < 0) == lower else WORSE


def apply_holm(differences: Sequence[Difference], alpha: float = 1 - LEVEL) -> list[Difference]:
    """One family (one metric and method over a table's rows): Holm-adjusted p and verdicts."""
    adjusted = holm([d.p if d.ok else math.nan for d in differences])
    family = sum(d.ok for d in differences)
    return [dataclasses.replace(d, p_holm=a, family=family, verdict=verdict(d.metric, d.diff, a, alpha)) if d.ok else d
            for d, a in zip(differences, adjusted)]


@dataclass(frozen=True, eq=False)
class SystemResults:
    """What a system brings to a comparison: per-seed metrics ``{seed: {metric: value}}``
    and per-segment predictions, each None with a one-line ``*_missing`` reason."""

    name: str
    per_seed: Optional[dict[str, dict[str, float]]] = None
    segments: Optional[SegmentPredictions] = None
    per_seed_missing: str = "no per-seed metrics"
    segments_missing: str = "no per-segment predictions"


@dataclass(frozen=True)
class RowComparison:
    """One table row against the reference: ``cells[(metric, method)]``."""

    name: str
    cells: dict[tuple[str, str], Difference]


def _guarded(method: str, fn, metric: str, candidate: dict[str, float], reference: dict[str, float]) -> Difference:
    try:
        return fn(metric, candidate, reference)
    except NotComparable as err:
        return Difference(metric, method, reason=str(err))


def _whose(row_lacks: bool, reference: SystemResults, why: str) -> str:
    """The reason a row cannot be compared, naming the reference when it is the one lacking."""
    return why if row_lacks else f"the reference ({reference.name}): {why}"


def _seed_cells(row: SystemResults, reference: SystemResults, metrics: Sequence[str]) -> dict[tuple[str, str], Difference]:
    cells: dict[tuple[str, str], Difference] = {}
    for metric in metrics:
        for method, fn in ((PAIRED, paired_t), (WELCH, welch_t)):
            if row.per_seed is None or reference.per_seed is None:
                lacks = row.per_seed is None
                why = _whose(lacks, reference, row.per_seed_missing if lacks else reference.per_seed_missing)
                cells[metric, method] = Difference(metric, method, reason=why)
            else:
                cells[metric, method] = _guarded(method, fn, metric, seed_values(row.per_seed, metric),
                                                 seed_values(reference.per_seed, metric))
    return cells


def _segment_cells(row: SystemResults, reference: SystemResults, metrics: Sequence[str], n_resamples: int,
                   seed: int) -> dict[tuple[str, str], Difference]:
    if row.segments is None or reference.segments is None:
        lacks = row.segments is None
        why = _whose(lacks, reference, row.segments_missing if lacks else reference.segments_missing)
        return {(m, BOOTSTRAP): Difference(m, BOOTSTRAP, reason=why) for m in metrics}
    try:
        boot = paired_bootstrap(row.segments, reference.segments, metrics, n_resamples, seed)
    except NotComparable as err:
        boot = {m: Difference(m, BOOTSTRAP, reason=str(err)) for m in metrics}
    return {(m, BOOTSTRAP): d for m, d in boot.items()}


def compare_to_reference(reference: SystemResults, rows: Sequence[SystemResults],
                         seed_metrics: Sequence[str] = SEED_METRICS, segment_metrics: Sequence[str] = SEGMENT_METRICS,
                         n_resamples: int = N_RESAMPLES, seed: int = 0, alpha: float = 1 - LEVEL) -> list[RowComparison]:
    """Every row against the reference: paired and Welch t per seed metric, the segment
    bootstrap per segment metric (the same resamples for every row), then Holm over the
    rows per (metric, method)."""
    raw = [{**_seed_cells(row, reference, seed_metrics),
            **(_segment_cells(row, reference, segment_metrics, n_resamples, seed) if segment_metrics else {})}
           for row in rows]
    for key in list(raw[0]) if raw else []:
        for cells, adjusted in zip(raw, apply_holm([c[key] for c in raw], alpha)):
            cells[key] = adjusted
    return [RowComparison(row.name, cells) for row, cells in zip(rows, raw)]


METHOD_NOTE = ("Difference = row − reference. Paired t: over the seeds both ran (Student t 95 % CI, n = seeds). "
               f"Welch t: unpaired, same seeds, for contrast. Bootstrap: {N_RESAMPLES:,} paired resamples of the "
               "segments, each system's prediction per segment averaged over its seeds first (percentile 95 % CI, n = "
               "segments scored; Acc2 non0: labels ≠ 0, positive = > 0). p is Holm-corrected over the rows of "
               "the table, per metric and test; the verdict is read from it at 5 % (MAE: lower is better; "
               "Corr, Acc2, F1: higher). Intervals are not adjusted.")
