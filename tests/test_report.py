"""The report stage on tiny synthetic outputs (tests/_report_outputs.py), its parts, and the
offline helpers around it (stages.plots, stages.collect)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from _report_outputs import commit_run, git, write_outputs
from m3sa.config import config_from_dict
from m3sa.report import build_report, external_urls, render_html, render_markdown, write_report
from m3sa.report import published
from m3sa.report.build import describe_dataset
from m3sa.report.document import Document, Paragraph, Section, Table, Unavailable
from m3sa.report.dvcplots import offline_vega_template, plots_document
from m3sa.report.experiments import fusion_label, from_exp_show, parse_experiments, resolve, system_label
from m3sa.report.stats import confusion_7class, filter_summary
from m3sa.report.tables import fmt_metric

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("filter_values", "training_curves", "pred_vs_true", "confusion_7class")


@pytest.fixture(scope="module")
def cfg():
    return config_from_dict({"report": {"dpi": 60}})


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, cfg):
    """One report with real figures, shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("run")
    write_outputs(root)
    doc = build_report(cfg, root)
    write_report(doc, root / "reports")
    return doc, root / "reports"


@pytest.fixture()
def fast_figures(monkeypatch):
    """Figures are still drawn, but not rasterised (saves ~0.5 s each)."""
    from m3sa.report import figures

    monkeypatch.setattr(figures, "to_png", lambda fig, dpi: b"\x89PNG\r\n\x1a\n stub")


@pytest.fixture()
def run_root(tmp_path: Path, fast_figures) -> Path:
    write_outputs(tmp_path)
    return tmp_path


# ------------------------------------------------------------------ whole report


def test_report_has_every_table_and_figure(full_report):
    doc, out = full_report
    assert doc.unavailable() == []
    assert {f.name for f in doc.figures()} == set(FIGURES)
    for name in FIGURES:
        png = out / "figures" / f"{name}.png"
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width > 150 and im.height > 150
    md = (out / "report.md").read_text()
    for title in ("Results (paper Table 1 layout)", "Ablations (paper Table 3)", "Fusion strategies (paper Table 4)",
                  "Missing-modality robustness", "Modality filter (paper Figure 2)", "Training curves",
                  "Test predictions", "Data", "Provenance"):
        assert f"## " in md and title in md
    # Table 1: text only (the reference) first, then this run's mean ± std (hand-picked 0.4642 ± 0.0123) with
    # both conventions as columns and its paired differences; published rows in a table of their own.
    table1 = md[md.index("**Test results, each against text only**"):md.index("**Published results")]
    rows = [line for line in table1.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| Text only — textonly | embedded sample (tiny) | 2 |") and "| reference |" in rows[1]
    assert rows[2].startswith("| This run: M3SA (Soft) | embedded sample (tiny) | 2 | 46.4 ± 1.2 | 85.7 ± 1.2 | "
                              "85.6 ± 1.2 | 84.1 ± 1.2 | 84.0 ± 1.2 | 0.714 ± 0.012 | 0.794 ± 0.012 |")
    # two seeds each: no t test (it needs 3), said in the cell; text only stored no predictions
    assert "| cannot compare: 2 shared seeds (0, 1); the t test over seeds needs 3" in rows[2]
    assert "cannot compare: the reference (Text only — textonly): no per-segment test predictions stored" in rows[2]
    assert "| MAG-BERT — magbert | embedded sample (tiny) | 2 |" in rows[3]
    assert "cannot compare: the per-seed metrics carry no seed numbers" in rows[3]
    assert "| M3SA (Soft) | CMU-MOSI | paper Table 1 | 46.4 | 85.7 | 85.6 | 0.714 | 0.794 |" in md
    # Tables 3 and 4 from results/experiments.json; the broken entry is named, not fatal.
    assert "| M3SA (Hard) (W/O ML) — nomlhard @89d9585 | – | 2 | 44.0 ± 1.2 | 85.7 ± 1.2" in md
    assert "| M3SA (Soft) — this run | embedded sample (tiny) | 2 | 46.4 ± 1.2 |" in md  # Table 3's reference
    assert "M3SA (W/O MFM) — nomfm" in md and "Concatenation+FC (Soft) — concat" in md
    assert "entry 4 (broken) skipped" in md
    # robustness: MAE deltas against the full model
    assert "| without language (baseline embedding) |" in md and "+0.500 |" in md
    # data summary and provenance
    assert "| no words | 2 | vidB[0], vidB[1] |" in md and "| acoustic | 321 |" in md
    assert "| extract | python -m stages.extract |" in md and "| torch |" in md
    assert "| train | 12.5 |" in md and "| extract | 4.2 |" in md  # train: sum of per-seed wall_s
    assert "| 1 | 47.4 | 51.1 |" in md  # per-seed rows labelled by the seeds in predictions/test.parquet
    assert md.count("](figures/") == len(FIGURES)


def test_filter_table_against_planted_truth(full_report):
    doc, out = full_report
    table = next(t for t in doc.tables() if t.caption.startswith("Modality filter values"))
    assert table.header[-3:] == ["Mean s, informative", "Mean s, noise", "AUC"]
    preds = pd.read_parquet(out.parent / "predictions/test.parquet")
    row = {r[0]: r for r in table.rows}
    for m in ("language", "acoustic", "visual"):
        gt = preds[f"gt_{m}"]
        informative = preds.loc[gt.fillna(False).astype(bool), f"filter_{m}"].mean()
        assert row[m][1] == f"{preds[f'filter_{m}'].mean():.3f}"
        assert row[m][5] == f"{informative:.3f} (n={int(gt.sum())})"
        assert int(row[m][6].split("n=")[1].rstrip(")")) == int((gt == False).sum())  # noqa: E712 (nullable)
    assert row["acoustic"][2] == "0.012"  # published (section 4.2.4)


def test_html_is_self_contained(full_report):
    _, out = full_report
    page = (out / "report.html").read_text()
    assert external_urls(page) == []
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) == len(FIGURES)
    assert "@media print" in page
    # every in-page link has its target
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert f'id="{anchor}"' in page


def test_missing_inputs_give_not_yet_run_sections(tmp_path, cfg, fast_figures):
    doc = build_report(cfg, tmp_path)
    write_report(doc, tmp_path / "reports")
    what = {u.what: u.status for u in doc.unavailable()}
    assert set(what) >= {"test metrics", "ablation experiments", "fusion experiments", "robustness evaluation",
                         "filter values", "training curves", "test predictions", "data summary",
                         "dvc.lock stage hashes"}
    assert set(what.values()) == {"Not yet run"}
    md = (tmp_path / "reports/report.md").read_text()
    html_page = (tmp_path / "reports/report.html").read_text()
    assert md.count("**Not yet run:") == len(what)
    assert html_page.count('<div class="unavailable"><strong>Not yet run: ') == len(what)
    assert "| M3SA (Soft) | CMU-MOSI | paper Table 1 | 46.4 |" in md  # published numbers shown regardless
    assert doc.figures() == [] and not list((tmp_path / "reports/figures").glob("*.png"))


@pytest.mark.parametrize("remove, what, figures_left", [
    ("results/experiments.json", "ablation experiments", 4),
    ("metrics/robustness.json", "robustness evaluation", 4),
    ("predictions/test.parquet", "test predictions", 1),
    ("dvclive", "training curves", 3),
    ("data/features/meta.json", "data summary", 4),
    ("dvc.lock", "dvc.lock stage hashes", 4),
    ("metrics/test.json", "test metrics", 4),
])
def test_one_missing_input(run_root, cfg, remove, what, figures_left):
    target = run_root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    doc = build_report(cfg, run_root)
    statuses = {u.what: u.status for u in doc.unavailable()}
    assert statuses.get(what) == "Not yet run"
    assert len(doc.figures()) == figures_left
    assert external_urls(render_html(doc)) == []


def test_unreadable_input_is_shown_not_raised(run_root, cfg):
    (run_root / "metrics/robustness.json").write_text("{not json")
    (run_root / "predictions/test.parquet").write_bytes(b"PAR1 garbage")
    doc = build_report(cfg, run_root)
    statuses = {u.what: (u.status, u.reason) for u in doc.unavailable()}
    assert statuses["robustness evaluation"][0] == "Unreadable"
    assert "metrics/robustness.json" in statuses["robustness evaluation"][1]
    assert statuses["test predictions"][0] == "Unreadable"


def test_filter_none_is_not_applicable(run_root):
    preds = pd.read_parquet(run_root / "predictions/test.parquet")
    preds.drop(columns=[c for c in preds.columns if c.startswith("filter_")]).to_parquet(
        run_root / "predictions/test.parquet")
    doc = build_report(config_from_dict({"model": {"filter": "none"}}), run_root)
    statuses = {u.what: u.status for u in doc.unavailable()}
    assert statuses == {"filter values": "Not applicable"}


def test_write_report_removes_stale_figures(run_root, cfg):
    out = run_root / "reports"
    write_report(build_report(cfg, run_root), out)
    (out / "figures/old_plot.png").write_bytes(b"x")
    (run_root / "predictions/test.parquet").unlink()
    write_report(build_report(cfg, run_root), out)
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == ["training_curves"]


def test_stage_writes_only_reports(run_root, monkeypatch):
    from stages import report
    from stages._cli import run

    before = {p for p in run_root.rglob("*")}
    monkeypatch.chdir(run_root)
    run("report", report.main, argv=["--params", str(REPO / "params.yaml")], extra=report._extra)
    new = {p.relative_to(run_root).as_posix() for p in set(run_root.rglob("*")) - before}
    assert new == {"reports", "reports/figures", "reports/report.md", "reports/report.html",
                   *(f"reports/figures/{n}.png" for n in FIGURES)}


# ------------------------------------------------------------------ parts


def test_fmt_metric_hand_cases():
    assert fmt_metric("acc7", 0.4642, 0.0123) == "46.4 ± 1.2"
    assert fmt_metric("mae", 0.71449, None) == "0.714"
    assert fmt_metric("corr", 0.5, 0.0) == "0.500 ± 0.000"
    assert fmt_metric("f1_has0", float("nan")) == "n/a"
    assert fmt_metric("acc2_non0", None) == "–"


def test_filter_summary_hand_computed():
    preds = pd.DataFrame({"filter_visual": [0.9, 0.1, 0.8, 0.2, 0.6], "gt_visual": [True, False, True, False, None]})
    s = filter_summary(preds, "visual")
    assert s.n == 5 and s.mean == pytest.approx(0.52) and s.keep_rate == pytest.approx(0.6)
    assert (s.n_informative, s.n_noise) == (2, 2)
    assert s.mean_informative == pytest.approx(0.85) and s.mean_noise == pytest.approx(0.15)
    assert s.auc == 1.0
    assert filter_summary(preds, "acoustic") is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-4, 4), st.floats(-5, 5)), min_size=1, max_size=40))
def test_confusion_trace_is_acc7(pairs):
    labels, preds = (np.array(v) for v in zip(*pairs))
    counts = confusion_7class(labels, preds)
    acc7 = np.mean(np.round(np.clip(preds, -3, 3)) == np.round(np.clip(labels, -3, 3)))  # DESIGN section 4
    assert counts.sum() == len(pairs)
    assert counts.trace() / counts.sum() == pytest.approx(acc7)
    assert (counts.sum(axis=1) == [np.sum(np.round(np.clip(labels, -3, 3)) == c) for c in range(-3, 4)]).all()


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30))
def test_html_escapes_any_text(text, cell):
    doc = Document(text, [text], [Section(text, [Paragraph(text), Table(text, ["a", "b"], [[cell, text]], notes=[cell]),
                                                 Unavailable(text, cell, text)])])
    page = render_html(doc)
    assert external_urls(page) == []
    assert len(re.findall(r"<(script|img|a|link|iframe)\b", page, re.I)) == len(re.findall(r"<a\b", page))
    assert render_markdown(doc).count("\n## ") == 1


def test_external_urls_finds_every_kind():
    page = ('<img src="data:image/png;base64,AA"><a href="#top">t</a><p>data = 3, href=x</p>'
            '<script src="https://cdn.example/v.js"></script><link href=//cdn.example/s.css>'
            "<style>body{background:url(http://x/y.png)} @import 'z.css';</style><div style=\"background:url(q.png)\">")
    assert external_urls(page) == ["https://cdn.example/v.js", "//cdn.example/s.css", "http://x/y.png", "z.css", "q.png"]


def test_system_and_fusion_labels():
    assert system_label(resolve({})) == "M3SA (Soft)"
    assert system_label(resolve({"model.filter": "hard", "model.modulation": False})) == "M3SA (Hard) (W/O ML)"
    assert system_label(resolve({"model": {"filter": "none", "baseline_embedding": False}})) == "M3SA (W/O MFM)"
    assert system_label(resolve({"model.baseline_embedding": False})) == "M3SA (Soft) (W/O BE)"
    assert system_label(resolve({"model.name": "mag_bert"})) == "MAG-BERT"
    assert fusion_label(resolve({"model.fusion": "tensor", "model.filter": "hard"})) == "Tensor Fusion (Hard)"


def test_published_rows_match_design_section_5():
    row = {(r.dataset, r.system): r for r in published.TABLE1_MOSI + published.TABLE2_MOSEI}
    assert [getattr(row[(published.MOSI, "M3SA (Soft)")], k) for k in ("acc7", "acc2", "f1", "mae", "corr")] == \
        [46.4, 85.7, 85.6, 0.714, 0.794]
    assert [getattr(row[(published.MOSEI, "M3SA (Hard)")], k) for k in ("acc7", "acc2", "f1", "mae", "corr")] == \
        [52.7, 85.6, 85.5, 0.587, 0.789]
    assert row[(published.MOSEI, "MAG-BERT")].mae == 0.602
    assert published.FIGURE2_MEAN_MASK_MOSI == {"language": 0.998, "acoustic": 0.012, "visual": 0.088}
    assert len(published.TABLE3_ABLATION_MOSI) == 8 and len(published.TABLE4_FUSION_MOSI) == 8
    wo_mfm = published.matching_rows(published.TABLE3_ABLATION_MOSI, resolve({"model.filter": "none"}))
    assert [r.system for r in wo_mfm] == ["M3SA (Hard) (W/O MFM)", "M3SA (Soft) (W/O MFM)"]
    assert published.matching_rows(published.TABLE1_MOSI, resolve({"model.modulation": False})) == []


def test_describe_dataset(cfg):
    assert describe_dataset({"source": "sample", "params": {"sample_size": "mosei"}}, cfg).paper == published.MOSEI
    assert describe_dataset(None, cfg).paper == published.MOSI
    csd = {"source": "csd", "params": {"files": {"labels": "CMU_MOSEI_Labels.csd"}, "folds": "mosei"}}
    assert describe_dataset(csd, cfg).label == "CMU-MOSEI (csd)"
    assert describe_dataset({"source": "csd", "params": {"files": {"labels": "mine.csd"}, "folds": "random"}},
                            cfg).paper is None


def test_describe_dataset_names_an_official_pickle(cfg):
    official = {"source": "mmsa", "params": {"pickle": "/d/aligned_50.pkl"},
                "pickle": {"recognised": "MMSA MOSEI aligned_50.pkl, official", "rows_meaning": "one row per token"}}
    info = describe_dataset(official, cfg)
    assert info.label == "MMSA MOSEI aligned_50.pkl, official (mmsa)" and info.paper == published.MOSEI
    assert "/d/aligned_50.pkl" in info.description and "one row per token" in info.description
    other = describe_dataset({"source": "mag", "params": {"pickle": "x.pkl"}, "pickle": {"recognised": "unrecognised pickle"}}, cfg)
    assert other.label == "unrecognised pickle (mag)" and other.paper is None


EXP_SHOW = [
    {"rev": "workspace", "name": None, "error": None, "experiments": None,
     "data": {"params": {"params.yaml": {"data": {"model": {"filter": "soft"}}}},
              "metrics": {"metrics/test.json": {"data": {"mean": {"mae": 0.9}, "std": {"mae": 0.1}}}}}},
    {"rev": "6d26f0a94058a068166b6217e0057a940e0c08e5", "name": "main", "error": None,
     "data": {"params": {"params.yaml": {"data": {"model": {"filter": "soft"}}}},
              "metrics": {"metrics/test.json": {"data": {"mean": {"mae": 0.7}, "std": {"mae": 0.01}}},
                          "metrics/valid.json": {"data": {"mean": {"mae": 0.6}}}}},
     "experiments": [
         {"revs": [{"rev": "89d9585343976465dce244039553f8f67531bded", "name": "no-ml", "error": None,
                    "data": {"params": {"params.yaml": {"data": {"model": {"filter": "hard", "modulation": False}}}},
                             "metrics": {"metrics/test.json": {"data": {"mean": {"mae": 0.8}, "std": {}}}}}}]},
         {"revs": [{"rev": "aaaaaaa", "name": "failed", "error": {"msg": "boom"}, "data": {}}]},
         {"revs": [{"rev": "bbbbbbb", "name": "queued", "error": None, "data": {"params": {}, "metrics": {}}}]},
     ]},
]


def test_from_exp_show():
    entries = from_exp_show(EXP_SHOW)
    assert [(e["name"], e["rev"][:7]) for e in entries] == [("main", "6d26f0a"), ("no-ml", "89d9585")]
    assert entries[1]["rev"] == "89d9585343976465dce244039553f8f67531bded"  # full: collect reads git with it
    assert entries[1]["params"] == {"model.filter": "hard", "model.modulation": False}
    assert set(entries[0]["metrics"]) == {"test", "valid"}
    good, notes = parse_experiments(entries + [{"name": "x", "metrics": {}}, "junk"])
    assert [system_label(e.params) for e in good] == ["M3SA (Soft)", "M3SA (Hard) (W/O ML)"]
    assert notes == ["experiments: entry 2 (x) skipped: no metrics.test.mean", "experiments: entry 3 skipped: not a mapping"]


@pytest.mark.parametrize("data", [[1], ["rev"], [{"rev": "abc", "experiments": ["x"]}],
                                  [{"rev": "abc", "experiments": [{"revs": [3]}]}]])
def test_from_exp_show_refuses_malformed_entries(data):
    from m3sa.errors import DataError

    with pytest.raises(DataError, match="dvc exp show --json: an entry has an unexpected shape"):
        from_exp_show(data)


def test_collect_stage_from_saved_json(tmp_path, monkeypatch):
    from stages import collect
    from stages._cli import run

    (tmp_path / "exp.json").write_text(json.dumps(EXP_SHOW))
    monkeypatch.chdir(tmp_path)
    run("collect", collect.main, argv=["--params", str(REPO / "params.yaml"), "--json", "exp.json"],
        extra=collect._extra)
    written = json.loads((tmp_path / "results/experiments.json").read_text())
    assert [e["name"] for e in written] == ["main", "no-ml"]


def _exp(sha, name, model):
    return {"rev": sha, "name": name, "error": None,
            "data": {"params": {"params.yaml": {"data": {"model": model}}},
                     "metrics": {"metrics/test.json": {"data": {"mean": {"mae": 0.5}, "std": {"mae": 0.01}}}}}}


def test_collect_reads_git_and_the_report_pairs_rows_against_the_full_model(tmp_path, monkeypatch, fast_figures):
    """Three committed runs (full soft model, W/O ML with worse predictions, W/O BE alike): collect reads
    their per-seed metrics and predictions from git; Table 3 puts the full model first and says W/O ML
    is worse, W/O BE not different, and this run (hard, other segments, 2 seeds) cannot be compared."""
    from stages import collect
    from stages._cli import run

    git(tmp_path, "init", "-q")
    rng = np.random.default_rng(1)
    labels = np.round(rng.uniform(-3, 3, 90) * 3) / 3
    full = commit_run(tmp_path, rng, labels, 0.0, seeds=(0, 1, 2))
    no_ml = commit_run(tmp_path, rng, labels, 0.8, seeds=(0, 1, 2))
    no_be = commit_run(tmp_path, rng, labels, 0.0, seeds=(0, 1, 2))
    old = commit_run(tmp_path, rng, labels, 0.0, seeds=(0, 1, 2), with_plots=False)
    (tmp_path / "exp.json").write_text(json.dumps([{**_exp(old, "main", {"filter": "soft"}), "experiments": [
        {"revs": [_exp(full, "full", {"filter": "soft"})]},
        {"revs": [_exp(no_ml, "no-ml", {"filter": "soft", "modulation": False})]},
        {"revs": [_exp(no_be, "no-be", {"filter": "soft", "baseline_embedding": False})]}]}]))
    write_outputs(tmp_path)  # this run's outputs (2 seeds, other segment ids)
    monkeypatch.chdir(tmp_path)
    run("collect", collect.main, argv=["--params", str(REPO / "params.yaml"), "--json", "exp.json"],
        extra=collect._extra)
    written = json.loads((tmp_path / "results/experiments.json").read_text())
    by_name = {e["name"]: e for e in written}
    assert [e["seed"] for e in by_name["no-ml"]["metrics"]["test"]["per_seed"]] == [0, 1, 2]
    assert by_name["no-ml"]["predictions"]["seeds"] == ["0", "1", "2"]
    assert len(by_name["no-ml"]["predictions"]["pred"][0]) == 90
    assert "predictions" not in by_name["main"]  # its commit has no plots/predictions.csv
    doc = build_report(config_from_dict({"report": {"dpi": 60}, "model": {"filter": "hard"}}), tmp_path)
    table = next(t for t in doc.tables() if t.caption.startswith("Ablations: this project's runs"))
    rows = {row[0].split(" — ")[1].split(" @")[0]: dict(zip(table.header, row)) for row in table.rows}
    assert table.rows[0][0].startswith("M3SA (Soft) — full @") and rows["full"]["Δ MAE (paired t)"] == "reference"
    assert rows["no-ml"]["Δ MAE (paired t)"].endswith(": worse") and rows["no-ml"]["Δ MAE (bootstrap)"].endswith(": worse")
    assert rows["no-ml"]["Δ Acc2 non0 (bootstrap)"].startswith("-") and rows["no-ml"]["Δ Acc2 non0 (bootstrap)"].endswith(": worse")
    assert rows["no-be"]["Δ MAE (paired t)"].endswith(": no difference detected at 95 %")
    assert rows["this run"]["Δ MAE (bootstrap)"].startswith("cannot compare: different test segment sets")
    assert rows["this run"]["Δ MAE (paired t)"].startswith("cannot compare: 2 shared seeds (0, 1)")
    assert rows["main"]["Δ MAE (bootstrap)"].startswith("cannot compare: no per-segment test predictions stored")
    assert any("Holm-corrected over the rows" in n for n in table.notes)


# ------------------------------------------------------------------ offline dvc plots

DVC_PLOTS_JSON = {
    "errors": [{"name": "Loss", "rev": "HEAD", "source": "x.tsv", "type": "FileNotFoundError", "msg": "no x.tsv"}],
    "data": {
        "Training curves": [{"type": "vega", "revisions": ["workspace"], "content": {
            "data": {"values": [{"step": "0", "mae": "1.0", "rev": "workspace", "filename": "seed_0/mae.tsv"},
                                {"step": "1", "mae": "0.8", "rev": "workspace", "filename": "seed_0/mae.tsv"},
                                {"step": "0", "mae": "1.1", "rev": "workspace", "filename": "seed_1/mae.tsv"}]},
            "title": {"text": "Training curves"}, "encoding": {"x": {"field": "step"}},
            "layer": [{"mark": "line", "encoding": {"y": {"field": "mae"}}}, {"mark": {"type": "circle"}}]}}],
        "Predicted vs true": [{"type": "vega", "revisions": ["workspace", "HEAD"], "content": {
            "data": {"values": [{"label": "0.5", "pred": "0.4", "rev": "workspace"},
                                {"label": "-1", "pred": "-0.8", "rev": "HEAD"}]},
            "mark": {"type": "point"}, "encoding": {"x": {"field": "label"}, "y": {"field": "pred"}}}}],
        "Filter": [{"type": "vega", "revisions": ["workspace"], "content": {
            "data": {"values": [{"modality": "language", "value": "0.9", "rev": "workspace"},
                                {"modality": "acoustic", "value": "0.1", "rev": "workspace"}]},
            "mark": "bar", "encoding": {"x": {"field": "value"}, "y": {"field": "modality"}}}}],
        "conf.csv": [{"type": "vega", "revisions": ["workspace"], "content": {
            "data": {"values": [{"actual": "1", "predicted": "1", "rev": "workspace"},
                                {"actual": "0", "predicted": "1", "rev": "workspace"}]},
            "layer": [{"mark": "rect"}], "encoding": {"x": {"field": "actual"}, "y": {"field": "predicted"}}}}],
    },
}


def test_plots_page_draws_every_plot_offline():
    doc = plots_document(DVC_PLOTS_JSON, dpi=40)
    assert [f.caption for f in doc.figures()] == ["Training curves", "Predicted vs true", "Filter", "conf.csv (workspace)"]
    assert [(u.what, u.status) for u in doc.unavailable()] == [("Loss", "Unreadable")]
    page = render_html(doc)
    assert external_urls(page) == [] and "<script" not in page


def test_plots_stage_from_saved_json(tmp_path, monkeypatch):
    from stages import plots
    from stages._cli import run

    (tmp_path / "p.json").write_text(json.dumps(DVC_PLOTS_JSON))
    monkeypatch.chdir(tmp_path)
    run("plots", plots.main, argv=["--params", str(REPO / "params.yaml"), "--set", "report.dpi=40", "--json", "p.json",
                                   "--out", "o/i.html"],
        extra=plots._extra)
    assert external_urls((tmp_path / "o/i.html").read_text()) == []


def test_offline_vega_template_keeps_dvc_off_the_cdn(tmp_path):
    from dvc_render import VegaRenderer, render_html as dvc_render_html

    template = offline_vega_template(["var vega = 1; // </script> inside", "var vegaLite = 1;", "var vegaEmbed = 1;"])
    assert "{plot_divs}" in template and "{scripts}" not in template
    assert template.count("</script>") == 3  # the one inside the code is escaped
    renderer = VegaRenderer([{"step": 0, "mae": 1.0}, {"step": 1, "mae": 0.8}], "mae.tsv", x="step", y="mae")
    out = dvc_render_html([renderer], tmp_path / "index.html", html_template=template)
    page = Path(out).read_text()
    assert "vegaEmbed('#" in page and "cdn.jsdelivr" not in page and external_urls(page) == []


@pytest.mark.slow
def test_plots_and_collect_against_real_dvc(tmp_path):
    """`python -m stages.plots` (show and diff) and `stages.collect` on a real repository."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    env_py = sys.executable

    def sh(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True,
                              env={"PYTHONPATH": str(REPO), "PATH": str(Path(env_py).parent) + ":/usr/bin:/bin",
                                   "HOME": str(tmp_path), "DVC_NO_ANALYTICS": "1"})

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.invalid")
    sh("git", "config", "user.name", "t")
    sh(env_py, "-m", "dvc", "init", "-q")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "pred.csv").write_text("label,pred\n0.5,0.4\n-1,-0.8\n")
    (tmp_path / "dvc.yaml").write_text(
        "plots:\n  - Predicted vs true:\n      template: scatter\n      x: label\n      y:\n        pred.csv: pred\n")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    (tmp_path / "pred.csv").write_text("label,pred\n0.5,0.1\n-1,-0.5\n")
    sh(env_py, "-m", "stages.plots", "HEAD", "--out", "out/diff.html")
    page = (tmp_path / "out/diff.html").read_text()
    assert external_urls(page) == [] and page.count("<img ") == 1 and "HEAD, workspace" in page
    sh(env_py, "-m", "stages.collect")
    assert json.loads((tmp_path / "results/experiments.json").read_text()) == []


def test_provenance_git_state_and_lock(tmp_path):
    from m3sa.report import provenance

    assert provenance.git_state(tmp_path) == ("not a git repository", None, 0)
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "a.txt").write_text("a")
    assert provenance.git_state(tmp_path) == ("no commit yet", True, 1)
    subprocess.run([*git, "add", "a.txt"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "a"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(tmp_path) == (head, False, 0)
    (tmp_path / "a.txt").write_text("b")
    assert provenance.git_state(tmp_path) == (head, True, 1)

    entry = {"cmd": "python -m stages.train", "outs": [{"path": "models", "md5": "0123456789abcdef.dir"}]}
    [stage] = provenance.lock_stages({"schema": "2.0", "stages": {"train": entry}})
    assert stage == {"stage": "train", "cmd": "python -m stages.train", "digest": provenance.stage_digest(entry),
                     "deps": 0, "outs": "models 01234567"}
    assert provenance.stage_digest(entry) != provenance.stage_digest({**entry, "cmd": "other"})


def test_find_wall_time_and_device():
    from m3sa.report.provenance import find_device, find_wall_time

    assert find_wall_time({"wall_s": 3}) == 3.0
    assert find_wall_time({"timing": {"elapsed_s": 2.5}}) == 2.5
    assert find_wall_time({"per_seed": [{"wall_s": 1.5}, {"wall_s": 2.0}]}) == 3.5
    assert find_wall_time({"per_seed": [{"wall_s": 1.5}, {}]}) is None
    assert find_wall_time({"wall_s": True}) is None and find_wall_time(None) is None
    assert find_device({"per_seed": [{"device": "cuda:0"}]}, {"device": "cpu"}) == "cuda:0"
    assert find_device(None, {}) is None
