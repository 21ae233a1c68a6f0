"""Assemble the run report from the pipeline outputs (the ``report`` stage's library half).

:func:`build_report` reads every input it can find (``RunInputs``), and builds a
:class:`~m3sa.report.document.Document`; a missing input turns its section into a
"not yet run" note instead of an error. :func:`write_report` writes Markdown, HTML and the
figures.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from m3sa.atomic import os_reason, write_atomic
from m3sa.config import MODALITIES, Config
from m3sa.deviations import DEVIATIONS
from m3sa.errors import OutputError
from m3sa.report import figures, provenance, published, tables
from m3sa.report.document import Document, Figure, Paragraph, Section, Table, Unavailable
from m3sa.report.experiments import (Experiment, fusion_label, is_ablation, is_full_model, is_fusion_variant,
                                     parse_experiments, resolve, system_label)
from m3sa.report.html import render_html
from m3sa.report.inputs import Input, RunInputs, RunPaths
from m3sa.report.markdown import render_markdown
from m3sa.report.stats import confusion_7class, filter_summary
from m3sa.significance import METHOD_NOTE, NotComparable, SegmentPredictions, compare_to_reference, segment_predictions

HOW_EVALUATE = "Produce it with `dvc repro evaluate` (or `python -m stages.evaluate`)."
HOW_TRAIN = "Produce it with `dvc repro train` (or `python -m stages.train`)."
HOW_EXTRACT = "Produce it with `dvc repro extract` (or `python -m stages.extract`)."
WO_MFM_NOTE = ("Without the filter module (W/O MFM) the paper's hard and soft rows are one model here "
               "(`model.filter=none`); a W/O MFM run matches both.")
HOW_EXPERIMENTS = ("Run the variants as parameter overrides, e.g. `dvc exp run -S model.modulation=false`, "
                   "`-S model.filter=none`, `-S model.baseline_embedding=false`, `-S model.fusion=concat`, "
                   "then gather them with `python -m stages.collect`.")


@dataclass(frozen=True)
class DatasetInfo:
    """Which data this run used and which published table it is compared with."""

    label: str  # short, for the "Data" column
    description: str  # one sentence for the summary
    paper: Optional[str]  # published.MOSI / published.MOSEI / None (unknown)


def describe_dataset(meta: Optional[dict[str, Any]], cfg: Config) -> DatasetInfo:
    """From ``meta.json`` (``source`` and its ``params`` data section), else params.yaml."""
    origin = "data/features/meta.json"
    if meta is None:
        data: dict[str, Any] = cfg.to_dict()["data"]
        source, origin = cfg.data.source, "params.yaml (features not extracted yet)"
    else:
        data = meta.get("params") if isinstance(meta.get("params"), dict) else {}
        source = str(meta.get("source", data.get("source", "unknown")))
    if source == "sample":
        size = data.get("sample_size", "?")
        paper = published.MOSEI if size == "mosei" else published.MOSI
        return DatasetInfo(f"embedded sample ({size})",
                           f"the embedded generated sample (`data.source=sample`, size `{size}`, per {origin}), "
                           f"{paper}-like in shape, with planted per-modality signal. It is not {paper}: its "
                           "numbers show the pipeline works, they are not comparable with the published ones.",
                           paper)
    if source == "csd":
        names = " ".join(str(v) for v in (data.get("files") or {}).values() if v) + " " + str(data.get("folds", ""))
        paper = published.MOSEI if "MOSEI" in names.upper() else published.MOSI if "MOSI" in names.upper() else None
        where = data.get("csd_dir", "?")
        return DatasetInfo(f"{paper or 'CSD files'} (csd)",
                           f"CMU-MultimodalSDK files from `{where}` (`data.source=csd`, per {origin}), "
                           f"recognised as {paper or 'an unknown dataset'}, folds `{data.get('folds', '?')}`.",
                           paper)
    if source in ("mmsa", "mag"):
        info = (meta or {}).get("pickle") or {}
        name = str(info.get("recognised", "pickle not extracted yet"))
        paper = published.MOSEI if "MOSEI" in name else published.MOSI if "MOSI" in name else None
        rows = f", rows: {info['rows_meaning']}" if info.get("rows_meaning") else ""
        return DatasetInfo(f"{name} ({source})",
                           f"the pickle `{data.get('pickle', '?')}` (`data.source={source}`, per {origin}): "
                           f"{name}{rows}. The text encoder reads its words; pre-computed text features in "
                           "it are not used.", paper)
    return DatasetInfo(str(source), f"data source `{source}` (per {origin}).", None)


def _unavailable(what: str, inp: Input, how: str) -> Unavailable:
    status = "Not yet run" if inp.status == "missing" else "Unreadable"
    return Unavailable(what, inp.reason + ".", how if inp.status == "missing" else "", status=status)


def _experiment_data_label(e: Experiment) -> str:
    source = e.params.get("data.source")
    if source == "sample":
        return f"embedded sample ({e.params.get('data.sample_size', '?')})"
    return str(source) if source else tables.DASH


def _same_run(a: Experiment, b: Experiment) -> bool:
    """Same model params and identical test means: one run listed twice (e.g. this run and
    the committed baseline that ``dvc exp show`` also lists)."""
    def model(e: Experiment) -> dict[str, Any]:
        return {k: v for k, v in e.params.items() if k.startswith("model.")}

    return model(a) == model(b) and a.test.get("mean") == b.test.get("mean")


def _runs_table(caption: str, entries: Sequence[tuple[Experiment, str, str]],
                is_reference: Callable[[dict[str, Any]], bool], reference_what: str, notes: Sequence[str]) -> Table:
    """Runs ``(experiment, label, data label)`` with the paired differences of every other row
    against the reference, moved to the top: of the rows ``is_reference`` accepts, the first
    with per-seed metrics and predictions, else with per-seed metrics, else the first."""
    def lacks(e: Experiment) -> tuple[bool, bool]:
        stored = e.results("")
        return stored.per_seed is None, stored.segments is None

    candidates = sorted((lacks(e), i) for i, (e, _, _) in enumerate(entries) if is_reference(e.params))
    at = candidates[0][1] if candidates else None
    if at is None:
        return tables.comparison_table(caption, [(label, data, e.test) for e, label, data in entries], None,
                                       [*notes, f"No {reference_what} run here, so no paired differences."])
    entries = [entries[at], *entries[:at], *entries[at + 1:]]
    results = [e.results(label) for e, label, _ in entries]
    rows = compare_to_reference(results[0], results[1:])
    note = (f"Δ columns: each row minus the reference, {entries[0][1]} (first row); accuracies in percentage "
            "points; test split. " + METHOD_NOTE)
    return tables.comparison_table(caption, [(label, data, e.test) for e, label, data in entries], rows,
                                   [*notes, note])


def _experiment_section(title: str, table_name: str, inputs: RunInputs, experiments: Sequence[Experiment],
                        this_run: Optional[Experiment], data: DatasetInfo, select: Callable[[dict[str, Any]], bool],
                        label: Callable[[dict[str, Any]], str], reference: Sequence[published.PublishedRow],
                        what: str, notes: Sequence[str] = ()) -> Section:
    """Paper Table 3 or 4: the experiments that ``select`` accepts (this run among them
    when it qualifies), the full model first and every other row paired against it, then
    the published rows apart; "not yet run" when there are none."""
    section = Section(title)
    exp_input = inputs.experiments
    notes = list(notes)
    chosen = [e for e in experiments if select(e.params)]
    if this_run is not None and select(this_run.params):
        chosen = [this_run] + [e for e in chosen if not _same_run(e, this_run)]
    if not exp_input.ok:
        section.blocks.append(_unavailable(what, exp_input, HOW_EXPERIMENTS))
    elif not any(e is not this_run for e in chosen):
        section.blocks.append(Unavailable(what, f"`{exp_input.path}` has no such experiment.", HOW_EXPERIMENTS))
    missing = [r.system for r in reference if not any(published.matching_rows((r,), e.params) for e in chosen)]
    if missing:
        notes.append("Not yet run: " + ", ".join(missing) + ".")
    entries = [(e, f"{label(e.params)} — {e.name}" + (f" @{e.rev[:7]}" if e.rev else ""),
                data.label if e is this_run else _experiment_data_label(e)) for e in chosen]
    if entries:
        section.blocks.append(_runs_table(f"{table_name}: this project's runs, each against the full model",
                                          entries, is_full_model, "full-model (soft filter, addition)", notes))
    section.blocks.append(tables.published_table(f"{table_name}: published ({reference[0].source})", reference))
    return section


def _run_seeds(inputs: RunInputs, cfg: Config) -> tuple[list[Any], str]:
    """The seeds this run's outputs hold, and where that was read."""
    per_seed = [e for e in (inputs.metric("test") or {}).get("per_seed") or [] if isinstance(e, dict)]
    if per_seed and all("seed" in e for e in per_seed):
        return [e["seed"] for e in per_seed], "metrics/test.json"
    if inputs.predictions.ok:
        return inputs.predictions.value["seed"].unique().tolist(), "predictions/test.parquet"  # written in run order
    return list(cfg.train.seeds), "params.yaml"


def _run_predictions(inputs: RunInputs) -> dict[str, Any]:
    """This run's test predictions for the paired comparisons, or why there are none."""
    if not inputs.predictions.ok:
        return {"predictions_missing": inputs.predictions.reason}
    df = inputs.predictions.value
    try:
        found: SegmentPredictions = segment_predictions(df["segment_id"].tolist(), df["seed"].tolist(),
                                                        df["label"].tolist(), df["pred"].tolist())
    except (KeyError, NotComparable) as err:
        return {"predictions_missing": f"`{inputs.predictions.path}`: {err}"}
    return {"predictions": found}


def _results_section(inputs: RunInputs, experiments: Sequence[Experiment], this_run: Optional[Experiment],
                     data: DatasetInfo, seeds: list[Any]) -> Section:
    section = Section("1. Results (paper Table 1 layout)")
    test, valid = inputs.metric("test"), inputs.metric("valid")
    entries = [(this_run, f"This run: {system_label(this_run.params)}", data.label)] if this_run else []
    entries += [(e, f"{system_label(e.params)} — {e.name}", _experiment_data_label(e))
                for e in experiments if e.params.get("model.name") != "m3sa"]
    reference = published.results_table(data.paper) if data.paper else published.TABLE1_MOSI + published.TABLE2_MOSEI
    if test is None:
        section.blocks.append(_unavailable("test metrics", inputs.metrics["test"], HOW_EVALUATE))
    if entries:
        section.blocks.append(_runs_table("Test results, each against text only", entries,
                                          lambda p: p.get("model.name") == "text_only", "text-only",
                                          [f"This run's data: {data.description}"]))
    sources = ", ".join(sorted({r.source for r in reference}))
    section.blocks.append(tables.published_table(f"Published results ({sources}), for the dataset in their "
                                                 "Dataset column", reference))
    docs = {name: doc for name, doc in (("valid", valid), ("test", test)) if doc}
    if docs:
        section.blocks.append(tables.metrics_table(docs))
    if test and test.get("per_seed"):
        section.blocks.append(tables.per_seed_table(test, seeds))
    return section


def _robustness_section(inputs: RunInputs, cfg: Config) -> Section:
    section = Section("4. Missing-modality robustness")
    inp = inputs.metrics["robustness"]
    if not inp.ok:
        section.blocks.append(_unavailable("robustness evaluation", inp, HOW_EVALUATE))
    elif not any(isinstance(v, dict) for v in inp.value.values()):
        status = "Not applicable" if not cfg.evaluate.robustness else "Not yet run"
        section.blocks.append(Unavailable("robustness evaluation", f"`{inp.path}` holds no dropped modality "
                                          f"(evaluate.robustness = {str(cfg.evaluate.robustness).lower()}).",
                                          status=status))
    else:
        section.blocks.append(tables.robustness_table(inputs.metric("test"), inp.value))
    return section


def _modalities(inputs: RunInputs) -> list[str]:
    meta = inputs.meta.value if inputs.meta.ok else {}
    listed = meta.get("modalities") if isinstance(meta.get("modalities"), list) else None
    return [str(m) for m in listed] if listed else list(MODALITIES)


def _recipe_blocks(cfg: Config) -> list[Any]:
    """The filter recipe of this run and the default recipe's deviations from eq. 14-21 (m3sa/deviations.py)."""
    if cfg.model.name != "m3sa" or cfg.model.filter == "none":
        return []
    m, t = cfg.model, cfg.train
    text = (f"Filter recipe: `model.recipe={m.recipe}` "
            + ("(eq. 14-21 exactly as written). " if m.recipe == "paper" else "(this project's recipe; "
               "`model.recipe=paper` is eq. 14-21 exactly as written). ")
            + f"In effect: soft_lambda {m.soft_lambda:g}, filter_shared {str(m.filter_shared).lower()}, "
            f"filter_init_keep {m.filter_init_keep:g}, penalty_weight {t.penalty_weight:g}, "
            f"sparsity_weight {t.sparsity_weight:g}. On real CMU-MOSI with a pure-noise visual stream the paper's "
            "form does not reproduce Figure 2: it keeps every modality fully open or collapses (docs/filter.md).")
    rows = [[d.key, d.paper, d.default, d.why] for d in DEVIATIONS]
    return [Paragraph(text), Table("Default recipe: deviations from the paper (docs/filter.md)",
                                   ["Knob", "Paper recipe", "Default recipe", "Measured"], rows)]


def _filter_section(inputs: RunInputs, cfg: Config) -> Section:
    section = Section("5. Modality filter (paper Figure 2)")
    section.blocks.extend(_recipe_blocks(cfg))
    preds = inputs.predictions
    if not preds.ok:
        section.blocks.append(_unavailable("filter values", preds, HOW_EVALUATE))
        return section
    mods = [m for m in _modalities(inputs) if f"filter_{m}" in preds.value.columns]
    summaries = [s for m in mods if (s := filter_summary(preds.value, m)) is not None]
    if not summaries:
        section.blocks.append(Unavailable("filter values", f"`{preds.path}` has no `filter_<modality>` column: this "
                                          f"run's model has no filter (model.name={cfg.model.name}, "
                                          f"model.filter={cfg.model.filter}).", status="Not applicable"))
        return section
    published_mean = published.FIGURE2_MEAN_MASK_MOSI
    section.blocks.append(Paragraph(
        f"This run's filter: `model.filter={cfg.model.filter}`. The soft filter's s is continuous (eq. 18, "
        f"lambda = {cfg.model.soft_lambda:g}); the hard filter's s is 0 or 1 at evaluation (eq. 21, u = 0.5), so its "
        "kept share is its keep rate. The published means are for M3SA (Soft) on CMU-MOSI (section 4.2.4)."))
    section.blocks.append(tables.filter_table(summaries, inputs.metric("masks"), published_mean))
    png = figures.filter_figure(preds.value, [s.modality for s in summaries], cfg.report.dpi, published_mean)
    section.blocks.append(Figure("filter_values", "Distribution of the filter value s per modality on test "
                                 "(all seeds), with planted ground truth when known; dashed: published mean.", png))
    return section


def _training_section(inputs: RunInputs, cfg: Config) -> Section:
    section = Section("6. Training curves")
    if inputs.curves.ok:
        n = len({name for per_seed in inputs.curves.value.values() for name in per_seed})
        shown = f" (the first {figures.MAX_CURVES} of {n} by name)" if n > figures.MAX_CURVES else ""
        section.blocks.append(Figure("training_curves", f"Metrics logged per epoch by dvclive{shown}, one line per "
                                     f"seed (`{inputs.curves.path}/seed_<s>/plots/metrics`).",
                                     figures.curves_figure(inputs.curves.value, cfg.report.dpi)))
    else:
        section.blocks.append(_unavailable("training curves", inputs.curves, HOW_TRAIN))
    train = inputs.metrics["train"]
    if train.ok:
        top = {k: v for k, v in train.value.items() if not isinstance(v, (dict, list))}
        if top:
            section.blocks.append(tables.key_value_table("Training summary (metrics/train.json)", top))
        per_seed = [e for e in train.value.get("per_seed") or [] if isinstance(e, dict)]
        collapsed = [e for e in per_seed if e.get("collapsed")]
        if collapsed:
            section.blocks.append(Paragraph(
                f"Collapsed seeds: {len(collapsed)} of {len(per_seed)}. At its selected epoch the fused "
                "prediction of these seeds is (close to) a constant, so their metrics say nothing about the "
                "method: " + "; ".join(f"seed {e.get('seed')}: {e['collapsed']}" for e in collapsed)
                + " (m3sa/collapse.py; docs/filter.md)."))
        elif per_seed and "collapsed" in per_seed[0]:
            section.blocks.append(Paragraph(f"No seed collapsed (the check of m3sa/collapse.py on the valid "
                                            f"predictions at each seed's selected epoch, {len(per_seed)} seeds)."))
        if per_seed:
            section.blocks.append(tables.scalar_records_table("Training per seed (metrics/train.json)", per_seed,
                                                              first=("seed",)))
    else:
        section.blocks.append(_unavailable("training summary", train, HOW_TRAIN))
    return section


def _predictions_section(inputs: RunInputs, cfg: Config) -> Section:
    section = Section("7. Test predictions")
    preds = inputs.predictions
    if not preds.ok:
        section.blocks.append(_unavailable("test predictions", preds, HOW_EVALUATE))
        return section
    df = preds.value
    section.blocks.append(Figure("pred_vs_true", f"Predicted vs true sentiment on test ({len(df)} predictions, "
                                 f"{df['seed'].nunique()} seeds).", figures.scatter_figure(df, cfg.report.dpi)))
    counts = confusion_7class(df["label"].to_numpy(), df["pred"].to_numpy())
    acc7 = counts.trace() / max(counts.sum(), 1)
    section.blocks.append(Figure("confusion_7class", "Confusion matrix of the 7 sentiment classes on test, pooled "
                                 f"over seeds (diagonal share = pooled Acc7 = {acc7:.1%}).",
                                 figures.confusion_figure(counts, cfg.report.dpi)))
    return section


def _data_section(inputs: RunInputs, data: DatasetInfo) -> Section:
    section = Section("8. Data")
    if not inputs.meta.ok:
        section.blocks.append(_unavailable("data summary", inputs.meta, HOW_EXTRACT))
        return section
    meta = inputs.meta.value
    section.blocks.append(Paragraph(
        f"Data: {data.description} Alignment: `{meta.get('align', '?')}`; planted ground truth available: "
        f"{'yes' if meta.get('has_ground_truth') else 'no'}."))
    section.blocks += tables.data_tables(meta)
    return section


def _provenance_section(inputs: RunInputs, cfg: Config, started_at: Optional[float]) -> Section:
    section = Section("9. Provenance")
    commit, dirty, n_changed = provenance.git_state(inputs.paths.root)
    device = provenance.find_device(inputs.metric("train"), inputs.metric("test")) or "not recorded"
    dirty_text = {None: "unknown", False: "no (clean)", True: f"yes ({n_changed} changed or untracked files)"}[dirty]
    section.blocks.append(tables.key_value_table("Run", {
        "git commit": commit, "uncommitted changes": dirty_text, "params digest (resolved params.yaml)": cfg.digest(),
        "device": device,
        "report generated (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}))
    if inputs.dvc_lock.ok:
        stages = provenance.lock_stages(inputs.dvc_lock.value)
        section.blocks.append(tables.scalar_records_table(
            "Pipeline stages as recorded in dvc.lock (digest = sha256 of the stage's lock entry)", stages))
    else:
        section.blocks.append(_unavailable("dvc.lock stage hashes", inputs.dvc_lock, "Run the pipeline with `dvc repro`."))
    recorded = {"extract": inputs.meta.value if inputs.meta.ok else None, "train": inputs.metric("train"),
                "evaluate": inputs.metric("test")}
    times = {stage: provenance.find_wall_time(doc) for stage, doc in recorded.items()}
    if started_at is not None:
        times["report (this stage, before writing files)"] = time.perf_counter() - started_at
    section.blocks.append(tables.key_value_table(
        "Wall time per stage (seconds)", {k: (f"{v:.1f}" if v is not None else "not recorded") for k, v in times.items()},
        header=("Stage", "Seconds")))
    meta_inputs = (inputs.meta.value or {}).get("inputs") if inputs.meta.ok else None
    if isinstance(meta_inputs, dict) and meta_inputs:
        section.blocks.append(tables.key_value_table("Input files (sha256, from meta.json)",
                                                     {k: str(v)[:16] for k, v in meta_inputs.items()},
                                                     header=("File", "sha256 (first 16)")))
    section.blocks.append(tables.key_value_table("Software", provenance.package_versions(), header=("Package", "Version")))
    return section


def build_report(cfg: Config, root: str | Path = ".", started_at: Optional[float] = None) -> Document:
    """The full report for the run whose outputs live under ``root``.

    ``started_at`` (a ``time.perf_counter()`` value) adds the report stage's own wall time.
    """
    inputs = RunInputs.load(RunPaths.from_config(cfg, root))
    data = describe_dataset(inputs.meta.value if inputs.meta.ok else None, cfg)
    test = inputs.metric("test")
    params = resolve({"model": cfg.to_dict()["model"]})
    seeds, seeds_from = _run_seeds(inputs, cfg)
    this_run = Experiment("this run", params, test, seeds=tuple(seeds), **_run_predictions(inputs)) if test else None
    seeds_text = f"seeds {seeds} ({seeds_from})"
    summary = [f"Data: {data.description}",
               f"System: {system_label(params)} (`model.name={cfg.model.name}`, `model.filter={cfg.model.filter}`, "
               f"`model.fusion={cfg.model.fusion}`), {seeds_text}."]
    if test:
        summary.append("Test (mean ± std over seeds): " + ", ".join(
            f"{tables.LABELS[k]} {tables.metric_cell(test, k)}" for k in ("mae", "corr", "acc2_non0", "f1_non0", "acc7")))
    else:
        summary.append("Test metrics: not yet run.")
    experiments, skipped = (parse_experiments(inputs.experiments.value, inputs.experiments.path)
                            if inputs.experiments.ok else ([], []))
    sections = [
        _results_section(inputs, experiments, this_run, data, seeds),
        _experiment_section("2. Ablations (paper Table 3)", "Ablations", inputs, experiments, this_run, data,
                            is_ablation, system_label, published.TABLE3_ABLATION_MOSI, "ablation experiments",
                            notes=[WO_MFM_NOTE, *skipped]),
        _experiment_section("3. Fusion strategies (paper Table 4)", "Fusion strategies", inputs, experiments,
                            this_run, data, is_fusion_variant, fusion_label, published.TABLE4_FUSION_MOSI,
                            "fusion experiments", notes=skipped),
        _robustness_section(inputs, cfg),
        _filter_section(inputs, cfg),
        _training_section(inputs, cfg),
        _predictions_section(inputs, cfg),
        _data_section(inputs, data),
        _provenance_section(inputs, cfg, started_at),
    ]
    return Document(cfg.report.title, summary, sections)


def write_report(doc: Document, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/<name>.png`` under ``out_dir``;
    remove figures a previous run left that this report no longer has."""
    out = Path(out_dir)
    fig_dir = out / "figures"
    written: list[Path] = []
    try:
        fig_dir.mkdir(parents=True, exist_ok=True)
        keep = set()
        for fig in doc.figures():
            path = fig_dir / f"{fig.name}.png"
            write_atomic(path, fig.png)
            keep.add(path.name)
            written.append(path)
        for stale in fig_dir.glob("*.png"):
            if stale.name not in keep:
                stale.unlink()
        for name, text in (("report.md", render_markdown(doc)), ("report.html", render_html(doc))):
            write_atomic(out / name, text)  # whole or not at all: a full disk never leaves half a report
            written.append(out / name)
    except OSError as err:
        raise OutputError(f"{out}: cannot write the report ({os_reason(err)})") from None
    return written
