"""Stage ``report``: pipeline outputs -> reports/report.md, reports/report.html, reports/figures/.

Reads whatever of data/features/meta.json, metrics/*.json, predictions/test.parquet,
dvclive/ curves, results/experiments.json and dvc.lock exists; a missing input becomes a
"not yet run" section of the report.
"""

from __future__ import annotations

import argparse
import logging
import time

from m3sa.config import Config
from m3sa.report import build_report, write_report
from stages._cli import run

log = logging.getLogger("stages.report")

OUT_DIR = "reports"


def main(cfg: Config, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    out = getattr(args, "out", OUT_DIR)
    doc = build_report(cfg, root=".", started_at=start)
    written = write_report(doc, out)
    missing = [f"{u.what} ({u.status.lower()})" for u in doc.unavailable()]
    log.info("wrote %d files under %s in %.1f s", len(written), out, time.perf_counter() - start)
    if missing:
        log.info("sections without data: %s", "; ".join(missing))


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=OUT_DIR, help=f"output folder (default: {OUT_DIR}, as dvc.yaml declares)")


if __name__ == "__main__":
    run("report", main, extra=_extra)
