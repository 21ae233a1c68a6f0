"""Offline ``dvc plots``: matplotlib rendering of ``dvc plots show/diff --json`` output, and
an HTML template for DVC's own page with the vega libraries inline.

DVC's own HTML page loads its charting library (vega) from a CDN, so it stays blank
without a network. This module takes the JSON that ``dvc plots show --json`` (or
``dvc plots diff --json REV ...``) prints, which holds every plot's data points already
resolved by DVC (revisions, files, x/y fields), and draws the same plots with matplotlib
into one self-contained HTML page. Understood templates: line-like (``linear``,
``simple``, ``smooth``), ``scatter``, ``bar_horizontal``/``bar_horizontal_sorted`` and
``confusion``/``confusion_normalized``; image plots are embedded as they are.

:func:`offline_vega_template` is the other route: DVC's own interactive page, with local
copies of the vega libraries (e.g. from the npm registry) inlined instead of CDN links.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from m3sa.report.document import Document, Figure, Section, Unavailable
from m3sa.report.figures import Panel, Series, confusion_figure, panels_figure


@dataclass(frozen=True)
class VegaPlot:
    """One DVC plot reduced to what matplotlib needs."""

    title: str
    kind: str  # line | scatter | bar | confusion
    x: str
    y: str
    points: list[dict[str, Any]]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _field(spec: dict[str, Any], channel: str) -> Optional[str]:
    for node in _walk(spec):
        enc = node.get("encoding")
        if isinstance(enc, dict) and isinstance(enc.get(channel), dict) and "field" in enc[channel]:
            return str(enc[channel]["field"])
    return None


def _kind(spec: dict[str, Any]) -> str:
    marks = set()
    for node in _walk(spec):
        mark = node.get("mark")
        marks.add(mark if isinstance(mark, str) else mark.get("type") if isinstance(mark, dict) else None)
    if "rect" in marks:
        return "confusion"
    if "bar" in marks:
        return "bar"
    if "line" not in marks and marks & {"point", "circle"}:
        return "scatter"
    return "line"


def parse_vega(name: str, content: dict[str, Any]) -> Optional[VegaPlot]:
    """A vega-lite spec as DVC fills it (``data.values`` + encodings); None if unusable."""
    values = (content.get("data") or {}).get("values")
    x, y = _field(content, "x"), _field(content, "y")
    if not isinstance(values, list) or x is None or y is None:
        return None
    title = content.get("title")
    title = title.get("text", name) if isinstance(title, dict) else (title or name)
    return VegaPlot(str(title), _kind(content), x, y, [p for p in values if isinstance(p, dict)])


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _series_key(p: dict[str, Any]) -> str:
    parts = [str(p[k]) for k in ("rev", "filename", "field") if p.get(k) not in (None, "")]
    return " · ".join(parts) or "data"


def plot_figures(plot: VegaPlot, dpi: int) -> list[Figure]:
    """PNG figure(s) of one plot: one for line/scatter/bar, one per revision for confusion."""
    slug = "".join(c if c.isalnum() else "_" for c in plot.title).strip("_").lower() or "plot"
    if plot.kind == "confusion":
        figs = []
        for rev in sorted({str(p.get("rev", "")) for p in plot.points}):
            pts = [p for p in plot.points if str(p.get("rev", "")) == rev]
            classes = sorted({str(p.get(plot.x)) for p in pts} | {str(p.get(plot.y)) for p in pts},
                             key=lambda c: (np.isnan(_number(c)), _number(c), c))
            index = {c: i for i, c in enumerate(classes)}
            counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
            for p in pts:
                counts[index[str(p.get(plot.x))], index[str(p.get(plot.y))]] += 1
            png = confusion_figure(counts, dpi, labels=classes, xlabel=plot.y, ylabel=plot.x)
            figs.append(Figure(f"{slug}_{rev}", f"{plot.title} ({rev})", png))
        return figs
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in plot.points:
        groups.setdefault(_series_key(p), []).append(p)
    series = []
    for label, pts in groups.items():
        xs = [_number(p.get(plot.x)) for p in pts]
        if plot.kind == "bar":
            series.append(Series(label, np.asarray(xs), np.asarray([str(p.get(plot.y)) for p in pts])))
        else:
            ys = [_number(p.get(plot.y)) for p in pts]
            order = np.argsort(xs, kind="stable") if plot.kind == "line" else np.arange(len(xs))
            series.append(Series(label, np.asarray(xs)[order], np.asarray(ys)[order]))
    panel = Panel(plot.title, plot.x, plot.y, series, kind=plot.kind)
    return [Figure(slug, plot.title, panels_figure([panel], dpi, ncols=1))]


def _image(name: str, item: dict[str, Any]) -> Optional[Figure]:
    url = item.get("url") or item.get("content")
    if isinstance(url, str) and Path(url).is_file():
        rev = ", ".join(item.get("revisions") or [])
        return Figure(name, f"{name} ({rev})" if rev else name, Path(url).read_bytes())
    return None


def plots_document(data: dict[str, Any], dpi: int = 100, title: str = "DVC plots") -> Document:
    """A report of every plot in ``dvc plots show/diff --json`` output; DVC's errors (a
    missing file in some revision...) become "unreadable" notes."""
    section = Section("Plots")
    for err in data.get("errors") or []:
        section.blocks.append(Unavailable(str(err.get("name") or err.get("source") or "plot"),
                                          f"{err.get('rev', '?')}: {err.get('msg', err.get('type', 'error'))}",
                                          status="Unreadable"))
    revisions: set[str] = set()
    for name, items in (data.get("data") or {}).items():
        for item in items or []:
            revisions.update(item.get("revisions") or [])
            if item.get("type") == "image":
                fig = _image(name, item)
            else:
                plot = parse_vega(name, item.get("content") or {})
                fig = None
                if plot is not None:
                    section.blocks += plot_figures(plot, dpi)
                    continue
            if fig is not None:
                section.blocks.append(fig)
            else:
                section.blocks.append(Unavailable(name, "DVC returned no data this page can draw.", status="Unreadable"))
    summary = [f"Revisions: {', '.join(sorted(revisions)) or 'none'}.",
               "Drawn offline with matplotlib from `dvc plots show/diff --json`; no network needed."]
    return Document(title, summary, [section])


VEGA_TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
{inline_scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_vega_template(js_sources: list[str]) -> str:
    """A ``dvc plots show/diff --html-template`` page that carries vega, vega-lite and
    vega-embed inline (``js_sources``: their minified code, in that order).

    DVC puts its CDN ``<script src=...>`` tags only where a template has a ``{scripts}``
    placeholder; this one has none, so the page DVC writes makes no network request.
    """
    inline = "\n".join("<script>\n" + src.replace("</script", "<\\/script") + "\n</script>" for src in js_sources)
    page = VEGA_TEMPLATE.format(inline_scripts=inline, refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")
    return page
