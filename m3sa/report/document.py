"""The report as data: sections of paragraphs, tables, figures and not-yet-run notes.

Built once by :mod:`m3sa.report.build`, then rendered to Markdown
(:mod:`m3sa.report.markdown`) and to self-contained HTML (:mod:`m3sa.report.html`), so
both carry the same content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union


@dataclass(frozen=True)
class Paragraph:
    """Plain text; `backticks` mark code. No other markup."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table of pre-formatted cells. ``row_kinds[i]`` styles row i (e.g. "published")."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    row_kinds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"table '{self.caption}': row {i} has {len(row)} cells, header has {len(self.header)}")


@dataclass(frozen=True)
class Figure:
    """A PNG figure; ``name`` is its file stem under ``figures/``."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Unavailable:
    """Placeholder for content that cannot be shown: its inputs do not exist yet
    (``status`` "Not yet run"), could not be read ("Unreadable"), or do not apply to this
    run ("Not applicable"). ``how`` says what produces the missing input."""

    what: str
    reason: str
    how: str = ""
    status: str = "Not yet run"


Block = Union[Paragraph, Table, Figure, Unavailable]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.title)


@dataclass
class Document:
    title: str
    summary: list[str]
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def unavailable(self) -> list[Unavailable]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Unavailable)]


def slug(text: str) -> str:
    """Lower-case anchor id: ``"3. Results (Table 1)"`` -> ``"3-results-table-1"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
