"""The builtin scorer against the pinned VLMEvalKit's own scorer, on generated predictions.

Questions and predictions are generated from a seed: option sets mix words, phrases that contain other
options ("red" / "dark red"), numbers, lone capitals and texts naming letters; each prediction is
composed from a random core (a letter in many wrappings and cases, an option text in several cases,
several letters, several texts, a letter far from the end, empty and NaN-like cells, refusals, 'Z',
the API-failure marker, letters that are not options) inside a random lead-in and tail ("The answer is",
"Answer:", reasoning, newlines). The artifact (docker/vlmevalkit.txt, installed in the test venv of
tests/vlmevalkit_env.py) scores them with its own code (tests/vlmevalkit_score_run.py), circularly and
single-pass; the kit's per-row reads, per-question hits and acc.csv bytes must equal its.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from llava.evaluate.circular import score_questions
from llava.evaluate.matching import can_infer, prediction_as_scored
from llava.evaluate.mmbench_tsv import LETTERS, read_mmbench_tsv, write_mmbench_tsv
from llava.evaluate.suite import load_suite
from llava.evaluate.table import acc_csv_text, accuracy_table

from vlmevalkit_env import vlmevalkit_python  # same tests folder

pytestmark = [pytest.mark.extended, pytest.mark.timeout(1800)]  # builds the pinned artifact's venv (minutes cold)
HARNESS = Path(__file__).resolve().parent / "vlmevalkit_score_run.py"
CIRCULAR, VANILLA = "Generated_MMBench_Styles", "Generated_Single_Styles"
WORDS = ("red", "dark red", "blue", "light blue", "green", "a cat", "cat", "two cats", "3", "13", "yes", "no",
         "A red car", "B", "C", "Both A and B", "none of the above", "the left one", "the man on the left",
         "Sunny", "sunny day", "option", "apple", "an apple tree", "Z", "D")
CATEGORIES = (("coarse_perception", "image_scene"), ("coarse_perception", "image_style"),
              ("finegrained_perception (instance-level)", "ocr"), ("logic_reasoning", "future_prediction"),
              ("relation_reasoning", "social_relation"), ("attribute_reasoning", "function_reasoning"))
REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
            "I'm sorry, but without the image provided", "Cannot determine the answer")
NAN_LIKE = ("", "None", "N/A", "nan", "NaN", "NULL", "null", "NA", "n/a", "<NA>", "#N/A")
LEADS = ("", "", "", "The answer is ", "The correct answer is ", "Answer: ", "answer: ", "Option ", "I think ",
         "Looking at the picture carefully, the best choice here is ", "\n", "  ", "**", "The answer is: ")
TAILS = ("", "", "", ".", "!", "\n", " ", "**", " because it matches the image.", ", I am fairly sure.",
         " is correct", ")", " (final)")


def _letter_core(rng: random.Random, letter: str) -> str:
    form = rng.choice(("{}", "({})", "{}.", "{}:", "{})", "[{}]", "**{}**", "{{{}}}", "{};", "{},", "（{}）",
                       "{}\n", " {} ", "option {}", "Option ({})"))
    return form.format(letter.lower() if rng.random() < 0.15 else letter)


def _text_core(rng: random.Random, text: str) -> str:
    case = rng.choice((str, str, str.upper, str.title, str.lower,
                       lambda t: "".join(c.upper() if rng.random() < 0.5 else c for c in t)))
    return case(text)


def prediction(rng: random.Random, options: list[str], answer: str) -> str:
    letters = LETTERS[: len(options)]
    target = answer if rng.random() < 0.6 else rng.choice(letters)
    other = rng.choice([x for x in letters if x != target])
    text = options[letters.index(target)]
    kind = rng.randrange(13)
    if kind == 0:
        core = _letter_core(rng, target)
    elif kind == 1:
        core = _text_core(rng, text)
    elif kind == 2:
        core = f"{_letter_core(rng, target)} {_text_core(rng, text)}"
    elif kind == 3:
        core = rng.choice(("{} or {}", "{} and {}", "{}, {}", "{} not {}", "{}/{}")).format(target, other)
    elif kind == 4:
        core = f"{_text_core(rng, text)} or {options[letters.index(other)]}"
    elif kind == 5:  # the letter, then a varying number of words
        core = target + " " + " ".join(rng.choice(("is", "the", "right", "one", "here", "blue")) for _ in range(rng.randrange(6)))
    elif kind == 6:
        core = rng.choice(NAN_LIKE)
    elif kind == 7:
        core = rng.choice(REFUSALS) + rng.choice(("", ". " + target, "."))
    elif kind == 8:
        core = rng.choice(("Z", "Z.", "(Z)", "z", "Z " + rng.choice(letters)))
    elif kind == 9:
        core = "Failed to obtain answer via API. " + target
    elif kind == 10:
        core = rng.choice([x for x in "ABCDEFZ" if x not in letters] or ["E"])
    elif kind == 11:  # an option's text inside a long answer
        core = f"the picture shows {_text_core(rng, text)} " + "and some background " * rng.randrange(4)
    else:
        core = f"A {_text_core(rng, text)}"
    if kind == 6 and rng.random() < 0.7:
        return core  # the bare cell
    return rng.choice(LEADS) + core + rng.choice(TAILS)


def _options(rng: random.Random) -> list[str]:
    return rng.sample(WORDS, rng.choice((2, 3, 4, 4)))


def questions(rng: random.Random, count: int) -> list[dict]:
    image = Image.new("RGB", (4, 4), (200, 30, 30))
    out = []
    for index in range(count):
        options = _options(rng)
        l2, leaf = rng.choice(CATEGORIES)
        out.append({"index": index, "question": f"Question {index}?", "options": options,
                    "answer": rng.choice(LETTERS[: len(options)]), "category": leaf, "l2_category": l2,
                    "image": image})
    return out


def generated_predictions(rng: random.Random, tsv: Path) -> dict[int, str]:
    """One generated prediction per row; every fifth question answers all its passes right as a letter."""
    rows = read_mmbench_tsv(tsv).rows
    steady = {row.question_index for row in rows if row.question_index % 5 == 0}
    out = {}
    for row in rows:
        texts = list(row.options.values())
        if row.question_index in steady:
            out[row.index] = rng.choice(("{}", "({})", "{}.", "The answer is {}")).format(row.answer)
        else:
            out[row.index] = prediction(rng, texts, row.answer)
    return out


@pytest.fixture(scope="module")
def artifact_scores(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("styles")
    lmudata = work / "LMUData"
    lmudata.mkdir()
    rng = random.Random(20261206)
    cases = {}
    for name, circular, count in ((CIRCULAR, True, 300), (VANILLA, False, 300)):
        tsv = write_mmbench_tsv(questions(rng, count), lmudata / f"{name}.tsv", circular=circular)
        predictions = generated_predictions(rng, tsv)
        (work / f"{name}.predictions.json").write_text(json.dumps(predictions))
        cases[name] = {"tsv": tsv, "predictions": predictions, "circular": circular}
    env = {**os.environ, "LMUData": str(lmudata), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("VERBOSE", None)  # VLMEvalKit's default: its VERBOSE-only quantifier branch stays off
    done = subprocess.run([str(vlmevalkit_python()), str(HARNESS), str(work), CIRCULAR, VANILLA], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    for name, case in cases.items():
        case["artifact"] = json.loads((work / f"{name}.artifact.json").read_text())
    cases["sources"] = json.loads((work / "benchmark_sources.json").read_text())
    return cases


def test_mmbench_suite_fetches_from_the_artifacts_own_url_and_md5(artifact_scores: dict) -> None:
    suite = load_suite("eval/mmbench_dev_en.yaml")
    sources = artifact_scores["sources"]
    assert suite.tsv.url == sources["url"][suite.dataset]
    assert suite.tsv.md5 == sources["md5"][suite.dataset] == "b6caf1133a01c6bb705cf753bb527ed8"


@pytest.mark.parametrize("name", [CIRCULAR, VANILLA])
def test_builtin_scorer_equals_the_pinned_artifact(artifact_scores: dict, name: str) -> None:
    case = artifact_scores[name]
    theirs = case["artifact"]
    rows = read_mmbench_tsv(case["tsv"]).rows
    predictions = case["predictions"]
    # every row: the letter read (None where nothing is)
    ours = {row.index: can_infer(prediction_as_scored(predictions[row.index]), dict(row.options)) for row in rows}
    differ = [(i, predictions[i], ours[i], theirs["reads"][str(i)]) for i in ours if ours[i] != theirs["reads"][str(i)]]
    assert not differ, differ[:10]
    # every question: the hit; and the acc.csv byte for byte
    results = score_questions(rows, predictions, circular=case["circular"])
    assert {str(r.index): r.hit for r in results} == theirs["hits"]
    assert acc_csv_text(accuracy_table(results)).encode() == Path(theirs["acc_csv"]).read_bytes()
    # the generated styles reach every outcome, so the equality is not vacuous
    outcomes = Counter(r.verdict for r in results)
    assert min(outcomes["correct"], outcomes["wrong"], outcomes["undecided"]) >= 20, outcomes
    letters_read = Counter(value for value in ours.values())
    assert None in letters_read and "Z" in letters_read and all(x in letters_read for x in "AB"), letters_read
