"""Tiny synthetic pipeline outputs, shaped as docs/architecture.md specifies, for the
report tests. Numbers are hand-picked so tests can look for their formatted form."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from m3sa.metrics import regression_metrics

SEEDS = (0, 1)
MODS = ("language", "acoustic", "visual")
KEYS = ("mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0")
TEST_MEAN = {"mae": 0.7141, "corr": 0.7938, "acc7": 0.4642, "acc5": 0.5011, "acc2_non0": 0.8571,
             "f1_non0": 0.8560, "acc2_has0": 0.8410, "f1_has0": 0.8402}
TEST_STD = {k: 0.0123 for k in KEYS}


def metrics_doc(mean: dict[str, float], std: dict[str, float], with_seeds: bool = False) -> dict:
    """The shape m3sa.metrics.aggregate writes: per-seed rows carry no seed key (m3sa.evaluation
    adds it: ``with_seeds``)."""
    per_seed = [{k: v + (0.01 if s else -0.01) for k, v in mean.items()} for s in SEEDS]
    if with_seeds:
        per_seed = [{"seed": s, **row} for s, row in zip(SEEDS, per_seed)]
    return {"mean": mean, "std": std, "per_seed": per_seed}


def _json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def write_outputs(root: Path, n_test: int = 60) -> None:
    """Every input of the report under ``root`` (repository layout, default params)."""
    rng = np.random.default_rng(0)
    _json(root / "data/features/meta.json", {
        "source": "sample", "align": "words", "modalities": list(MODS), "dims": {"acoustic": 74, "visual": 47},
        "counts": {"train": 180, "valid": 30, "test": n_test},
        "dropped": [{"segment_id": "vidA[3]", "video_id": "vidA", "reason": "zero-length interval"},
                    {"segment_id": "vidB[0]", "video_id": "vidB", "reason": "no words"},
                    {"segment_id": "vidB[1]", "video_id": "vidB", "reason": "no words"}],
        "nonfinite": {"acoustic": 321, "visual": 0}, "standardization": {},
        "inputs": {"words.csd": "ab" * 32, "labels.csd": "cd" * 32}, "has_ground_truth": True,
        "params": {"source": "sample", "sample_size": "tiny"}, "wall_s": 4.25})
    _json(root / "metrics/test.json", metrics_doc(TEST_MEAN, TEST_STD))
    _json(root / "metrics/valid.json", metrics_doc({k: v * 1.02 for k, v in TEST_MEAN.items()}, TEST_STD))
    _json(root / "metrics/masks.json", {"mean": {"language": 0.97, "acoustic": 0.05, "visual": 0.4},
                                        "hard_keep_rate": None, "per_seed": []})
    _json(root / "metrics/robustness.json", {
        m: {"mean": {**TEST_MEAN, "mae": TEST_MEAN["mae"] + d}, "std": TEST_STD}
        for m, d in (("language", 0.5), ("acoustic", 0.01), ("visual", 0.05))})
    _json(root / "metrics/train.json", {"select_metric": "mae", "device": "cpu", "world_size": 1, "mean": {"wall_s": 6.25},
                                        "per_seed": [{"seed": s, "best_epoch": 3 + s, "best_valid": 0.8 - 0.01 * s,
                                                      "best_valid_metrics": {"mae": 0.8}, "epochs_run": 5, "wall_s": 6.25,
                                                      "device": "cpu"} for s in SEEDS]})
    rows, labels = [], None
    for s in SEEDS:
        label = np.round(rng.uniform(-3, 3, n_test) * 5) / 5  # (N,) multiples of 0.2, some exact zeros
        label[:3] = 0.0
        labels = label = label if labels is None else labels  # a segment has one label in every seed
        gt = {"language": rng.random(n_test) < 0.9, "acoustic": rng.random(n_test) < 0.1,
              "visual": rng.random(n_test) < 0.5}
        row = {"segment_id": [f"v{i // 4}[{i % 4}]" for i in range(n_test)], "video_id": [f"v{i // 4}" for i in range(n_test)],
               "seed": s, "label": label.astype(np.float32),
               "pred": (0.7 * label + rng.normal(0, 0.6, n_test)).astype(np.float32)}
        for m in MODS:
            row[f"pred_{m}"] = (0.5 * label + rng.normal(0, 1, n_test)).astype(np.float32)
            row[f"filter_{m}"] = np.clip(np.where(gt[m], 0.9, 0.1) + rng.normal(0, 0.08, n_test), 0, 1).astype(np.float32)
            row[f"gt_{m}"] = pd.array([None if i == 0 else bool(g) for i, g in enumerate(gt[m])], dtype="boolean")
        rows.append(pd.DataFrame(row))
    (root / "predictions").mkdir(parents=True, exist_ok=True)
    pd.concat(rows, ignore_index=True).to_parquet(root / "predictions/test.parquet")
    for s in SEEDS:
        for name, col, values in (("train/loss", "loss", [1.0, 0.7, 0.55, 0.5]), ("valid/mae", "mae", [1.1, 0.9, 0.8, 0.82])):
            path = root / f"dvclive/seed_{s}/plots/metrics/{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{col}\n" + "".join(f"{i}\t{v + 0.02 * s}\n" for i, v in enumerate(values)))
    _json(root / "results/experiments.json", [
        {"name": "nomlhard", "rev": "89d9585", "params": {"model.filter": "hard", "model.modulation": False},
         "metrics": {"test": metrics_doc({**TEST_MEAN, "acc7": 0.4401}, TEST_STD)}},
        {"name": "nomfm", "params": {"model": {"filter": "none"}}, "metrics": {"test": metrics_doc(TEST_MEAN, TEST_STD)}},
        {"name": "concat", "params": {"model.fusion": "concat"}, "metrics": {"test": metrics_doc(TEST_MEAN, TEST_STD)}},
        {"name": "magbert", "params": {"model.name": "mag_bert", "data.source": "sample", "data.sample_size": "tiny"},
         "metrics": {"test": metrics_doc(TEST_MEAN, TEST_STD)}},
        {"name": "broken", "params": {"model.filter": "soft"}, "metrics": {}},
        {"name": "textonly", "params": {"model.name": "text_only", "data.source": "sample", "data.sample_size": "tiny"},
         "metrics": {"test": metrics_doc({**TEST_MEAN, "mae": 0.7541}, TEST_STD, with_seeds=True)}},
    ])
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  extract:\n    cmd: python -m stages.extract\n    deps:\n    - path: stages/extract.py\n      md5: aa11\n"
        "    outs:\n    - path: data/features\n      md5: 0123456789abcdef.dir\n"
        "  train:\n    cmd: python -m stages.train\n    outs:\n    - path: models\n      md5: fedcba9876543210.dir\n")


def git(repo, *args):
    """Run git in ``repo`` (a throwaway identity for commits); its stdout."""
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit_run(repo, rng, labels, gap, seeds=(0, 1, 2, 3, 4), with_plots=True):
    """metrics/test.json (per seed) and plots/predictions.csv of one run, committed; returns the sha.
    ``gap`` shifts every prediction up (a worse MAE)."""
    lines, per_seed = ["segment_id,seed,label,pred"], []
    for s in seeds:
        pred = 0.7 * labels + rng.normal(0, 0.5, labels.size) + gap * rng.uniform(0.5, 1.5, labels.size)
        lines += [f"v{i},{s},{y:.6g},{p:.6g}" for i, (y, p) in enumerate(zip(labels, pred))]
        per_seed.append({"seed": s, **regression_metrics(pred, labels)})
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/test.json").write_text(json.dumps({"mean": {}, "std": {}, "per_seed": per_seed}))
    (repo / "plots").mkdir(exist_ok=True)
    if with_plots:
        (repo / "plots/predictions.csv").write_text("\n".join(lines) + "\n")
    elif (repo / "plots/predictions.csv").exists():
        git(repo, "rm", "-q", "plots/predictions.csv")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"gap {gap}")
    return git(repo, "rev-parse", "HEAD")
