"""``python -m stages.evaluate``: score each seed's ``best.pt`` on the valid and test splits.

Writes ``metrics/{test,valid,masks,robustness}.json``, ``predictions/test.parquet`` and the
plot tables ``plots/predictions.csv`` (label, pred per test segment and seed) and
``plots/filter_values.csv`` (mean filter value per modality on test).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging

import pyarrow.parquet as pq

from m3sa.atomic import atomic_write
from m3sa.config import Config
from m3sa.evaluation import evaluate_all
from m3sa.locking import output_lock
from stages._cli import run

METRICS_DIR = "metrics"
PREDICTIONS = "predictions/test.parquet"
PLOT_PREDICTIONS = "plots/predictions.csv"
PLOT_FILTERS = "plots/filter_values.csv"

log = logging.getLogger("stages.evaluate")


def write_plot_tables(predictions: str, masks_mean: dict[str, float]) -> None:
    """The CSV tables dvc.yaml's plots read."""
    table = pq.read_table(predictions, columns=["segment_id", "seed", "label", "pred"])
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["segment_id", "seed", "label", "pred"])
    for sid, seed, y, p in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        out.writerow([sid, seed, f"{y:.6g}", f"{p:.6g}"])
    atomic_write(PLOT_PREDICTIONS, lambda fh: fh.write(buf.getvalue().encode()))
    rows = "modality,value\n" + "".join(f"{m},{v:.6g}\n" for m, v in masks_mean.items())
    atomic_write(PLOT_FILTERS, lambda fh: fh.write(rows.encode()))


def main(cfg: Config, args: argparse.Namespace) -> None:
    with output_lock(METRICS_DIR):  # one evaluation at a time writes metrics/, predictions/, plots/
        result = evaluate_all(cfg, metrics_dir=METRICS_DIR, predictions_path=PREDICTIONS)
        write_plot_tables(PREDICTIONS, result["masks"]["mean"])
    mean = result["test"]["mean"]
    log.info("test over %d seed(s): %s", len(cfg.train.seeds), ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))


if __name__ == "__main__":
    run("evaluate", main)
