"""Exact-matching answer extraction, following VLMEvalKit HEAD's rules (evaluation.md §3.3).

Written from the documented rules (not from VLMEvalKit's source): a prediction is read as an
option letter if it names exactly one option letter near its end, as 'Z' on a refusal, via an
"answer is X" phrase, or else as the one option whose text it contains.
"""

from __future__ import annotations

import math
import re

API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
PUNCTUATION_AS_SPACE = ".()[],:;!*#{}"
# Only the letter must be among the last four tokens (VLMEvalKit c3371551).
LETTER_WINDOW = 4
ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
# pandas turns these cells into NaN when VLMEvalKit reads its prediction .xlsx back, and the
# scorer then sees the string 'nan'.
_READ_AS_NAN = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


def prediction_as_scored(prediction: object) -> str:
    """The text VLMEvalKit's scorer sees after its xlsx round trip: str(), NaN-like cells -> 'nan'."""
    if prediction is None or (isinstance(prediction, float) and math.isnan(prediction)):
        return "nan"
    text = str(prediction)
    return "nan" if text in _READ_AS_NAN else text


def _tokens(answer: str) -> list[str]:
    for char in PUNCTUATION_AS_SPACE:
        answer = answer.replace(char, " ")
    return answer.split()


def can_infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """Read an option letter (or 'Z' for a refusal) from the answer's tokens; None if undecided."""
    if API_FAILURE in answer:
        return None
    if any(phrase in answer for phrase in REFUSALS):
        return "Z"
    tokens = _tokens(answer)
    named = [letter for letter in choices if letter in tokens]  # case-sensitive whole tokens
    if len(named) == 1:
        letter = named[0]
        if tokens.index(letter) > len(tokens) - 1 - LETTER_WINDOW:
            return letter
    elif not named and "Z" in tokens:
        return "Z"
    match = ANSWER_IS.search(answer)
    return match.group(1).upper() if match else None


def can_infer_text(answer: str, choices: dict[str, str]) -> str | None:
    """The letter of the one option whose text the answer contains (case-insensitive).

    Answers more than twice as long as all option texts together are not read at all.
    """
    answer = answer.lower()
    if len(answer) > 2 * sum(len(str(text)) for text in choices.values()):
        return None
    found = [letter for letter, text in choices.items() if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def can_infer(prediction: object, choices: dict[str, str]) -> str | None:
    answer = str(prediction)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)
