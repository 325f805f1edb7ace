"""A stage resumed under a changed recipe: the changed keys and the LR effect are named, and a change
to trained values is refused unless `--allow-recipe-change` asks for it."""

from __future__ import annotations

import json
import math

import pytest

from conftest import smoke_recipe
from llava.errors import KitError
from llava.train.checkpointing import MARKER, ResumableCheckpoints, file_sizes
from llava.train.events import EventLog
from llava.train.recipe_change import _lr_at, recipe_changes
from tensorboard_events import scalars

FINGERPRINT = {"recipe_hash": "old", "data": "d1", "world_size": 1, "deepspeed": None}


def finished_checkpoint(trainer_dir, recipe: dict, step: int):
    folder = trainer_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"max_steps": step, "global_step": step}))
    (folder / MARKER).write_text(json.dumps({"step": step, "files": file_sizes(folder), "loss_sum": 1.0,
                                             "fingerprint": FINGERPRINT, "recipe": recipe}))


def store_for(tmp_path, recipe: dict, **kwargs) -> ResumableCheckpoints:
    return ResumableCheckpoints(tmp_path / "trainer", 1, {**FINGERPRINT, "recipe_hash": "new"},
                                EventLog(tmp_path / "events.jsonl"), recipe=recipe, **kwargs)


def test_more_steps_names_the_key_and_the_learning_rate_jump(tmp_path):
    old = smoke_recipe("stage1", "training.max_steps=50").model_dump(mode="json")
    new = smoke_recipe("stage1", "training.max_steps=400").model_dump(mode="json")
    finished_checkpoint(tmp_path / "trainer", old, 50)
    with pytest.raises(KitError) as err:
        store_for(tmp_path, new).resume_point()
    message = str(err.value)
    assert "training.max_steps: 50 -> 400" in message and "--allow-recipe-change" in message
    # cosine, warmup ceil(0.03 * 400) = 12: at step 50 the old schedule is at 0, the new one near its top
    fresh = _lr_at(50, 400, new["training"])
    assert 0.9e-3 < fresh < 1e-3
    assert "rebuilt for 400 steps instead of 50 (warmup 12 steps; step 50 is past it)" in message
    assert "step 51 still runs at lr 0, the value the old schedule left" in message
    assert f"steps 52..400 follow the new schedule from {_lr_at(51, 400, new['training']):.3g}" in message
    assert f"a fresh run with the new values would run step 51 at {fresh:.3g}" in message
    assert store_for(tmp_path, new, allow_recipe_change=True).resume_point().step == 50
    warning = [e for e in EventLog(tmp_path / "events.jsonl").read() if e["event"] == "warning"][-1]
    assert warning["changed"] == ["training.max_steps"] and "--allow-recipe-change" in warning["message"]


def test_bookkeeping_changes_resume_without_asking(tmp_path):
    old = smoke_recipe("stage1").model_dump(mode="json")
    new = smoke_recipe("stage1", "training.logging_steps=1", "checkpointing.keep_last=3",
                       "training.report_to=[]").model_dump(mode="json")
    assert [c.key for c in recipe_changes(old, new)] == ["checkpointing.keep_last", "training.logging_steps",
                                                         "training.report_to"]
    finished_checkpoint(tmp_path / "trainer", old, 20)
    assert store_for(tmp_path, new).resume_point().step == 20
    assert "only bookkeeping keys changed: resuming" in (tmp_path / "events.jsonl").read_text()


def test_a_finished_stage_rerun_with_more_steps(tiny_world, tmp_path):
    """The real thing: refused without the flag; with it, the learning rates are the ones the message names.

    transformers logs at step k the lr that step k ran at: lr(k - 1) of the schedule."""
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage

    layout = smoke_layout(tiny_world)
    common = ["training.logging_steps=1", "training.save_strategy=no", f"output={tmp_path / 'out'}"]
    train_stage(smoke_recipe("stage1", "training.max_steps=4", *common), layout, run_dir=tmp_path / "run")
    longer = smoke_recipe("stage1", "training.max_steps=8", *common)
    with pytest.raises(KitError, match=r"training.max_steps: 4 -> 8.*rebuilt for 8 steps instead of 4.*step 5 still "
                                       r"runs at lr 0,.*steps 6..8 follow the new schedule from 0.000389"):
        train_stage(longer, layout, run_dir=tmp_path / "run")
    result = train_stage(longer, layout, run_dir=tmp_path / "run", allow_recipe_change=True)
    assert result.global_steps == 8
    logged = dict(scalars(tmp_path / "run" / "tensorboard")["train/learning_rate"])
    training = longer.model_dump(mode="json")["training"]
    assert logged[5] == _lr_at(4, 4, training) == 0.0  # the old schedule's end, carried in the optimizer state
    for step in range(6, 9):
        assert math.isclose(logged[step], _lr_at(step - 1, 8, training), rel_tol=1e-5), (step, sorted(logged.items()))
