"""Answer extraction under VLMEvalKit HEAD's exact-matching rules (evaluation.md §3.3)."""

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
    ("The answer is C, not D", "C"),          # two letters, but "answer is X"
    ("the correct answer is **b**", "B"),     # the phrase is case-insensitive
])
def test_readable_answers(prediction: str, expected: str) -> None:
    assert read(prediction) == expected


@pytest.mark.parametrize("prediction", [
    "b",                                      # letters are case-sensitive: lowercase is not a letter
    "B or C",                                 # two letters, no "answer is"
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
    # HEAD's position rule: 'B' is the 1st of 5 tokens -> not read; 1st of 4 tokens -> read.
    assert can_infer_option("B is the blue one", dict(CHOICES)) is None
    assert can_infer_option("B is blue one", dict(CHOICES)) == "B"
    assert can_infer_option("I would pick option B here", dict(CHOICES)) == "B"


def test_long_verbose_answer_is_not_read() -> None:
    # seed era (v0.2) read this as B; HEAD neither reads the early letter nor text-matches a long answer
    verbose = ("B is correct because the square in the picture is clearly blue and it sits on the left "
               "side of the frame, next to a red circle")
    assert can_infer_option(verbose, dict(CHOICES)) is None
    assert len(verbose) > 2 * sum(len(t) for t in CHOICES.values())
    assert can_infer_text(verbose, dict(CHOICES)) is None
    assert read(verbose) is None
    # an explicit phrase still rescues a long answer
    assert read("Looking at every shape in the picture carefully, the answer is B since it is blue") == "B"


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
