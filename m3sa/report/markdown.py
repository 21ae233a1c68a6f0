"""Render a :class:`~m3sa.report.document.Document` as Markdown (images as files beside it)."""

from __future__ import annotations

from m3sa.report.document import Document, Figure, Unavailable, Paragraph, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    lines = [f"**{table.caption}**", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    return "\n".join(lines)


def render_markdown(doc: Document, figures_dir: str = "figures") -> str:
    """The report as Markdown; figure ``f`` is linked as ``{figures_dir}/{f.name}.png``."""
    out = [f"# {doc.title}", ""]
    out += [f"- {line}" for line in doc.summary]
    out.append("")
    for section in doc.sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                out.append(block.text)
            elif isinstance(block, Table):
                out.append(table_markdown(block))
            elif isinstance(block, Figure):
                out.append(f"![{_cell(block.caption)}]({figures_dir}/{block.name}.png)")
                out += ["", f"*{block.caption}*"]
            elif isinstance(block, Unavailable):
                text = f"> **{block.status}: {block.what}.** {block.reason}"
                if block.how:
                    text += f" {block.how}"
                out.append(text)
            out.append("")
    return "\n".join(out).rstrip() + "\n"
