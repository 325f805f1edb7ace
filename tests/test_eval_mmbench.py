"""MMBench TSVs, circular scoring and VLMEvalKit's table layout, on generated TSVs."""

from __future__ import annotations

import base64
import csv
import json
import random
from pathlib import Path

import pytest
from PIL import Image

from llava.cli import main
from llava.errors import KitError
from llava.evaluate.circular import score_questions
from llava.evaluate.mmbench_tsv import check_md5, file_md5, read_mmbench_tsv, write_mmbench_tsv
from llava.evaluate.predictions import PredictionLog
from llava.evaluate.prompt import build_mcq_prompt
from llava.evaluate.service import score_predictions
from llava.evaluate.suite import load_suite
from llava.evaluate.table import accuracy_table, read_acc_csv

REPO = Path(__file__).resolve().parents[1]
MMBENCH_SUITE = REPO / "eval" / "mmbench_dev_en.yaml"
LETTERS = "ABCD"

# evaluation.md §3.6: MMBench_DEV_EN question counts per leaf (l2 full name, leaf, questions).
MMBENCH_SIZES = [
    ("attribute_reasoning", "function_reasoning", 79), ("attribute_reasoning", "identity_reasoning", 45),
    ("attribute_reasoning", "physical_property_reasoning", 75),
    ("coarse_perception", "image_emotion", 50), ("coarse_perception", "image_quality", 53),
    ("coarse_perception", "image_scene", 104), ("coarse_perception", "image_style", 53),
    ("coarse_perception", "image_topic", 36),
    ("finegrained_perception (cross-instance)", "action_recognition", 54),
    ("finegrained_perception (cross-instance)", "attribute_comparison", 44),
    ("finegrained_perception (cross-instance)", "spatial_relationship", 45),
    ("finegrained_perception (instance-level)", "attribute_recognition", 74),
    ("finegrained_perception (instance-level)", "celebrity_recognition", 99),
    ("finegrained_perception (instance-level)", "object_localization", 81),
    ("finegrained_perception (instance-level)", "ocr", 39),
    ("logic_reasoning", "future_prediction", 40), ("logic_reasoning", "structuralized_imagetext_understanding", 78),
    ("relation_reasoning", "nature_relation", 48), ("relation_reasoning", "physical_relation", 24),
    ("relation_reasoning", "social_relation", 43),
]
SEED_ORDER = ["Overall", "AR", "CP", "FP-C", "FP-S", "LR", "RR"] + sorted(leaf for _, leaf, _ in MMBENCH_SIZES)


def question(index: int, rng: random.Random, *, n_options: int = 4, category: str = "image_scene",
             l2: str = "coarse_perception", hint: str | None = None, size: int = 6) -> dict:
    pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
    return {
        "index": index, "question": f"Which shape is shown in picture {index}?", "hint": hint,
        "options": [f"shape {index}-{k}" for k in range(n_options)], "answer": LETTERS[rng.randrange(n_options)],
        "category": category, "l2_category": l2, "image": Image.frombytes("RGB", (size, size), pixels),
    }


def answers_by_index(path: Path, right: set[int], wrong_letter: bool = True) -> dict[int, str]:
    """Predictions: the right letter for every pass of questions in `right`, a wrong one otherwise."""
    out = {}
    for row in read_mmbench_tsv(path).rows:
        if row.question_index in right:
            out[row.index] = row.answer
        else:
            out[row.index] = next(letter for letter in row.options if letter != row.answer) if wrong_letter else "?"
    return out


def write_jsonl(path: Path, predictions: dict[int, str]) -> Path:
    path.write_text("".join(json.dumps({"index": i, "prediction": p}) + "\n" for i, p in predictions.items()))
    return path


# ---------------------------------------------------------------- writing and reading


def test_circular_layout_matches_vlmevalkit(tmp_path: Path) -> None:
    rng = random.Random(0)
    qs = [question(7, rng, n_options=4), question(8, rng, n_options=3), question(9, rng, n_options=2)]
    qs[0]["answer"] = "B"
    data = read_mmbench_tsv(write_mmbench_tsv(qs, tmp_path / "t.tsv", circular=True))
    assert sorted(r.index for r in data.rows) == [7, 8, 9, 1000007, 1000008, 1000009, 2000007, 2000008, 3000007]
    by_index = {r.index: r for r in data.rows}
    base, opts = by_index[7], qs[0]["options"]
    assert base.options == dict(zip(LETTERS, opts)) and base.answer == "B"
    # pass k: new A = old option k, the answer letter follows its text
    for k in (1, 2, 3):
        rotated = by_index[7 + k * 1_000_000]
        assert list(rotated.options.values()) == opts[k:] + opts[:k]
        assert rotated.options[rotated.answer] == opts[1]
        assert rotated.image_index == 7  # the image cell holds the base index
    assert [by_index[i].answer for i in (9, 1000009)] == [qs[2]["answer"], "B" if qs[2]["answer"] == "A" else "A"]
    with open(tmp_path / "t.tsv", newline="") as handle:
        cells = {row["index"]: row["image"] for row in csv.DictReader(handle, delimiter="\t")}
    assert cells["1000007"] == "7" and len(cells["7"]) > 64
    assert data.image(by_index[2000007]).tobytes() == qs[0]["image"].tobytes()


def test_non_circular_file_has_base_rows_only(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = read_mmbench_tsv(write_mmbench_tsv([question(i, rng) for i in range(3)], tmp_path / "t.tsv", circular=False))
    assert [r.index for r in data.rows] == [0, 1, 2]


def test_prompt_is_vlmevalkits_image_mcq_prompt(tmp_path: Path) -> None:
    rng = random.Random(2)
    with_hint = question(1, rng, n_options=3, hint="The picture was taken outdoors.")
    data = read_mmbench_tsv(write_mmbench_tsv([with_hint, question(2, rng, n_options=2)], tmp_path / "t.tsv",
                                              circular=False))
    assert build_mcq_prompt(data.rows[0]) == (
        "Hint: The picture was taken outdoors.\nQuestion: Which shape is shown in picture 1?\nOptions:\n"
        "A. shape 1-0\nB. shape 1-1\nC. shape 1-2\nPlease select the correct answer from the options above. \n")
    assert build_mcq_prompt(data.rows[1]) == (
        "Question: Which shape is shown in picture 2?\nOptions:\nA. shape 2-0\nB. shape 2-1\n"
        "Please select the correct answer from the options above. \n")


def _rewrite(path: Path, edit) -> Path:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    fields = list(rows[0])
    rows, fields = edit(rows, fields)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def small_tsv(tmp_path: Path) -> Path:
    rng = random.Random(3)
    return write_mmbench_tsv([question(i, rng) for i in range(4)], tmp_path / "small.tsv", circular=True)


def test_missing_column_is_named(small_tsv: Path) -> None:
    _rewrite(small_tsv, lambda rows, f: ([{k: v for k, v in r.items() if k != "l2-category"} for r in rows],
                                         [c for c in f if c != "l2-category"]))
    with pytest.raises(KitError, match=r"missing column\(s\) \['l2-category'\]"):
        read_mmbench_tsv(small_tsv)


@pytest.mark.parametrize("bad, message", [
    ("", r"row index 2, column 'image': empty"),
    ("not base64 at all! " * 5, r"row index 2, column 'image': not base64"),
])
def test_bad_image_cell_names_the_row(small_tsv: Path, bad: str, message: str) -> None:
    def edit(rows, fields):
        next(r for r in rows if r["index"] == "2")["image"] = bad
        return rows, fields
    with pytest.raises(KitError, match=message):
        read_mmbench_tsv(_rewrite(small_tsv, edit))


def test_image_reference_to_unknown_row_is_named(small_tsv: Path) -> None:
    def edit(rows, fields):
        next(r for r in rows if r["index"] == "2000003")["image"] = "42"
        return rows, fields
    with pytest.raises(KitError, match=r"row index 2000003, column 'image': '42' is neither"):
        read_mmbench_tsv(_rewrite(small_tsv, edit))


def test_md5_mismatch_is_reported(small_tsv: Path) -> None:
    check_md5(small_tsv, file_md5(small_tsv), "suite key tsv.md5")
    with pytest.raises(KitError, match=r"small.tsv: md5 [0-9a-f]{32} does not match b6caf1133a01c6bb705cf753bb527ed8"):
        check_md5(small_tsv, "b6caf1133a01c6bb705cf753bb527ed8", "suite key tsv.md5")


def test_writer_refuses_options_pandas_would_drop(tmp_path: Path) -> None:
    q = question(1, random.Random(4))
    q["options"][2] = "None"
    with pytest.raises(KitError, match="would be read back as missing"):
        write_mmbench_tsv([q], tmp_path / "t.tsv", circular=True)


# ---------------------------------------------------------------- circular scoring


def test_question_counts_only_if_every_pass_is_right(small_tsv: Path) -> None:
    rows = read_mmbench_tsv(small_tsv).rows
    predictions = {r.index: r.answer for r in rows}
    wrong_pass = next(r for r in rows if r.index == 3000001)
    predictions[wrong_pass.index] = next(x for x in LETTERS if x != wrong_pass.answer)  # one of four passes wrong
    predictions[2000002] = "I am not sure"                                            # one pass unreadable
    predictions[0] = "Cannot determine the answer"                                    # refusal -> Z -> wrong
    verdicts = {q.index: (q.hit, q.verdict) for q in score_questions(rows, predictions, circular=True)}
    assert verdicts == {0: (0, "wrong"), 1: (0, "wrong"), 2: (0, "undecided"), 3: (1, "correct")}


def test_unknown_prediction_indices_are_named(small_tsv: Path, tmp_path: Path) -> None:
    predictions = {r.index: r.answer for r in read_mmbench_tsv(small_tsv).rows}
    predictions.update({55: "A", 4000001: "B"})
    path = write_jsonl(tmp_path / "p.jsonl", predictions)
    with pytest.raises(KitError, match=r"2 prediction\(s\) for indices that are not in the TSV: 55, 4000001"):
        score_predictions(small_tsv, path, tmp_path / "out")


def test_missing_pass_prediction_is_named(small_tsv: Path) -> None:
    rows = read_mmbench_tsv(small_tsv).rows
    predictions = {r.index: r.answer for r in rows if r.index != 2000001}
    with pytest.raises(KitError, match=r"question 1 has no prediction for pass\(es\) \[2000001\]"):
        score_questions(rows, predictions, circular=True)


def test_single_pass_scoring_reads_like_one_circular_pass(tmp_path: Path) -> None:
    """Without rotated passes the pinned VLMEvalKit reads each answer with the same rule as a circular
    pass (no stripping, no length limit); an unreadable one scores 0."""
    rng = random.Random(7)
    qs = [question(i, rng) for i in range(4)]
    for q in qs:
        q["answer"] = "B"
    tsv = write_mmbench_tsv(qs, tmp_path / "plain.tsv", circular=False)
    predictions = {0: " B \n", 1: "The answer is B", 2: "C", 3: "B or C"}
    results = score_predictions(tsv, write_jsonl(tmp_path / "p.jsonl", predictions), tmp_path / "out")
    verdicts = list(csv.DictReader(open(tmp_path / "out" / "questions.csv")))
    assert [(v["verdict"], v["hit"]) for v in verdicts] == [
        ("correct", "1"), ("correct", "1"), ("wrong", "0"), ("undecided", "0")]
    assert results["rows"][0]["value"] == 2 / 4


# ---------------------------------------------------------------- table layout


def test_table_order_and_pooled_l2_accuracy(tmp_path: Path) -> None:
    rng = random.Random(5)
    layout = [("relation_reasoning", "social_relation", 3), ("coarse_perception", "image_topic", 1),
              ("coarse_perception", "image_emotion", 4), ("attribute_reasoning", "function_reasoning", 2)]
    qs, index = [], 0
    for l2, leaf, n in layout:
        for _ in range(n):
            qs.append(question(index, rng, category=leaf, l2=l2, n_options=rng.choice([2, 3, 4])))
            index += 1
    tsv = write_mmbench_tsv(qs, tmp_path / "t.tsv", circular=True)
    # right: image_topic 1/1, image_emotion 1/4, social_relation 2/3, function_reasoning 0/2
    right = {0, 1, 3, 4}
    rows = read_mmbench_tsv(tsv).rows
    table = accuracy_table(score_questions(rows, answers_by_index(tsv, right), circular=True))
    assert len(table) == 1 and table[0].split == "dev"
    assert list(table[0].values) == ["Overall", "AR", "CP", "RR", "function_reasoning", "image_emotion",
                                     "image_topic", "social_relation"]
    values = table[0].values
    assert values["Overall"] == 4 / 10
    assert values["CP"] == 2 / 5  # pooled over the 5 questions, not the mean of 1/1 and 1/4
    assert (values["image_topic"], values["image_emotion"], values["RR"], values["AR"]) == (1.0, 0.25, 2 / 3, 0.0)


def test_seed_table_is_reproduced_bit_for_bit(tmp_path: Path) -> None:
    """A generated MMBench-shaped set with the seed's per-category hits yields the seed's acc.csv."""
    seed = load_suite(MMBENCH_SUITE).references["seed"].rows
    rng = random.Random(6)
    qs, right, index = [], set(), 0
    for l2, leaf, n in MMBENCH_SIZES:
        hits = round(seed[leaf] * n)
        assert seed[leaf] == hits / n
        for k in range(n):
            qs.append(question(index, rng, category=leaf, l2=l2, size=1))
            if k < hits:
                right.add(index)
            index += 1
    tsv = write_mmbench_tsv(qs, tmp_path / "MMBench_like.tsv", circular=True)
    predictions = answers_by_index(tsv, right)
    assert len(predictions) == 4 * 1164
    results = score_predictions(tsv, write_jsonl(tmp_path / "p.jsonl", predictions), tmp_path / "out",
                                suite_path=MMBENCH_SUITE.with_name("shapes_smoke.yaml"))
    acc = read_acc_csv(tmp_path / "out" / "acc.csv")
    assert list(acc[0].values) == SEED_ORDER
    assert acc[0].values == {name: seed[name] for name in SEED_ORDER}
    assert results["n_questions"] == 1164 and [r["name"] for r in results["rows"]] == SEED_ORDER
    assert (tmp_path / "out" / "acc.csv").read_text().splitlines()[1].startswith('"dev","0.5420962199312714","0.6331')


# ---------------------------------------------------------------- the `eval score` verb and its report


def test_eval_score_cli_writes_the_report(small_tsv: Path, tmp_path: Path) -> None:
    import openpyxl

    predictions = answers_by_index(small_tsv, right={0, 2})
    predictions[3] = None  # an empty xlsx cell -> NaN -> 'nan' -> unreadable
    sheet = openpyxl.Workbook()
    sheet.active.append(["index", "prediction", "A"])
    for index, prediction in predictions.items():
        sheet.active.append([index, prediction, "ignored"])
    sheet.save(tmp_path / "llava_kit_MMBench_DEV_EN.xlsx")
    out = tmp_path / "report"
    code = main(["eval", "score", "--tsv", str(small_tsv), "--predictions",
                 str(tmp_path / "llava_kit_MMBench_DEV_EN.xlsx"), "--out", str(out), "--suite",
                 str(MMBENCH_SUITE.with_name("shapes_smoke.yaml"))])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"suite", "dataset", "backend", "judge", "vlmevalkit_commit", "checkpoint",
                            "weights_sha256", "split", "rows", "n_questions", "created", "chance"}
    assert (results["suite"], results["judge"], results["split"], results["n_questions"]) == \
        ("shapes_smoke", "exact_matching", "dev", 4)
    assert results["rows"][0] == {"name": "Overall", "value": 0.5, "seed": None, "official": None,
                                  "delta_seed": None, "delta_official": None}
    verdicts = list(csv.DictReader(open(out / "questions.csv")))
    assert [(v["index"], v["verdict"]) for v in verdicts] == [("0", "correct"), ("1", "wrong"), ("2", "correct"),
                                                               ("3", "wrong")]
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Overall | 50.00 |" in (out / "table.md").read_text()
    assert json.loads((out / "manifest.json").read_text())["metrics"]["overall"] == 0.5


def test_report_against_references_has_deltas(small_tsv: Path, tmp_path: Path) -> None:
    """With the MMBench suite's references the table shows seed/official columns and point deltas."""
    from llava.evaluate.report import results_document, table_markdown

    suite = load_suite(MMBENCH_SUITE)
    rows = read_mmbench_tsv(small_tsv).rows
    table = accuracy_table(score_questions(rows, answers_by_index(small_tsv, {0, 1, 2}), circular=True))
    results = results_document(suite=suite, backend="builtin", table=table, n_questions=4, checkpoint="ck",
                               weights_sha256="ab" * 32, vlmevalkit_commit=None)
    overall = results["rows"][0]
    assert overall["value"] == 0.75 and overall["seed"] == 0.5420962199312714
    assert overall["delta_seed"] == 0.75 - 0.5420962199312714
    assert overall["delta_official"] == 0.75 - 0.5506872852233677
    assert "| Overall | 75.00 | 54.21 | +20.79 | 55.07 | +19.93 |" in table_markdown(results, suite)


def test_eval_score_usage_errors(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "score", "--tsv", "x.tsv"])
    assert "`eval score` needs --predictions --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "some/checkpoint"])
    assert "--suite is required" in capsys.readouterr().err


def test_bad_inputs_exit_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["eval", "score", "--tsv", str(tmp_path / "nope.tsv"), "--predictions", "p.jsonl",
                 "--out", str(tmp_path)])
    assert code == 2 and "nope.tsv does not exist" in capsys.readouterr().err


def test_image_cells_are_png_base64(small_tsv: Path) -> None:
    data = read_mmbench_tsv(small_tsv)
    assert base64.b64decode(data.images[0])[:4] == b"\x89PNG"


def test_torn_last_line_is_dropped_and_meta_is_enforced(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, {"weights_sha256": "a"})
    log.append(0, "B", session="s")
    log.append(1000000, "A", session="s")
    with open(log.path, "a") as handle:
        handle.write('{"index": 2000000, "predic')  # a crash mid-write
    resumed = PredictionLog(tmp_path, {"weights_sha256": "a"})
    assert resumed.answers == {0: "B", 1000000: "A"}
    resumed.append(2000000, "C")
    assert [json.loads(x)["index"] for x in log.path.read_text().splitlines()] == [0, 1000000, 2000000]
    with pytest.raises(KitError, match="answers made with different weights_sha256"):
        PredictionLog(tmp_path, {"weights_sha256": "b"})


def test_the_shapes_world_test_set_scores_under_the_smoke_suite(tmp_path: Path) -> None:
    """The lead's synthetic test set (llava.synthetic.world) reads and scores with eval/shapes_smoke.yaml."""
    from llava.synthetic.world import write_test_set

    tsv = write_test_set(tmp_path / "shapes_colour.tsv", random.Random(8), 8, blank=False)
    rows = read_mmbench_tsv(tsv).rows
    predictions = {r.index: (r.answer if r.index < 6 else "Z") for r in rows}
    results = score_predictions(tsv, write_jsonl(tmp_path / "p.jsonl", predictions), tmp_path / "out",
                                suite_path=MMBENCH_SUITE.with_name("shapes_smoke.yaml"))
    assert results["n_questions"] == 8 and results["rows"][0]["value"] == 6 / 8
