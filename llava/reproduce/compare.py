"""Published vs reproduced: per-step losses, final losses, eval rows, and the verdict against the tolerances."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from llava.reproduce.inputs import DataCheck
from llava.reproduce.training import StageRun
from llava.typed_config import read_packaged

TOLERANCES = "tolerances.yaml"


def load_tolerances(exact: bool) -> dict[str, float]:
    return read_packaged(resources.files("llava.reproduce").joinpath(TOLERANCES))["exact" if exact else "band"]


@dataclass
class LossComparison:
    stage: str
    steps_compared: int
    first_step: int | None  # the first logged step whose loss is outside the tolerance
    published_at: float | None = None
    reproduced_at: float | None = None
    max_abs_delta: float | None = None
    final_published: float | None = None
    final_reproduced: float | None = None
    within: bool = True
    note: str = ""


@dataclass
class EvalComparison:
    rows: list[dict[str, Any]] = field(default_factory=list)  # name, published, reproduced, delta (points)
    within: bool | None = None  # None: not evaluated
    note: str = ""
    answers_same: int | None = None  # answers identical to the published ones (None: none were published)
    answers_total: int | None = None
    first_answer_apart: int | None = None  # the first question row (TSV index) answered differently


def _answers(path: Path) -> dict[int, Any]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {int(row["index"]): row.get("prediction") for row in lines}


def compare_answers(evaluation: EvalComparison, published: Path | None, reproduced: Path, exact: bool) -> None:
    """Answer by answer; in an exact comparison one different answer is a difference."""
    if published is None or not reproduced.is_file():
        return
    theirs, mine = _answers(published), _answers(reproduced)
    apart = [index for index in sorted(theirs) if mine.get(index) != theirs[index]]
    evaluation.answers_total, evaluation.answers_same = len(theirs), len(theirs) - len(apart)
    evaluation.first_answer_apart = apart[0] if apart else None
    if exact and apart:
        evaluation.within = False


def compare_losses(stage: dict[str, Any], run: StageRun, tol: dict[str, float]) -> LossComparison:
    published = {int(step): loss for step, loss in stage.get("loss_history") or []}
    reproduced = {int(step): loss for step, loss in run.loss_history}
    common = sorted(set(published) & set(reproduced))
    result = LossComparison(stage["name"], len(common), None, final_published=stage["metrics"].get("train_loss"),
                            final_reproduced=run.train_loss)
    deltas = {step: abs(reproduced[step] - published[step]) for step in common}
    if deltas:
        result.max_abs_delta = max(deltas.values())
    result.first_step = next((step for step in common if deltas[step] > tol["loss_abs"]), None)
    missing = sorted(set(published) ^ set(reproduced))
    if result.first_step is None and missing and published:
        result.first_step = missing[0]
        result.note = f"logged steps differ (first one only in one run: {missing[0]})"
    if result.first_step is not None and result.first_step in deltas:
        result.published_at, result.reproduced_at = published[result.first_step], reproduced[result.first_step]
    final_ok = True
    if result.final_published is not None and result.final_reproduced is not None:
        allowed = tol["final_loss_relative"] * abs(result.final_published)
        final_ok = abs(result.final_reproduced - result.final_published) <= allowed
    result.within = final_ok and result.first_step is None
    return result


def compare_eval(recorded: dict[str, Any], reproduced: dict[str, Any] | None, tol: dict[str, float],
                 exact: bool) -> EvalComparison:
    if reproduced is None:
        return EvalComparison(note="not evaluated: the last recorded stage was not part of this reproduction")
    mine = {row["name"]: row["value"] for row in reproduced["rows"]}
    rows = [{"name": row["name"], "published": row["value"], "reproduced": mine.get(row["name"]),
             "delta": None if mine.get(row["name"]) is None else 100 * (mine[row["name"]] - row["value"])}
            for row in recorded["rows"]]
    held = rows if exact else [row for row in rows if row["name"] == "Overall"]
    within = all(row["delta"] is not None and abs(row["delta"]) <= tol["eval_points"] for row in held)
    return EvalComparison(rows, within)


@dataclass
class Verdict:
    word: str  # "reproduced" | "not reproduced" | "incomplete"
    reasons: list[str]


def verdict(losses: list[LossComparison], evaluation: EvalComparison, data: list[DataCheck],
            runs: list[StageRun], complete: bool) -> Verdict:
    reasons = []
    for check in data:
        if check.matches is False:
            reasons.append(f"{check.stage} data differs from the record: {check.dataset}, first differing sample "
                           f"`{check.first_sample}`")
    for run in runs:
        for key, trained, recorded in run.recipe_changes:
            reasons.append(f"{run.name} recipe in the record differs from the one its training recorded: `{key}` "
                           f"(trained {trained!r}, record {recorded!r})")
    for loss in losses:
        if loss.first_step is not None:
            at = ("" if loss.published_at is None else
                  f" (published {loss.published_at!r}, reproduced {loss.reproduced_at!r})")
            reasons.append(f"{loss.stage} loss parts at step {loss.first_step}{at}")
        elif not loss.within:
            reasons.append(f"{loss.stage} final loss outside the band")
    if evaluation.within is False:
        apart = ("" if evaluation.first_answer_apart is None else
                 f"; first question answered differently: index {evaluation.first_answer_apart}")
        reasons.append(f"eval results differ beyond the tolerance{apart}")
    if reasons:
        return Verdict("not reproduced", reasons)
    if not complete or evaluation.within is None:
        return Verdict("incomplete", ["only part of the recorded run was reproduced; what ran matches"])
    return Verdict("reproduced", [])
