"""Render a :class:`~m3sa.report.document.Document` as one self-contained HTML file.

Figures are embedded as base64 ``data:`` URIs and the stylesheet is inline: the page
makes no network request and has no script. It reads on a laptop screen (a centred
column, tables scroll sideways when wide) and prints (no navigation, no split figures).
"""

from __future__ import annotations

import base64
import html
import re

from m3sa.report.document import Document, Figure, Paragraph, Table, Unavailable

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #2456a6; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: var(--ink); line-height: 1.45; max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.5rem 3rem; }
h1 { font-size: 1.7rem; margin: 0 0 .6rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .7rem; padding-bottom: .25rem; border-bottom: 2px solid var(--line); }
p, li { max-width: 75ch; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .88em; background: #f1f3f7;
       padding: 0 .25em; border-radius: 3px; }
ul.summary { padding-left: 1.2rem; }
nav.toc { background: #f6f8fb; border: 1px solid var(--line); border-radius: 6px; padding: .5rem 1rem; margin: 1rem 0; }
nav.toc ul { margin: .3rem 0; padding-left: 0; list-style: none; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.table-wrap { overflow-x: auto; margin: .8rem 0 1.4rem; }
table { border-collapse: collapse; font-size: .86rem; }
p.caption { font-weight: 600; margin: 0 0 .4rem; }
th, td { padding: .28rem .6rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef1f6; }
th.num { text-align: right; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.run td:first-child { font-weight: 600; }
tr.published td { color: var(--muted); background: #fafbfc; font-style: italic; }
tr.run + tr.published td { border-top: 2px solid #b9c2d0; }
ul.notes { margin: .35rem 0 0; padding-left: 1.1rem; font-size: .8rem; color: var(--muted); }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: .85rem; color: var(--muted); margin-top: .3rem; }
.unavailable { border-left: 4px solid #d39e00; background: #fff8e1; padding: .55rem .9rem; margin: .8rem 0; }
.unavailable strong { color: #7a5a00; }
@media print {
  @page { margin: 14mm; }
  body { max-width: none; padding: 0; font-size: 10pt; }
  table { font-size: 7.5pt; max-width: 100%; }
  th, td { padding: .15rem .3rem; overflow-wrap: anywhere; }
  nav.toc { display: none; }
  h2 { break-after: avoid; }
  figure, .unavailable, tr { break-inside: avoid; }
  p.caption { break-after: avoid; }
  .table-wrap { overflow: visible; }
  figure img { max-height: 190mm; width: auto; }
}
"""

_NUMERIC = re.compile(r"^[-+−]?[\d.,]+( ± [\d.,]+)?%?( \(n=\d+\))?$")


def _inline(text: str) -> str:
    """Escape ``text``; `backticks` become <code>."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _numeric_columns(t: Table) -> list[bool]:
    """A column is right-aligned when every cell is a number (dashes allowed)."""
    cols = []
    for j in range(len(t.header)):
        cells = [row[j] for row in t.rows if row[j] not in ("–", "n/a")]
        cols.append(j > 0 and bool(cells) and all(_NUMERIC.match(c) for c in cells))
    return cols


def _table(t: Table) -> str:
    numeric = _numeric_columns(t)
    head = "".join(('<th class="num">' if numeric[j] else "<th>") + f"{html.escape(h)}</th>"
                   for j, h in enumerate(t.header))
    body = []
    for i, row in enumerate(t.rows):
        kind = t.row_kinds[i] if i < len(t.row_kinds) else ""
        cls = f' class="{html.escape(kind)}"' if kind else ""
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if numeric[j] else f"<td>{_inline(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    notes = ("<ul class=\"notes\">" + "".join(f"<li>{_inline(n)}</li>" for n in t.notes) + "</ul>") if t.notes else ""
    return (f'<div class="table-wrap"><p class="caption">{_inline(t.caption)}</p><table><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table>{notes}</div>")


def _figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="fig-{html.escape(f.name)}"><img alt="{html.escape(f.caption)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_inline(f.caption)}</figcaption></figure>')


def _unavailable(u: Unavailable) -> str:
    how = f" {_inline(u.how)}" if u.how else ""
    return (f'<div class="unavailable"><strong>{html.escape(u.status)}: {html.escape(u.what)}.</strong> '
            f"{_inline(u.reason)}{how}</div>")


def render_html(doc: Document) -> str:
    """The report as one HTML page with no external reference."""
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
           f"<h1>{html.escape(doc.title)}</h1>",
           '<ul class="summary">' + "".join(f"<li>{_inline(s)}</li>" for s in doc.summary) + "</ul>",
           '<nav class="toc"><strong>Contents</strong><ul>'
           + "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in doc.sections)
           + "</ul></nav>"]
    for section in doc.sections:
        out.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Table):
                out.append(_table(block))
            elif isinstance(block, Figure):
                out.append(_figure(block))
            elif isinstance(block, Unavailable):
                out.append(_unavailable(block))
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


_TAG = re.compile(r"<[a-zA-Z][^>]*>")
_ATTR = re.compile(r"""\s(?:src|href|srcset|action|poster|data|formaction)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""",
                   re.I)
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>|\sstyle\s*=\s*\"([^\"]*)\"", re.I | re.S)
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", re.I)


def external_urls(page: str) -> list[str]:
    """Every src/href-like attribute (and CSS url()/@import) target that is not a ``data:``
    URI or an in-page ``#anchor``: each would make the browser load something from elsewhere."""
    found = [next(g for g in m.groups() if g is not None) for tag in _TAG.findall(page) for m in _ATTR.finditer(tag)]
    for block in _STYLE.finditer(page):
        css = block.group(1) or block.group(2) or ""
        found += [a or b for a, b in _CSS_URL.findall(css)]
    return [u for u in found if not (u.startswith("#") or u.strip().lower().startswith("data:"))]
