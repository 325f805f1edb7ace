"""Markdown tables for reports, eval tables and bench results.

Hand-written on purpose: tabulate (and pandas' to_markdown, which uses it) pads every cell to its column's
width, so one wider value rewrites every line; here a row's text depends on that row alone, which keeps
cards and reports diffable and their rows greppable ("| Overall | 50.00 |").
"""

from __future__ import annotations

from typing import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """The table's lines; `align` has one letter per column, "r" right-aligns it (default left)."""
    rule = "".join("|---:" if align[i:i + 1] == "r" else "|---" for i in range(len(header))) + "|"
    return [markdown_row(header), rule, *(markdown_row(cells) for cells in rows)]


def markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
