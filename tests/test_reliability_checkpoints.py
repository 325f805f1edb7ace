"""Checkpoint folders on disk: which one a resume takes, what cleanup and rotation may delete, the recipe policy,
and the stop machinery (grace watchdog, torchrun's shutdown timeout)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.errors import KitError
from llava.recipe import STAGES_DIR, load_recipe
from llava.train.checkpointing import (MARKER, ResumableCheckpoints, complete_checkpoints, file_sizes,
                                       latest_checkpoint, read_checkpoint, remove_incomplete)
from llava.train.events import EventLog

FINGERPRINT = {"recipe_hash": "r1", "data": "d1", "world_size": 2, "deepspeed": "cpu-test"}


def saved(trainer_dir: Path, step: int, marked: bool = True, fingerprint: dict = FINGERPRINT) -> Path:
    folder = trainer_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * (100 + step))
    (folder / "optimizer.pt").write_bytes(b"o" * 50)
    if marked:
        marker = {"step": step, "files": file_sizes(folder), "fingerprint": fingerprint, "loss_sum": 2.0 * step}
        (folder / MARKER).write_text(json.dumps(marker))
    return folder


def test_resume_takes_the_newest_complete_checkpoint_only(tmp_path):
    saved(tmp_path, 10)
    saved(tmp_path, 20)
    saved(tmp_path, 30, marked=False)                      # killed between rename and marker
    truncated = saved(tmp_path, 40)
    (truncated / "optimizer.pt").write_bytes(b"o" * 10)    # a file shorter than the marker says
    (tmp_path / ".staging" / "checkpoint-50").mkdir(parents=True)
    assert [c.step for c in complete_checkpoints(tmp_path)] == [10, 20]
    assert latest_checkpoint(tmp_path).path == tmp_path / "checkpoint-20"
    assert read_checkpoint(tmp_path / "checkpoint-30") is None and read_checkpoint(truncated) is None
    assert remove_incomplete(tmp_path) == [".staging", "checkpoint-30", "checkpoint-40"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20"]
    assert latest_checkpoint(tmp_path / "absent") is None


def test_rotation_keeps_the_newest_complete_ones(tmp_path):
    store = ResumableCheckpoints(tmp_path, keep_last=2, fingerprint=FINGERPRINT, events=EventLog(tmp_path / "e", False))
    for step in (5, 10, 15):
        saved(tmp_path, step)
    saved(tmp_path, 12, marked=False)
    store._rotate(tmp_path / "checkpoint-15")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-15"]
    store = ResumableCheckpoints(tmp_path, keep_last=1, fingerprint=FINGERPRINT, events=EventLog(tmp_path / "e", False))
    store._rotate(tmp_path / "checkpoint-15")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-15"]


def test_resume_carries_the_loss_refuses_other_data_and_records_a_resize(tmp_path):
    saved(tmp_path, 8)
    events = EventLog(tmp_path / "events.jsonl")
    with pytest.raises(KitError, match="the recipe changed since checkpoint-8 .*--allow-recipe-change"):
        ResumableCheckpoints(tmp_path, 1, {**FINGERPRINT, "recipe_hash": "r2"}, events).resume_point()
    store = ResumableCheckpoints(tmp_path, 1, {**FINGERPRINT, "recipe_hash": "r2"}, events, allow_recipe_change=True)
    assert store.resume_point().step == 8 and (store.base_step, store.base_loss_sum) == (8, 16.0)
    assert "the recipe changed since checkpoint-8" in (tmp_path / "events.jsonl").read_text()
    with pytest.raises(KitError, match="trained on other data") as err:
        ResumableCheckpoints(tmp_path, 1, {**FINGERPRINT, "data": "d2"}, events).resume_point()
    assert f"move {tmp_path} away" in str(err.value)
    # another world size resumes, recording what it converts (tests/test_reliability_resize.py runs it)
    resized = ResumableCheckpoints(tmp_path, 1, {**FINGERPRINT, "world_size": 4, "grad_accum": 1, "zero_stage": 3},
                                   events)
    assert resized.resume_point().step == 8
    (change,) = resized.resizes
    assert change["from"] == "checkpoint-8" and change["world_size"] == [2, 4]
    assert any("ZeRO-3" in c and "universal checkpoint" in c for c in change["conversions"])
    assert events.read()[-1]["event"] == "resize"


def test_every_recipe_states_its_checkpoint_policy():
    files = sorted(STAGES_DIR.glob("*.yaml")) + sorted((STAGES_DIR / "smoke").glob("*.yaml"))
    assert len(files) == 6
    for path in files:
        assert "\ncheckpointing:\n" in path.read_text(), path
        policy = load_recipe(path).checkpointing
        assert policy.resume_every_steps > 0 and policy.keep_last >= 1, path
    assert load_recipe("stage1").training.save_strategy == "no"  # the seed's value stays recorded
    assert load_recipe("stage1").checkpointing.resume_every_steps == 400


@pytest.mark.parametrize("override,key", [("checkpointing.keep_last=0", "checkpointing.keep_last"),
                                          ("checkpointing.resume_every_steps=-5", "checkpointing.resume_every_steps"),
                                          ("checkpointing.every=3", "checkpointing.every")])
def test_bad_checkpoint_policy_fails_naming_the_key(override, key):
    with pytest.raises(KitError, match=key):
        load_recipe("stage2", [override])


def test_grace_watchdog_exits_a_stuck_stop_in_time(tmp_path):
    """SIGTERM, then a save that never ends: the process leaves by itself after the grace period."""
    code = ("import os, signal, time\n"
            "from llava.train.signals import StopRequests\n"
            f"with StopRequests({str(tmp_path)!r}) as stop:\n"
            "    stop.last_checkpoint = 'runs/x/trainer/checkpoint-7'\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                          env={"LLAVA_KIT_STOP_GRACE_S": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 128 + 15
    assert "SIGTERM received: finishing the current step" in done.stderr
    assert "within LLAVA_KIT_STOP_GRACE_S=1 s" in done.stderr and "checkpoint-7" in done.stderr


def test_grace_setting_is_validated_and_reaches_torchrun(monkeypatch):
    from llava.train.command import torchrun_command
    from llava.train.launch import Launch
    from llava.train.signals import stop_grace_seconds
    monkeypatch.delenv("LLAVA_KIT_STOP_GRACE_S", raising=False)
    assert stop_grace_seconds() == 110 and "--shutdown-timeout=115" in torchrun_command(Launch(nproc=2), ["stage2"])
    monkeypatch.setenv("LLAVA_KIT_STOP_GRACE_S", "soon")
    with pytest.raises(KitError, match="LLAVA_KIT_STOP_GRACE_S='soon' must be a positive number of seconds"):
        stop_grace_seconds()
