"""Circular scoring (evaluation.md §3.2): a question counts only if every one of its passes is right.

Under the exact-matching judge a group is decided by the prefetch step alone: any pass whose
answer is read as a wrong letter sinks the question; all passes read and right make it count;
anything else (some pass unreadable, none wrong) is undecided and scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava.errors import KitError
from llava.evaluate.matching import can_infer, prediction_as_scored
from llava.evaluate.mmbench_tsv import McqRow


@dataclass(frozen=True)
class QuestionResult:
    index: int  # the base question's index (VLMEvalKit's g_index)
    category: str
    l2_category: str
    split: str
    hit: int
    verdict: str  # "correct" | "wrong" | "undecided"
    answers: str  # ground-truth letters of the passes, e.g. "B|A|D|C"
    inferred: str  # letters read from the predictions, "-" where none, e.g. "B|A|-|C"
    log: str


def _read(row: McqRow, prediction: object) -> str | None:
    """The letter the pinned VLMEvalKit reads from one pass (the same rule with or without circular passes)."""
    return can_infer(prediction_as_scored(prediction), dict(row.options))


def score_group(passes: list[McqRow], predictions: dict[int, object]) -> QuestionResult:
    """Score one question from its passes (base row first) and the raw predictions by row index."""
    inferred = [_read(row, predictions[row.index]) for row in passes]
    wrong = [(row, got) for row, got in zip(passes, inferred) if got is not None and got != row.answer]
    if wrong:
        row, got = wrong[0]
        verdict, hit = "wrong", 0
        log = f"row {row.index}: answer {row.answer}, read {got} from {predictions[row.index]!r}"
    elif all(got is not None for got in inferred):
        verdict, hit, log = "correct", 1, "every pass read and right"
    else:
        verdict, hit = "undecided", 0
        unread = [row.index for row, got in zip(passes, inferred) if got is None]
        log = f"no option letter could be read for pass(es) {unread}; exact matching scores 0"
    base = passes[0]
    return QuestionResult(
        index=base.question_index, category=base.category, l2_category=base.l2_category, split=base.split,
        hit=hit, verdict=verdict, answers="|".join(r.answer for r in passes),
        inferred="|".join(got or "-" for got in inferred), log=log,
    )


def _groups(rows: list[McqRow], circular: bool) -> dict[int, list[McqRow]]:
    groups: dict[int, list[McqRow]] = {}
    for row in rows:
        key = row.question_index if circular else row.index
        groups.setdefault(key, []).append(row)
    for passes in groups.values():
        passes.sort(key=lambda r: r.index)  # the base row first, then pass 1, 2, 3
    return groups


def check_prediction_indices(rows: list[McqRow], predictions: dict[int, object], source: str) -> None:
    """Predictions must be a subset of the benchmark's rows (as VLMEvalKit asserts)."""
    unknown = sorted(set(predictions) - {row.index for row in rows})
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
        raise KitError(
            f"{source}: {len(unknown)} prediction(s) for indices that are not in the TSV: {shown}; "
            "score predictions against the TSV they were made for"
        )


def score_questions(rows: list[McqRow], predictions: dict[int, object], *, circular: bool,
                    source: str = "predictions") -> list[QuestionResult]:
    """Score every question whose base row was predicted; each of its passes must be predicted too."""
    check_prediction_indices(rows, predictions, source)
    results = []
    for key, passes in _groups(rows, circular).items():
        if passes[0].index not in predictions:
            continue
        missing = [row.index for row in passes if row.index not in predictions]
        if missing:
            raise KitError(
                f"{source}: question {key} has no prediction for pass(es) {missing}; a circular question "
                "is scored on all its passes (finish the run, or resume it with the same --out)"
            )
        results.append(score_group(passes, predictions))
    if not results:
        raise KitError(f"{source}: no question has a prediction for its base row; nothing to score")
    return results


def chance_level(rows: list[McqRow], *, circular: bool) -> float:
    """Expected score of uniform random answers: per question, the product of 1/options over its passes."""
    total = 0.0
    groups = _groups(rows, circular)
    for passes in groups.values():
        p = 1.0
        for row in passes:
            p /= max(1, len(row.options))
        total += p
    return total / max(1, len(groups))
