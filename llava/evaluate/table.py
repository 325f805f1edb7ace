"""The accuracy table in VLMEvalKit's layout (`report_acc`, evaluation.md §3.4) and its acc.csv.

Columns: split, Overall, the l2 abilities (sorted by full name, written abbreviated), then the
leaf categories (sorted); one row per split; every cell quoted (csv.QUOTE_ALL).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

from llava.durable import write_text
from llava.errors import KitError
from llava.evaluate.circular import QuestionResult

L2_ABBREVIATIONS = {
    "attribute_reasoning": "AR",
    "coarse_perception": "CP",
    "finegrained_perception (cross-instance)": "FP-C",
    "finegrained_perception (instance-level)": "FP-S",
    "logic_reasoning": "LR",
    "relation_reasoning": "RR",
}


@dataclass(frozen=True)
class SplitRow:
    split: str
    values: dict[str, float]  # column name -> accuracy, in table order (Overall first)


def _mean(hits: list[int]) -> float:
    return sum(hits) / len(hits)  # equals np.mean on 0/1 hits bit for bit


def accuracy_table(results: list[QuestionResult]) -> list[SplitRow]:
    """Mean hit per split: overall, per l2 ability, per leaf category."""
    table = []
    for split in sorted({r.split for r in results}):
        mine = [r for r in results if r.split == split]
        values = {"Overall": _mean([r.hit for r in mine])}
        for l2 in sorted({r.l2_category for r in results}):
            hits = [r.hit for r in mine if r.l2_category == l2]
            values[L2_ABBREVIATIONS.get(l2, l2)] = _mean(hits) if hits else float("nan")
        for leaf in sorted({r.category for r in results}):
            hits = [r.hit for r in mine if r.category == leaf]
            values[leaf] = _mean(hits) if hits else float("nan")
        table.append(SplitRow(split, values))
    return table


def acc_csv_text(table: list[SplitRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["split", *table[0].values])
    for row in table:
        writer.writerow([row.split, *(repr(v) for v in row.values.values())])
    return buffer.getvalue()


def write_acc_csv(table: list[SplitRow], path: Path) -> Path:
    return write_text(path, acc_csv_text(table))


def read_acc_csv(path: str | os.PathLike) -> list[SplitRow]:
    """Read an `_acc.csv` as VLMEvalKit writes it (header row, one row per split)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    if not lines or lines[0][:2] != ["split", "Overall"]:
        raise KitError(f"{path}: expected VLMEvalKit's acc.csv layout starting with columns split, Overall; "
                       f"got {lines[0][:3] if lines else 'an empty file'}")
    header, table = lines[0], []
    for number, cells in enumerate(lines[1:], start=2):
        if len(cells) != len(header):
            raise KitError(f"{path}: line {number} has {len(cells)} cells, the header has {len(header)}")
        try:
            values = {name: float(cell) for name, cell in zip(header[1:], cells[1:])}
        except ValueError as err:
            raise KitError(f"{path}: line {number}: {err}") from err
        table.append(SplitRow(cells[0], values))
    if not table:
        raise KitError(f"{path}: no split rows below the header")
    return table
