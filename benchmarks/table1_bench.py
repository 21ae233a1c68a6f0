"""The paper's Table 1 grid through the real stages: each system x N seeds, with wall times.

    python benchmarks/table1_bench.py [--systems ef-lstm tfn ...] [--seeds 0 1 2]
        [--set data.sample_size=tiny --set train.epochs=1 ...] [--split test|valid]
        [--workdir DIR] [--json OUT] [--report]

The repository is copied (without data, outputs, caches or the virtual environment) into
``--workdir`` (a temporary folder by default), so the stages' fixed output paths
(``metrics/``, ``models/``, ``predictions/``) never touch the checkout. There it runs
``stages.sample`` (when ``data.source=sample``) and ``stages.extract`` once, then for every
system of :data:`pipelines.table1.TABLE1` ``stages.train`` and ``stages.evaluate`` with the
system's overrides, all ``--set`` overrides and ``train.seeds``. Each system's
``metrics/*.json`` is kept under ``<workdir>/results/<system>/``, an entry is appended to
the copy's ``results/experiments.json`` (the report's input for baselines in Table 1), and
``--report`` finally runs ``stages.report`` there. The printed table follows the paper's
Table 1 (percentages, both Acc2/F1 conventions, mean +- std over seeds), with the published
CMU-MOSI numbers below it, marked as published (the paper states no Acc2/F1 convention, so
its numbers stand under both). Times: "train s" and "eval s" are the stage processes' wall
times (start-up and data loading included), "fit s/seed" the training loop's own time per
seed (``metrics/train.json``).

Real MOSI train/valid (no test fold: report on valid):
    --split valid --set data.source=csd --set data.csd_dir=../shared/data/mosi-real-trainvalid
    --set data.files.visual=null --set data.files.words=CMU_MOSI_TimestampedWords.csd ...
(see docs/benchmarks-table1.md for the exact command used).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3sa.config import load_params  # noqa: E402
from m3sa.report.experiments import flatten  # noqa: E402
from m3sa.report.published import TABLE1_MOSI  # noqa: E402
from pipelines.grids import LABELS as GRID_LABELS, TABLE3  # noqa: E402
from pipelines.table1 import LABELS, TABLE1  # noqa: E402

#: Table 1's systems plus the quality variants (Table 3's ablations with the soft filter, text only).
SYSTEMS: dict[str, list[str]] = {
    **TABLE1,
    **{f"m3sa-{k}": ["model.name=m3sa", *v] for k, v in TABLE3.items() if k.startswith("wo-")},
    "text-only": ["model.name=text_only"],
}
SYSTEM_LABELS = {**LABELS, **{f"m3sa-{k}": GRID_LABELS[k] for k in TABLE3 if k.startswith("wo-")},
                 "text-only": "Text only (same text encoder, fine-tuned)"}

_ANYWHERE = shutil.ignore_patterns(".venv", ".git", ".dvc", ".cache", ".hypothesis", ".pytest_cache", "__pycache__",
                                   "*.egg-info")
#: run outputs, left out at the top level only (m3sa/data and m3sa/models are library code)
_TOP_LEVEL = {"data", "models", "metrics", "predictions", "reports", "dvclive", "results", "plots", "dvc_plots", "tmp"}


def IGNORE(src: str, names: list[str]) -> set[str]:
    """shutil.copytree ignore: tooling folders anywhere, run outputs at the repository's top level."""
    skip = set(_ANYWHERE(src, names))
    if Path(src).resolve() == ROOT.resolve():
        skip |= _TOP_LEVEL & set(names)
    return skip
COLUMNS = [("acc7", "Acc7", 100), ("acc2_non0", "Acc2 non0", 100), ("f1_non0", "F1 non0", 100),
           ("acc2_has0", "Acc2 has0", 100), ("f1_has0", "F1 has0", 100), ("mae", "MAE", 1), ("corr", "Corr", 1)]


def stage(repo: Path, name: str, overrides: list[str]) -> float:
    """Run ``python -m stages.<name>`` in ``repo``; its wall time. Raises RuntimeError with stderr's tail."""
    cmd = [sys.executable, "-m", f"stages.{name}"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"stages.{name} exited {proc.returncode}: {tail}")
    return wall


def run_grid(workdir: Path, systems: list[str], seeds: list[int], overrides: list[str], split: str) -> dict[str, Any]:
    """Copy the repository, prepare the data once, train and evaluate every system."""
    repo = workdir / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    cfg = load_params(repo / "params.yaml", overrides)
    times: dict[str, float] = {}
    if cfg.data.source == "sample":
        times["sample"] = stage(repo, "sample", overrides)
    times["extract"] = stage(repo, "extract", overrides)
    meta = json.loads((repo / cfg.data.features_dir / "meta.json").read_text())
    seed_set = f"train.seeds=[{', '.join(map(str, seeds))}]"
    rows: dict[str, Any] = {}
    experiments: list[dict[str, Any]] = []
    for system in systems:
        sys_overrides = [*overrides, *SYSTEMS[system], seed_set]
        for out in ("models", "dvclive", "metrics", "predictions"):
            shutil.rmtree(repo / out, ignore_errors=True)
        row: dict[str, Any] = {"label": SYSTEM_LABELS[system], "overrides": SYSTEMS[system]}
        try:
            row["train_s"] = stage(repo, "train", sys_overrides)
            row["evaluate_s"] = stage(repo, "evaluate", sys_overrides)
        except RuntimeError as err:
            row["error"] = str(err)
            print(f"{system}: {err}", file=sys.stderr)
            rows[system] = row
            continue
        keep = workdir / "results" / system
        keep.mkdir(parents=True, exist_ok=True)
        docs = {}
        for path in (repo / "metrics").glob("*.json"):
            shutil.copy2(path, keep / path.name)
            docs[path.stem] = json.loads(path.read_text())
        row["metrics"] = docs[split]
        row["train"] = {k: docs["train"]["mean"].get(k) for k in ("epochs_run", "wall_s", "samples_per_s")}
        row["device"] = docs["train"].get("device")
        row["filters"] = filter_summary(repo / "predictions" / "test.parquet")
        rows[system] = row
        params = flatten(load_params(repo / "params.yaml", sys_overrides).to_dict())
        experiments.append({"name": f"table1-{system}", "params": params, "metrics": {split: docs[split]}})
        (repo / "results").mkdir(exist_ok=True)
        (repo / "results" / "experiments.json").write_text(json.dumps(experiments, indent=1))
    return {"repo": str(repo), "overrides": overrides, "seeds": seeds, "split": split, "stage_s": times,
            "counts": meta.get("counts"), "modalities": meta.get("modalities"), "systems": rows,
            "python": platform.python_version(), "machine": platform.machine()}


def filter_summary(path: Path) -> dict[str, Any] | None:
    """Mean filter value per modality on the test predictions, over all segments and, where the
    planted ground truth exists, over informative and non-informative segments apart."""
    if not path.exists():
        return None
    import pandas as pd

    df = pd.read_parquet(path)
    out: dict[str, Any] = {}
    for col in [c for c in df.columns if c.startswith("filter_")]:
        m = col[len("filter_"):]
        vals = df[col]
        if vals.isna().all():
            continue
        doc: dict[str, Any] = {"all": float(vals.mean())}
        gt = f"gt_{m}"
        if gt in df.columns and df[gt].notna().any():
            informative = df[gt].astype("boolean").fillna(False).to_numpy(bool)
            doc["informative"] = float(vals[informative].mean()) if informative.any() else None
            doc["noise"] = float(vals[~informative].mean()) if (~informative).any() else None
            doc["informative_share"] = float(informative.mean())
        out[m] = doc
    return out or None


def filter_table(result: dict[str, Any]) -> str:
    """Mean test filter value per modality (all / informative / noise segments) per system."""
    lines = ["| System | modality | mean filter (all) | informative segments | noise segments | informative share |",
             "|---|---|---|---|---|---|"]
    for row in result["systems"].values():
        for m, doc in (row.get("filters") or {}).items():
            cells = [row["label"], m, f"{doc['all']:.3f}"]
            cells += ["" if doc.get(k) is None else f"{doc[k]:.3f}" for k in ("informative", "noise", "informative_share")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def fmt(doc: dict[str, Any], key: str, scale: float) -> str:
    mean, std = doc["mean"].get(key), doc["std"].get(key)
    if mean is None:
        return ""
    digits = 1 if scale == 100 else 3
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def table(result: dict[str, Any]) -> str:
    """Markdown table in the paper's Table 1 layout, plus wall times; published rows below."""
    head = ["System"] + [c[1] for c in COLUMNS] + ["train s", "fit s/seed", "eval s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system, row in result["systems"].items():
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [row["label"]] + [fmt(row["metrics"], k, s) for k, _, s in COLUMNS]
        cells += [f"{row['train_s']:.1f}", f"{row['train']['wall_s']:.1f}", f"{row['evaluate_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    for r in TABLE1_MOSI:
        # The paper states no Acc2/F1 convention: its numbers sit under both.
        vals = [r.acc7, r.acc2, r.f1, r.acc2, r.f1, r.mae, r.corr]
        digits = [1, 1, 1, 1, 1, 3, 3]
        cells = [f"{r.system} (published, {r.source}, CMU-MOSI)"]
        cells += ["" if v is None else f"{v:.{n}f}" for v, n in zip(vals, digits)]
        lines.append("| " + " | ".join(cells + ["", "", ""]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", default=list(TABLE1), choices=list(SYSTEMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", choices=["test", "valid"], default="test", help="split whose metrics are shown")
    parser.add_argument("--workdir", type=Path, default=None, help="where the copy runs (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--report", action="store_true", help="run stages.report in the copy at the end")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="m3sa-table1-"))
    t0 = time.perf_counter()
    result = run_grid(workdir, args.systems, args.seeds, args.overrides, args.split)
    if args.report:
        result["stage_s"]["report"] = stage(Path(result["repo"]), "report", args.overrides)
    result["total_s"] = time.perf_counter() - t0
    print(f"data: {result['counts']} ({', '.join(result['modalities'] or [])}); seeds {args.seeds}; "
          f"split {args.split}; overrides {args.overrides}")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["stage_s"].items())
          + f"; total {result['total_s']:.1f}")
    print(table(result))
    filters = filter_table(result)
    if filters:
        print("\nMean filter value on test (1 = modality kept, 0 = replaced by its baseline embedding):")
        print(filters)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
