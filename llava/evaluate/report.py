"""What an eval leaves behind: results.json (contracts.md), table.md, questions.csv, acc.csv.

Rows are compared with the suite's reference tables (the seed reproduction and the official
model) where the suite has them.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llava.durable import write_text
from llava.evaluate.circular import QuestionResult
from llava.evaluate.suite import Suite
from llava.evaluate.table import SplitRow
from llava.markdown import markdown_table


def _delta(value: float, reference: float | None) -> float | None:
    return None if reference is None else value - reference


def comparison_rows(split_row: SplitRow, suite: Suite) -> list[dict[str, Any]]:
    """results.json rows: this run's value next to the seed and official values and the deltas."""
    seed = suite.references.get("seed")
    official = suite.references.get("official")
    rows = []
    for name, value in split_row.values.items():
        seed_value = seed.rows.get(name) if seed else None
        official_value = official.rows.get(name) if official else None
        rows.append({
            "name": name, "value": value, "seed": seed_value, "official": official_value,
            "delta_seed": _delta(value, seed_value), "delta_official": _delta(value, official_value),
        })
    return rows


def pick_split(table: list[SplitRow], split: str) -> SplitRow:
    for row in table:
        if row.split == split:
            return row
    return table[0]


def results_document(*, suite: Suite, backend: str, table: list[SplitRow], n_questions: int,
                     checkpoint: str | None, weights_sha256: str | None,
                     vlmevalkit_commit: str | None) -> dict[str, Any]:
    split_row = pick_split(table, suite.split)
    return {
        "suite": suite.name,
        "dataset": suite.dataset,
        "backend": backend,
        "judge": suite.judge,
        "vlmevalkit_commit": vlmevalkit_commit,
        "checkpoint": checkpoint,
        "weights_sha256": weights_sha256,
        "split": split_row.split,
        "rows": comparison_rows(split_row, suite),
        "n_questions": n_questions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _points(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def _cells(row: dict, references: list) -> list[str]:
    cells = [row["name"], _pct(row["value"])]
    for key, _ in references:
        cells += [_pct(row[key]), _points(row[f"delta_{key}"])]
    return cells


def table_markdown(results: dict[str, Any], suite: Suite) -> str:
    """A readable table: accuracy in %, deltas in percentage points."""
    sha = (results["weights_sha256"] or "unknown")[:12]
    lines = [
        f"# {results['dataset']} ({results['split']}): {results['n_questions']} questions",
        "",
        f"- checkpoint: `{results['checkpoint'] or 'not given'}` (weights sha256 {sha})",
        f"- backend: {results['backend']}; judge: {results['judge']} (no LLM answer extraction); "
        f"{'circular (a question counts only if every rotated pass is right)' if suite.circular else 'single pass'}"
        + single_pass_note(results),
        f"- VLMEvalKit: {results['vlmevalkit_commit'] or 'not run (built-in scorer following its exact-matching rules)'}",
        "",
    ]
    references = [(key, suite.references[key]) for key in ("seed", "official") if key in suite.references]
    header = ["row", "this run"]
    for key, _ in references:
        header += [key, f"Δ {key}"]
    lines += markdown_table(header, [_cells(row, references) for row in results["rows"]], "l" + "r" * (len(header) - 1))
    lines += ["", "Accuracy in %" + (", Δ in percentage points (this run minus reference)." if references else ".")]
    for key, ref in references:
        lines.append(f"- {key}: {ref.label}; {ref.source}")
    return "\n".join(lines) + "\n"


def single_pass_note(results: dict[str, Any]) -> str:
    """In a circular suite, the questions asked once only (VLMEvalKit leaves them un-rotated too)."""
    count = results.get("single_pass_questions")
    if not count:
        return ""
    return (f"; but {count} of {results['n_questions']} questions have one pass only in the TSV and are scored on "
            "it (write_mmbench_tsv, like VLMEvalKit, rotates no question whose options are single capital "
            "letters or name two option letters)")


def questions_csv_text(results: list[QuestionResult]) -> str:
    buffer = io.StringIO()
    fields = list(QuestionResult.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in results)
    return buffer.getvalue()


def write_results_json(path: Path, results: dict[str, Any]) -> Path:
    return write_text(path, json.dumps(results, indent=2) + "\n")


def artifacts_markdown(out_dir: Path, results: dict[str, Any], *, loss_chart: Path | None) -> str:
    """The chance level, the loss curves, and the absolute path of every file the eval wrote."""
    out_dir = Path(out_dir).resolve()
    lines = [""]
    if results.get("chance") is not None:
        lines.append(f"Chance (uniform random answers, every pass): {100 * results['chance']:.2f}% Overall.")
    if loss_chart is not None:
        lines += ["", f"![training loss per stage]({loss_chart.name})"]
    if results.get("checkpoint") and Path(results["checkpoint"]).is_dir():
        from llava.evaluate.loss_curves import unlogged_stages

        lines += [f"\n{note}." for note in unlogged_stages(Path(results["checkpoint"]))]
    lines += ["", "Files:"]
    names = ("acc.csv", "results.json", "table.md", "chart.png", "loss.png", "predictions.jsonl", "questions.csv")
    lines += [f"- `{out_dir / name}`" for name in names if (out_dir / name).is_file() or name == "table.md"]
    if results.get("checkpoint"):
        lines.append(f"- checkpoint: `{Path(results['checkpoint']).resolve()}`")
    return "\n".join(lines) + "\n"
