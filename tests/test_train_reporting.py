"""Training metrics reach TensorBoard in the run folder; a reporter this install lacks is said out loud."""

from __future__ import annotations

import math

import pytest

from conftest import smoke_recipe
from llava.errors import KitError
from llava.train.events import EventLog
from llava.train.reporting import announce_reporters, choose_reporters
from tensorboard_events import scalars
from train_cli import TRAIN_LIMIT_S, limit_for, run_train


def test_a_stage_logs_loss_and_learning_rate_to_its_run_folder(tiny_world, tmp_path):
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage

    recipe = smoke_recipe("stage1", "training.max_steps=4", "training.logging_steps=2", "training.save_strategy=no",
                          f"output={tmp_path / 'out'}")
    assert recipe.training.report_to == ["tensorboard"]
    train_stage(recipe, smoke_layout(tiny_world), run_dir=tmp_path / "run")
    logged = scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in logged["train/loss"]] == [2, 4]
    assert all(math.isfinite(v) and v > 0 for _, v in logged["train/loss"])
    rates = [v for _, v in logged["train/learning_rate"]]
    assert len(rates) == 2 and 0 < rates[1] < rates[0] <= recipe.training.learning_rate * (1 + 1e-6)  # cosine decay
    assert not (tmp_path / "run" / "trainer" / "runs").exists()  # not transformers' dated default folder


def test_a_missing_reporter_is_announced_loudly(tmp_path, capsys):
    reporters = choose_reporters(["tensorboard", "wandb"], tmp_path)  # wandb is not installed here
    assert reporters.missing == ["wandb"] and reporters.tensorboard_dir == tmp_path / "tensorboard"
    assert reporters.report_to == []  # tensorboard runs through our own callback, wandb not at all
    events = EventLog(tmp_path / "events.jsonl")
    announce_reporters(reporters, events, "stages/x.yaml")
    err = capsys.readouterr().err
    assert "!" * 78 in err and "WARNING: training.report_to of stages/x.yaml asks for wandb" in err
    assert "logs NO wandb metrics" in err and "training.report_to=[]" in err
    warning = [e for e in events.read() if e["event"] == "warning"]
    assert warning and warning[0]["missing"] == ["wandb"]


def test_an_unknown_reporter_is_a_recipe_error(tmp_path):
    with pytest.raises(KitError, match=r"training.report_to names \['tensorbord'\]"):
        choose_reporters(["tensorbord"], tmp_path)


@limit_for(TRAIN_LIMIT_S)
def test_the_console_shows_the_stage_and_keeps_library_chatter_in_the_log(tiny_world):
    done = run_train(tiny_world, "stage1", "console-check", ["training.max_steps=2", "training.logging_steps=1",
                                                             "training.save_strategy=no"])
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr
    log = tiny_world / "runs" / "console-check" / "train.log"
    assert "== console-check (" in console and f"details: {log}" in console
    assert "step 1/2  loss " in console and "step 2/2  loss " in console and "2 steps in " in console
    assert f"TensorBoard events -> {tiny_world / 'runs' / 'console-check' / 'tensorboard'}" in console
    assert "console-check finished at step 2 ->" in console
    for noise in ("UNEXPECTED", "LOAD REPORT", "FutureWarning", "Setting accelerator to CPU", "Writing model shards",
                  "{'loss'"):
        assert noise not in console, noise
    details = log.read_text()
    assert "LOAD REPORT" in details and "UNEXPECTED" in details  # kept, where the header says
