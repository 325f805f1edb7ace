"""Answer extraction under the pinned VLMEvalKit's exact-matching rules (ms-vlmeval 0.0.20; evaluation.md).

Hand-picked cases that document the rules; tests/test_eval_matching_pinned.py checks the same functions
against the artifact's own on generated predictions."""

from __future__ import annotations

import math

import pytest

from llava.evaluate.matching import can_infer, can_infer_option, can_infer_text, prediction_as_scored

CHOICES = {"A": "a red circle", "B": "a blue square", "C": "green", "D": "a yellow star"}


def read(prediction: object, choices: dict[str, str] = CHOICES) -> str | None:
    return can_infer(prediction_as_scored(prediction), dict(choices))


@pytest.mark.parametrize("prediction, expected", [
    ("B", "B"),                               # a bare letter
    ("B.", "B"),                              # punctuation is a separator
    ("(C)", "C"),
    ("B. a blue square", "B"),                # letter plus option text
    ("a blue square", "B"),                   # option text only: text matching
    ("The shape is green.", "C"),             # the one option text contained in the answer
    ("A dog", "A"),                           # 'A' read as the letter before any text matching
    ("Z", "Z"),                               # a lone Z
    ("The answer is C", "C"),                 # one letter among the last four tokens
])
def test_readable_answers(prediction: str, expected: str) -> None:
    assert read(prediction) == expected


@pytest.mark.parametrize("prediction", [
    "b",                                      # letters are case-sensitive: lowercase is not a letter
    "B or C",                                 # two letters
    "The answer is C, not D",                 # two letters: no phrase rule picks one
    "the correct answer is **b**",            # lowercase b is no letter, and there is no phrase rule
    "",                                       # empty -> 'nan' after VLMEvalKit's xlsx round trip
    "None", "N/A", "NA", "null",              # read back as NaN by pandas -> 'nan'
    None, float("nan"),
    "E",                                      # not one of the options
    "Failed to obtain answer via API. B",     # API failure marker wins over the letter
])
def test_unreadable_answers(prediction: object) -> None:
    assert read(prediction) is None


@pytest.mark.parametrize("refusal", [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided, A is my guess",
    "Cannot determine the answer from this picture.",
])
def test_refusals_read_as_z(refusal: str) -> None:
    assert can_infer_option(refusal, dict(CHOICES)) == "Z"
    assert read(refusal) == "Z"


def test_letter_must_be_among_last_four_tokens() -> None:
    # the position rule: 'B' is the 1st of 5 tokens -> not read; 1st of 4 tokens -> read.
    assert can_infer_option("B is the blue one", dict(CHOICES)) is None
    assert can_infer_option("B is blue one", dict(CHOICES)) == "B"
    assert can_infer_option("I would pick option B here", dict(CHOICES)) == "B"


def test_long_verbose_answer_is_not_read() -> None:
    # seed era (v0.2) read this as B; the pinned code neither reads the early letter nor text-matches it
    verbose = ("B is correct because the square in the picture is clearly blue and it sits on the left "
               "side of the frame, next to a red circle")
    assert can_infer_option(verbose, dict(CHOICES)) is None
    assert len(verbose) > 2 * sum(len(t) for t in CHOICES.values())
    assert can_infer_text(verbose, dict(CHOICES)) is None
    assert read(verbose) is None
    # nor does an "answer is X" phrase rescue it (an older VLMEvalKit had that rule; the pinned one has not)
    assert read("Looking at every shape in the picture carefully, the answer is B since it is blue") is None


def test_answer_is_phrase_gives_no_letter() -> None:
    """The old "answer is X" rule read the b of "blue" as option B; the pinned code only matches texts."""
    # 27 characters against options of 4 + 3: too long to text-match, so nothing is read (scores 0)
    assert read("The correct answer is blue.", {"A": "blue", "B": "red"}) is None
    assert read("The correct answer is a blue square.", {"A": "a blue square", "B": "a red circle"}) == "A"
    assert read("The correct answer is a blue square.", {"A": "a red circle", "B": "a blue square"}) == "B"


def test_text_matching_rules() -> None:
    shades = {"A": "red", "B": "dark red"}
    assert can_infer_text("red", dict(shades)) == "A"
    assert can_infer_text("Dark Red", dict(shades)) is None   # both texts are substrings: ambiguous
    assert can_infer_text("GREEN", dict(CHOICES)) == "C"       # case-insensitive
    padded = "green " + "x" * 2 * sum(len(t) for t in CHOICES.values())
    assert can_infer_text(padded, dict(CHOICES)) is None      # longer than twice the option texts


def test_prediction_as_scored_mirrors_the_xlsx_round_trip() -> None:
    assert prediction_as_scored(float("nan")) == "nan"
    assert prediction_as_scored("") == "nan"
    assert prediction_as_scored(" B") == " B"
    assert prediction_as_scored(3) == "3"
    assert not math.isnan(float(prediction_as_scored(1.5)))
