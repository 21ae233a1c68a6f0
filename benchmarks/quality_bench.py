"""Quality over seeds: M3SA's recipes, ablations and baselines on one feature set, same budget.

    python benchmarks/quality_bench.py --features DIR [--systems m3sa text_only paper ...]
                                       [--seeds 0 1 2 3 4] [--set key=value ...]
                                       [--json out.json ...] [--out docs/benchmarks-quality.md] [--report-only]
                                       [--against m3sa ...]

Every system trains with params.yaml plus its own overrides (below) and the ``--set`` ones,
on the train split, each seed selected on the valid split only (``train.select_metric``), and
is scored on the valid split at its selected epoch: mean, std and worst seed of MAE and
Corr, non0 Acc2, the mean valid filter value per modality, and the seeds the collapse check
(m3sa.collapse) flags. ``--json`` keeps every seed's result and is read back on a rerun, so
an interrupted run continues where it stopped. When the features carry planted ground truth
(the embedded ``default`` data: ``gt_<modality>`` in valid.parquet) the filter values are also
split by informative and noise segments, with the AUC between them.

Goals checked (issue "M3SA that never collapses"): every seed's valid Corr >= 0.6; default
M3SA's mean MAE at most text_only's + 0.01; mean visual filter <= 0.2, language >= 0.8.

Paired comparisons (m3sa.significance) of every other system against each ``--against``
system (default m3sa): a paired t over the seeds both ran on valid MAE, Corr and Acc2
(non0), with the unpaired Welch t beside it, and a paired bootstrap over the valid segments
of the MAE and Acc2 differences (each seed's ``valid_predictions``, averaged over seeds),
Holm over the table's rows, a verdict per metric. ``--report-only`` renders all of it from
the JSON; several ``--json`` files (e.g. written by two processes) are merged for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3sa.compare import paired_table, verdict_lines  # noqa: E402
from m3sa.config import load_params  # noqa: E402
from m3sa.significance import NotComparable, SystemResults, compare_to_reference, segment_predictions  # noqa: E402
from m3sa.training import Runtime, load_training_data, torch_settings, train  # noqa: E402

#: name -> (label, overrides on top of params.yaml)
SYSTEMS: dict[str, tuple[str, list[str]]] = {
    "m3sa": ("M3SA (default recipe)", []),
    "text_only": ("Text only", ["model.name=text_only"]),
    "paper": ("M3SA (paper recipe, eq. 14-21 as written)", ["model.recipe=paper"]),
    "late_fusion": ("Late fusion", ["model.name=late_fusion"]),
    "wo_ml": ("M3SA W/O ML", ["model.modulation=false"]),
    "wo_mfm": ("M3SA W/O MFM", ["model.filter=none"]),
    "wo_be": ("M3SA W/O BE", ["model.baseline_embedding=false"]),
}
MIN_CORR = 0.6
MAE_MARGIN = 0.01


def per_segment_filters(models_dir: Path, cfg, data, features: Path, seed: int) -> dict[str, Any]:
    """Valid filter values of the selected checkpoint by planted ground truth (gt_<m>), with AUC."""
    from sklearn.metrics import roc_auc_score

    from m3sa.checkpoint import load_model
    from m3sa.evaluation import predict

    valid = pq.read_table(features / "valid.parquet")
    gts = {c[3:]: np.array([bool(x) if x is not None else False for x in valid.column(c).to_pylist()])
           for c in valid.column_names if c.startswith("gt_") and valid.column(c).null_count < len(valid)}
    if not gts:
        return {}
    model, _, _ = load_model(models_dir / f"seed_{seed}" / "best.pt", torch.device("cpu"))
    preds = predict(model, data.valid, cfg.evaluate.batch_size, torch.device("cpu"))
    out = {}
    for m, gt in gts.items():
        if m not in preds.filter_values:
            continue
        v, truth = preds.filter_values[m], gt.astype(bool)
        row = {"informative": float(v[truth].mean()) if truth.any() else None,
               "noise": float(v[~truth].mean()) if (~truth).any() else None}
        if truth.any() and (~truth).any():
            row["auc"] = float(roc_auc_score(truth, v))
        out[m] = row
    return out


def valid_predictions(models_dir: Path, cfg, data, seed: int) -> dict[str, Any]:
    """The selected checkpoint's prediction per valid segment ({segment_id: pred}), for paired
    per-segment comparisons between systems (m3sa.significance)."""
    from m3sa.checkpoint import load_model
    from m3sa.evaluation import predict

    model, _, _ = load_model(models_dir / f"seed_{seed}" / "best.pt", torch.device("cpu"))
    preds = predict(model, data.valid, cfg.evaluate.batch_size, torch.device("cpu"))
    return {"segment_id": list(data.valid.segment_ids), "label": [float(v) for v in data.valid.labels.numpy()],
            "pred": [float(v) for v in preds.pred]}


def run_system(name: str, seeds: list[int], extra: list[str], features: Path, workdir: Path, data_cache: dict,
               results: dict, save) -> None:
    cfg = load_params(ROOT / "params.yaml", [f"data.features_dir={features}", *SYSTEMS[name][1], *extra])
    key = cfg.model.text_encoder, cfg.model.max_tokens
    for seed in seeds:
        if str(seed) in results.setdefault(name, {}):
            continue
        if key not in data_cache:
            data_cache[key] = load_training_data(cfg)
        data = data_cache[key]
        out = workdir / name
        t0 = time.perf_counter()
        r = train(cfg, features, out / "models", out / "live", seed, data=data, runtime=Runtime(torch.device("cpu")))
        row = {"valid": r["best_valid_metrics"], "filter": r["best_filter"], "collapsed": r["collapsed"],
               "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"], "wall_s": time.perf_counter() - t0,
               "curve": r["curve"]}
        row["valid_predictions"] = valid_predictions(out / "models", cfg, data, seed)
        try:
            row["segments"] = per_segment_filters(out / "models", cfg, data, features, seed)
        except Exception as err:  # the per-segment split is an extra; never lose the seed's result
            row["segments_error"] = f"{type(err).__name__}: {err}"
        results[name][str(seed)] = row
        save()
        print(f"{name} seed {seed}: valid MAE {row['valid']['mae']:.4f} Corr {row['valid']['corr']:.3f} "
              f"epoch {row['best_epoch']}/{row['epochs_run']} filters "
              + " ".join(f"{m} {v:.3f}" for m, v in row["filter"].items())
              + (f" COLLAPSED: {row['collapsed']}" if row["collapsed"] else "") + f" ({row['wall_s']:.0f} s)",
              flush=True)


def stats(vals: list[float], worst: str) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    w = max(vals) if worst == "max" else min(vals)
    return f"{statistics.mean(vals):.3f} ± {sd:.3f} (worst {w:.3f})"


def table(results: dict, names: list[str]) -> list[str]:
    lines = ["| system | seeds | valid MAE | valid Corr | non0 Acc2 | collapsed | mean filter (L / A / V) |",
             "|---|---|---|---|---|---|---|"]
    for name in names:
        rows = list(results.get(name, {}).values())
        if not rows:
            continue
        mae = [r["valid"]["mae"] for r in rows]
        corr = [r["valid"]["corr"] for r in rows]
        acc = [r["valid"].get("acc2_non0", float("nan")) for r in rows]
        coll = sum(1 for r in rows if r["collapsed"])
        filt = "—"
        if rows[0]["filter"]:
            filt = " / ".join(f"{np.mean([r['filter'][m] for r in rows]):.3f}" for m in rows[0]["filter"])
        lines.append(f"| {SYSTEMS[name][0]} | {len(rows)} | {stats(mae, 'max')} | {stats(corr, 'min')} | "
                     f"{100 * np.mean(acc):.1f} | {coll} | {filt} |")
    return lines


def segment_table(results: dict, names: list[str]) -> list[str]:
    lines = ["| system | modality | filter on informative segments | on noise segments | AUC |", "|---|---|---|---|---|"]
    found = False
    for name in names:
        rows = [r for r in results.get(name, {}).values() if r.get("segments")]
        for m in (rows[0]["segments"] if rows else {}):
            found = True
            inf = [r["segments"][m]["informative"] for r in rows if r["segments"][m]["informative"] is not None]
            noi = [r["segments"][m]["noise"] for r in rows if r["segments"][m]["noise"] is not None]
            auc = [r["segments"][m]["auc"] for r in rows if "auc" in r["segments"][m]]
            fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}" if v else "—"  # noqa: E731
            lines.append(f"| {SYSTEMS[name][0]} | {m} | {fmt(inf)} | {fmt(noi)} | {fmt(auc)} |")
    return lines if found else []


def verdict(results: dict) -> list[str]:
    out = []
    all_rows = [(n, s, r) for n in ("m3sa",) for s, r in results.get(n, {}).items()]
    if not all_rows:
        return out
    worst = min(r["valid"]["corr"] for _, _, r in all_rows)
    coll = [s for _, s, r in all_rows if r["collapsed"]]
    out.append(f"- every default-M3SA seed's valid Corr >= {MIN_CORR}: **{'holds' if worst >= MIN_CORR else 'does not hold'}** "
               f"(worst {worst:.3f}; collapsed seeds: {', '.join(coll) or 'none'})")
    if results.get("text_only"):
        m = np.mean([r["valid"]["mae"] for r in results["m3sa"].values()])
        t = np.mean([r["valid"]["mae"] for r in results["text_only"].values()])
        out.append(f"- mean valid MAE of default M3SA ({m:.4f}) <= text only's ({t:.4f}) + {MAE_MARGIN}: "
                   f"**{'holds' if m <= t + MAE_MARGIN else 'does not hold'}** (difference {m - t:+.4f})")
    f = {k: np.mean([r["filter"][k] for r in results["m3sa"].values()]) for k in next(iter(results["m3sa"].values()))["filter"]}
    if "visual" in f and "language" in f:
        ok = f["visual"] <= 0.2 and f["language"] >= 0.8
        out.append(f"- mean visual filter <= 0.2 and language >= 0.8: **{'holds' if ok else 'does not hold'}** "
                   f"(visual {f['visual']:.3f}, language {f['language']:.3f})")
    return out


def system_results(name: str, rows: dict[str, Any]) -> SystemResults:
    """One system's per-seed valid metrics and per-segment valid predictions from the JSON."""
    per_seed = {seed: row["valid"] for seed, row in rows.items()}
    fields: dict[str, Any] = {}
    preds = {seed: row.get("valid_predictions") for seed, row in rows.items()}
    lacking = sorted(seed for seed, p in preds.items() if not p)
    if lacking:
        fields["segments_missing"] = (f"no valid_predictions for seed{'s' if len(lacking) > 1 else ''} "
                                      f"{', '.join(lacking)} (a run before they were recorded: re-run it)")
    else:
        try:
            fields["segments"] = segment_predictions(
                [i for p in preds.values() for i in p["segment_id"]],
                [seed for seed, p in preds.items() for _ in p["segment_id"]],
                [y for p in preds.values() for y in p["label"]], [v for p in preds.values() for v in p["pred"]])
        except NotComparable as err:
            fields["segments_missing"] = str(err)
    return SystemResults(SYSTEMS[name][0], per_seed, **fields)


def paired_sections(results: dict, names: list[str], against: list[str]) -> list[str]:
    """A paired-comparison table (and one verdict line per system) against each reference."""
    lines: list[str] = []
    for ref in against:
        others = [n for n in names if n != ref and results.get(n)]
        if not results.get(ref):
            lines += [f"Paired comparisons against {SYSTEMS[ref][0]}: the JSON holds no seed of it.", ""]
            continue
        if not others:
            continue
        rows = compare_to_reference(system_results(ref, results[ref]), [system_results(n, results[n]) for n in others])
        label = SYSTEMS[ref][0]
        lines += [f"Paired comparisons against {label} (valid split):", "",
                  paired_table(label, rows, segments="valid segments", row_header="system"), "",
                  *verdict_lines(label, rows), ""]
    return lines


def load_results(paths: list[str]) -> dict:
    """Merge the per-seed results of several ``--json`` files (missing files are empty);
    a system's seed in two files must hold the same result."""
    merged: dict = {}
    for path in paths:
        p = Path(path)
        if not p.exists():
            continue
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"error: {p}: not a results JSON ({err})") from None
        for name, seeds in data.items():
            for seed, row in seeds.items():
                have = merged.setdefault(name, {}).get(seed)
                if have is not None and have != row:
                    raise SystemExit(f"error: {name} seed {seed} is in two --json files with different results")
                merged[name][seed] = row
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", help="features folder (train/valid.parquet + meta.json); with --report-only "
                    "only its meta.json is read, and it may be left out")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="params override for every system")
    ap.add_argument("--workdir", help="checkpoints go here (default: a temp folder)")
    ap.add_argument("--json", action="append", default=[],
                    help="per-seed results (read back on a rerun: finished seeds are skipped); repeat to merge "
                         "several files (with --report-only)")
    ap.add_argument("--against", nargs="+", default=["m3sa"], choices=list(SYSTEMS),
                    help="reference system(s) of the paired comparisons (default: m3sa)")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--title", default="the given features")
    ap.add_argument("--report-only", action="store_true", help="train nothing: render what --json holds")
    args = ap.parse_args(argv)
    if not args.features and not args.report_only:
        ap.error("--features is required to train (only --report-only renders without it)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    features = Path(args.features) if args.features else None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m3sa-quality-"))
    if len(args.json) > 1 and not args.report_only:
        ap.error("several --json files are merged for --report-only; a training run writes one")
    results: dict = load_results(args.json)

    def save() -> None:
        if args.json:
            Path(args.json[0]).write_text(json.dumps(results, indent=1))

    cache: dict = {}
    threads = int(os.environ.get("M3SA_BENCH_THREADS", "0"))
    with torch_settings(threads, deterministic=True):
        for name in [] if args.report_only else args.systems:
            run_system(name, args.seeds, args.overrides, features, workdir, cache, results, save)
    meta_path = features / "meta.json" if features else None
    if meta_path and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        data = (f"Data: {meta.get('counts', meta.get('n_segments', ''))}; "
                f"modalities {', '.join(meta.get('modalities', []))}. ")
    else:
        data = "Data: no features meta.json given. "
    lines = [f"## Quality over seeds on {args.title} ({time.strftime('%Y-%m-%d')})", "",
             "Command: `python benchmarks/quality_bench.py" + (f" --features {features}" if features else "")
             + f" --systems {' '.join(args.systems)} "
             f"--seeds {' '.join(map(str, args.seeds))}" + "".join(f" --set {o}" for o in args.overrides)
             + "".join(f" --json {j}" for j in args.json) + f" --against {' '.join(args.against)}"
             + (" --report-only` (rendered from the seeds the JSON holds)" if args.report_only else "`"), "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, CPU only. "
             + data + "Every system: params.yaml plus its overrides, the same epochs, schedule and early stopping, "
             "selection on the valid split; valid metrics at the selected epoch.", "",
             *table(results, args.systems), ""]
    seg = segment_table(results, args.systems)
    if seg:
        lines += ["Valid filter values by planted ground truth (mean ± std over seeds):", "", *seg, ""]
    lines += verdict(results)
    lines += ["", *paired_sections(results, [n for n in args.systems if n in SYSTEMS], args.against)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
