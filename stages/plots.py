"""``python -m stages.plots``: the pipeline's ``dvc plots`` as one self-contained HTML page.

``dvc plots show`` / ``dvc plots diff`` write an HTML page that loads vega from a CDN, so
it stays blank offline. This command asks DVC for the same plots as JSON (``dvc plots
show --json``, or ``dvc plots diff --json REV ...`` when revisions are given) and draws
them with matplotlib into ``--out`` (default ``dvc_plots/index.html``, where DVC puts its
own page). With ``--vega-template OUT --vega-js FILES`` it instead writes an HTML template
for DVC's own page that carries local copies of vega, vega-lite and vega-embed inline
(``dvc plots show --html-template OUT``). See docs/plots.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

from m3sa.atomic import write_atomic
from m3sa.config import Config
from m3sa.errors import DataError
from m3sa.report.dvcplots import offline_vega_template, plots_document
from m3sa.report.html import render_html
from stages._cli import run

log = logging.getLogger("stages.plots")


def dvc_plots_json(revisions: list[str], targets: list[str]) -> dict:
    """Run ``dvc plots show|diff --json`` in the current repository and parse its output."""
    cmd = [sys.executable, "-m", "dvc", "plots", "diff" if revisions else "show", "--json", *revisions]
    if targets:
        cmd += ["--targets", *targets]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`{' '.join(cmd[2:])}` failed: {last}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise DataError(f"`{' '.join(cmd[2:])}` printed no JSON ({err})") from None


def _write(out: Path, text: str) -> None:
    write_atomic(out, text)  # OutputError naming the file; never half a page


def write_vega_template(out: Path, js_files: list[str]) -> None:
    """``--vega-template``: DVC HTML template with the given JS files inline."""
    if len(js_files) != 3:
        raise DataError("--vega-js needs three files, in order: vega.min.js vega-lite.min.js vega-embed.min.js")
    sources = []
    for name in js_files:
        try:
            sources.append(Path(name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{name}: cannot read ({err})") from None
    _write(out, offline_vega_template(sources))
    log.info("wrote %s; use it with `dvc plots show --html-template %s`", out, out)


def main(cfg: Config, args: argparse.Namespace) -> None:
    if args.vega_template:
        write_vega_template(Path(args.vega_template), args.vega_js)
        return
    if args.json:
        path = Path(args.json)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: cannot read DVC plots JSON ({err})") from None
    else:
        data = dvc_plots_json(args.revisions, args.targets)
    title = "DVC plots" + (f": {' vs '.join(['workspace', *args.revisions])}" if args.revisions else "")
    doc = plots_document(data, dpi=cfg.report.dpi, title=title)
    out = Path(args.out)
    _write(out, render_html(doc))
    log.info("wrote %s (%d figures, %d problems)", out, len(doc.figures()), len(doc.unavailable()))


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("revisions", nargs="*", metavar="REV",
                        help="compare the workspace with these git revisions (as `dvc plots diff REV ...`)")
    parser.add_argument("--targets", nargs="+", default=[], help="only these plots (as dvc's --targets)")
    parser.add_argument("--json", help="read `dvc plots ... --json` output from this file instead of running dvc")
    parser.add_argument("--out", default="dvc_plots/index.html", help="output HTML (default: dvc_plots/index.html)")
    parser.add_argument("--vega-template", metavar="OUT",
                        help="instead: write a DVC --html-template with the vega libraries inline to OUT")
    parser.add_argument("--vega-js", nargs="+", default=[], metavar="FILE",
                        help="with --vega-template: vega.min.js vega-lite.min.js vega-embed.min.js (in this order)")


if __name__ == "__main__":
    run("plots", main, extra=_extra)
