"""The reproduction report: report.md, report.json and loss.png (published and reproduced curves overlaid)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llava.durable import write_text
from llava.markdown import markdown_table
from llava.reproduce.compare import EvalComparison, LossComparison, Verdict
from llava.reproduce.environment import EnvironmentDiff
from llava.reproduce.inputs import DataCheck


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_chart(record: dict[str, Any], checkpoint: Path | None, path: Path) -> Path | None:
    """Reproduced curves from the stage manifests (loss_curves.py), each with its published curve over it."""
    from llava.evaluate.chart import write_loss_chart
    from llava.evaluate.loss_curves import lineage_curves

    if checkpoint is None:
        return None
    published = {stage["name"]: stage.get("loss_history") or [] for stage in record["stages"]}
    curves = [curve for curve in lineage_curves(checkpoint) if curve["stage"] in published]
    for curve in curves:
        history = published[curve["stage"]]
        curve["label"] = "reproduced"
        curve["reference"] = {"steps": [s for s, _ in history], "losses": [v for _, v in history],
                              "label": "published"}
    return write_loss_chart(curves, path, "reproduce: training loss per stage") if curves else None


def _sections(origin: str, environment: EnvironmentDiff, tolerances: dict[str, float], data: list[DataCheck],
              losses: list[LossComparison], evaluation: EvalComparison) -> list[str]:
    lines = [f"Record: {origin}.", "", "## Environment", ""]
    lines += [f"- {item}" for item in environment.differences] or ["- identical to the recorded run"]
    lines += ["", f"What that means: {environment.meaning}. Tolerances: per logged step |Δloss| ≤ "
              f"{tolerances['loss_abs']}, final loss within {100 * tolerances['final_loss_relative']:g} %, "
              f"accuracy within {tolerances['eval_points']} points.", "", "## Inputs", ""]
    lines += markdown_table(["stage", "dataset", "same samples", "note"],
                            [(c.stage, c.dataset, {True: "yes", False: "**no**", None: "not checked"}[c.matches],
                              c.note) for c in data]) if data else ["No stage data was checked."]
    lines += ["", "## Training loss", ""]
    lines += markdown_table(
        ["stage", "steps compared", "first step apart", "max abs Δ per step", "final published", "final reproduced"],
        [(l.stage, l.steps_compared, "none" if l.first_step is None else l.first_step,
          _num(l.max_abs_delta, 6), _num(l.final_published), _num(l.final_reproduced)) for l in losses])
    lines += ["", "![published and reproduced training loss per stage](loss.png)", "", "## Eval", ""]
    if evaluation.within is None:
        lines.append(evaluation.note)
    else:
        lines += markdown_table(["row", "published", "reproduced", "Δ (points)"],
                                [(r["name"], _num(r["published"]), _num(r["reproduced"]),
                                  "–" if r["delta"] is None else f"{r['delta']:+.2f}") for r in evaluation.rows])
        if evaluation.answers_total is not None:
            apart = ("" if evaluation.first_answer_apart is None
                     else f"; the first one answered differently is question row {evaluation.first_answer_apart}")
            lines += ["", f"Answers identical to the published ones: {evaluation.answers_same} of "
                          f"{evaluation.answers_total}{apart}."]
    return lines


def write_report(out: Path, *, origin: str, record: dict[str, Any], environment: EnvironmentDiff,
                 tolerances: dict[str, float], data: list[DataCheck], losses: list[LossComparison],
                 evaluation: EvalComparison, verdict: Verdict, checkpoint: Path | None) -> dict[str, Any]:
    chart = write_chart(record, checkpoint, out / "loss.png")
    lines = [f"# Reproduction: {verdict.word}", "", record["what"]["description"], ""]
    lines += [f"**Verdict: {verdict.word}.**"] + [f"- {reason}" for reason in verdict.reasons] + [""]
    lines += _sections(origin, environment, tolerances, data, losses, evaluation)
    if chart is None:
        lines = [line for line in lines if "(loss.png)" not in line]
    write_text(out / "report.md", "\n".join(lines) + "\n")
    body = {"verdict": verdict.word, "reasons": verdict.reasons, "origin": origin,
            "environment": asdict(environment), "tolerances": tolerances, "data": [asdict(c) for c in data],
            "losses": [asdict(l) for l in losses], "eval": asdict(evaluation),
            "chart": str(chart) if chart else None}
    write_text(out / "report.json", json.dumps(body, indent=2))
    return body
