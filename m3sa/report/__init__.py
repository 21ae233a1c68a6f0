"""The run report: pipeline outputs -> ``reports/report.md`` + self-contained ``report.html``.

Entry points: :func:`build_report` (a :class:`~m3sa.report.document.Document` from the
outputs under a repository root; missing inputs become "not yet run" sections) and
:func:`write_report` (Markdown, HTML and ``figures/*.png``). Modules: ``inputs`` (reading),
``experiments`` (Tables 3-4 entries), ``published`` (the paper's numbers), ``stats``,
``tables``, ``figures``, ``provenance``, ``document``, ``markdown``, ``html``, ``build``,
``dvcplots`` (offline rendering of ``dvc plots`` output).
"""

from m3sa.report.build import build_report, describe_dataset, write_report
from m3sa.report.document import Document
from m3sa.report.html import external_urls, render_html
from m3sa.report.markdown import render_markdown

__all__ = ["Document", "build_report", "describe_dataset", "external_urls", "render_html", "render_markdown",
           "write_report"]
