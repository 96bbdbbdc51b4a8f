"""The report as a document: sections of prose, tables and figures, before any rendering.

The renderers (Markdown, LaTeX, HTML, CSV) each walk this structure; building it once keeps the
outputs consistent with each other (the same tables, the same numbers, the same order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pspo_eval.report.tables import Table


@dataclass
class Figure:
    name: str  # file stem: figures/<name>.png
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # "nothing to show because …"


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]
    highlights: list[tuple[str, str]] = field(default_factory=list)  # (label, value) cards at the top
    provenance: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [t for s in self.sections for t in s.tables]

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]
