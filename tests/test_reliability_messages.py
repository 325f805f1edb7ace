"""What the kit says where it used to say nothing or something misleading: details logs that hold their
details, a rerun of a finished stage, questions a circular suite asks once, a stage with no loss curve."""

from __future__ import annotations

import json
import random

import torch

from conftest import REPO, smoke_recipe
from test_eval_mmbench import answers_by_index, question, write_jsonl

SMOKE_SUITE = REPO / "eval" / "shapes_smoke.yaml"


def test_world_log_lists_what_the_world_wrote(tmp_path):
    from llava.synthetic.world import WorldSize, build_world
    from llava.train.console import stage_console

    with stage_console(tmp_path / "world.log"):
        build_world(tmp_path / "w", seed=3, size=WorldSize(stage1=5, stage1_5=4, stage2=6, test_questions=2))
    text = (tmp_path / "world.log").read_text()
    for stage in ("stage1", "stage1_5", "stage2"):
        records = json.loads((tmp_path / "w" / "datasets" / stage / "data.json").read_text())
        with_image = sum(1 for r in records if "image" in r)
        assert (f"dataset {stage}: {len(records)} samples ({with_image} with an image, "
                f"{len(records) - with_image} text-only)") in text, text
    assert "world seed 3; LLM" in text and "held-out test set: 2 questions" in text


def test_eval_log_has_every_answer_and_table_says_why_no_loss_curve(stage1_run, tiny_world, tmp_path):
    from llava.evaluate.service import run_eval
    from llava.train.console import stage_console

    _, _, result = stage1_run  # 2 steps, logging_steps 5: no loss was logged
    with stage_console(tmp_path / "eval.log"):
        run_eval(result.output, SMOKE_SUITE, out_dir=tmp_path / "eval",
                 tsv=tiny_world / "datasets" / "eval" / "shapes_colour.tsv", limit=2)
    answers = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    rows = [line for line in (tmp_path / "eval.log").read_text().splitlines() if " row " in line]
    assert len(rows) == len(answers) >= 2
    assert f"row {answers[0]['index']} (question" in rows[0] and repr(answers[0]["prediction"]) in rows[0]
    table = (tmp_path / "eval" / "table.md").read_text()
    assert not (tmp_path / "eval" / "loss.png").exists()
    assert "stage1 has no loss curve: it trained 2 steps and logs the loss every 5 (training.logging_steps)" in table


def test_a_suite_with_letter_options_says_which_questions_have_one_pass(tmp_path, capsys):
    from llava.evaluate.mmbench_tsv import write_mmbench_tsv
    from llava.evaluate.service import score_predictions

    rng = random.Random(4)
    letters = dict(question(1, rng, n_options=3), options=["A", "B", "C"])
    tsv = write_mmbench_tsv([question(0, rng, n_options=4), letters], tmp_path / "own.tsv", circular=True)
    assert (f"{tsv}: 1 of 2 questions get no rotated passes (an option is a single capital letter"
            in capsys.readouterr().err)
    predictions = write_jsonl(tmp_path / "p.jsonl", answers_by_index(tsv, right={0, 1}))

    results = score_predictions(tsv, predictions, tmp_path / "score", suite_path=SMOKE_SUITE)

    assert results["single_pass_questions"] == 1 and results["n_questions"] == 2
    note = "but 1 of 2 questions have one pass only in the TSV and are scored on it"
    assert note in (tmp_path / "score" / "table.md").read_text() and note in capsys.readouterr().err


def test_rerunning_a_finished_stage_says_so_with_the_recorded_loss(tiny_world, tmp_path, capfd):
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage

    torch.set_num_threads(1)
    recipe = smoke_recipe("stage1", "training.max_steps=2", "training.save_strategy=no",
                          f"output={tmp_path}/out")
    first = train_stage(recipe, smoke_layout(tiny_world), run_dir=tmp_path / "run")
    capfd.readouterr()
    again = train_stage(recipe, smoke_layout(tiny_world), run_dir=tmp_path / "run")
    out, err = capfd.readouterr()
    assert again.train_loss == first.train_loss and again.global_steps == 2
    assert (f"stage1 had already finished: 2 steps, mean loss {first.train_loss:.4f} (recorded in "
            f"{tmp_path / 'run' / 'trainer' / 'checkpoint-2'}); nothing was trained again") in err
    assert "steps in" not in out + err and "0.0000" not in out + err
