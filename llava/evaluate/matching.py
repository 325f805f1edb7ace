"""Exact-matching answer extraction, as the pinned VLMEvalKit artifact does it (ms-vlmeval 0.0.20).

Written from that artifact's behaviour (vlmeval/utils/matching_util.py: can_infer, can_infer_option,
can_infer_text), not copied: a prediction is read as an option letter if it names exactly one option
letter as a whole token among its last four tokens, as 'Z' on a refusal or a lone 'Z' token, else as the
one option whose text it contains. There is no "answer is X" rule in the pinned code (an older
VLMEvalKit had one), so "The correct answer is blue." names the option whose text is blue.
tests/test_eval_matching_pinned.py runs the artifact's own functions on generated predictions and
compares. The artifact's VERBOSE-only branch (an 'A' in a longer answer read as a quantifier) is not
followed: VLMEvalKit runs without VERBOSE set.
"""

from __future__ import annotations

import math

API_FAILURE = "Failed to obtain answer via API"
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
PUNCTUATION_AS_SPACE = ".()[],:;!*#{}"
LETTER_WINDOW = 4  # the one letter named must be among the answer's last four tokens
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
    return None


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
