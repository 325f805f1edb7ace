"""The step watchdog (llava.train.watchdog) on 2 processes (plain DDP over gloo, `llava-kit train --nproc 2`).

Rank 1 stalls inside step 3 (llava.fault_injection.stall_in_step); rank 0 then waits in the step's
gradient all-reduce. Both ranks' watchdogs must fire within the limit plus a slack, write their stacks
to runs/<name>/hang/rank-<r>.txt and exit; the launcher exits with HANG_EXIT_CODE; checkpoint-2 stays
intact and the same command without the stall resumes from it and finishes.
"""

from __future__ import annotations

import time

import pytest

from llava.train.checkpointing import latest_checkpoint
from llava.train.watchdog import HANG_EXIT_CODE
from train_cli import TRAIN_LIMIT_S, events, limit_for, output_of, run_train, start_train, wait_for

STEPS, EVERY, STALL_AT = 4, 2, 3
LIMIT_S = 30  # watchdog.step_timeout_s: far above a tiny step (< 2 s here) even on a busy machine
# after the limit: the watchdog's poll (0.5 s) + its settle (2 s) + torchrun ending the other worker and the
# launcher reading the exit codes; measured 3-6 s on 2 busy cores
SLACK_S = 20
OVERRIDES = ["init.from_checkpoint={checkpoints}/stage1", "deepspeed=null", "training.per_device_batch=2",
             "training.grad_accum=4", "training.num_gpus=1", f"training.max_steps={STEPS}", "training.logging_steps=1",
             "training.save_strategy=no", f"checkpointing.resume_every_steps={EVERY}",
             f"watchdog.step_timeout_s={LIMIT_S}"]

STUCK = """
import sys, time
from pathlib import Path
from llava.recipe import WatchdogSpec
from llava.train.watchdog import StepWatchdog

class State:
    global_step = 6

def stuck_in_a_collective():
    time.sleep(60)

dog = StepWatchdog(WatchdogSpec(step_timeout_s=1.5), Path(sys.argv[1]), rank=3, where=lambda step: f"samples of {step}")
dog.on_train_begin(None, State(), None)
stuck_in_a_collective()
"""


def test_the_watchdog_writes_stacks_and_exits_with_the_hang_code(tmp_path):
    import subprocess
    import sys
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == HANG_EXIT_CODE, done.stderr
    report = (tmp_path / "hang" / "rank-3.txt").read_text()
    assert "limit 1.5 s = watchdog.step_timeout_s" in report and "in progress: step 7\nsamples of 7" in report
    assert "in stuck_in_a_collective" in report and "Current thread 0x" in report
    (event,) = events(tmp_path, "", runs=tmp_path)
    assert event["event"] == "hang" and event["rank"] == 3 and event["step"] == 7
    assert time.monotonic() - started < 60


def test_the_limit_follows_the_measured_steps_above_a_floor():
    from llava.recipe import WatchdogSpec
    from llava.train.watchdog import StepLimit
    limit = StepLimit(WatchdogSpec(factor=20, floor_s=600, first_step_s=1800))
    assert limit.seconds()[0] == 1800  # nothing measured yet
    limit.steps += [2.0, 3.0, 100.0]
    assert limit.seconds()[0] == 600  # 20 x median 3 s is below the floor
    limit.steps += [60.0, 61.0]
    assert limit.seconds()[0] == 20 * 60.0
    limit.longest_save = 900.0
    assert limit.seconds()[0] == 1800.0  # a save may take twice its longest so far


def test_the_launcher_reports_a_hang_with_its_own_exit_code(tmp_path):
    import sys
    from llava.train.command import supervise
    failing = [sys.executable, "-c", "import sys; sys.exit(1)"]
    assert supervise(failing, tmp_path) == 1
    hang = tmp_path / "hang"
    writes_stacks = [sys.executable, "-c", f"import pathlib, sys; p = pathlib.Path({str(hang)!r}); "
                     "p.mkdir(); (p / 'rank-0.txt').write_text('stacks'); sys.exit(1)"]
    assert supervise(writes_stacks, tmp_path) == HANG_EXIT_CODE
    assert supervise(failing, tmp_path) == 1  # stack files of an earlier run do not count


@pytest.mark.extended  # two processes and a watchdog limit to wait out
@limit_for(TRAIN_LIMIT_S, TRAIN_LIMIT_S)
def test_a_stalled_rank_ends_both_ranks_with_stacks_and_the_rerun_resumes(stage1_run, tiny_world, tmp_path):
    name = "hang-ddp"
    run_dir = tiny_world / "runs" / name
    process = start_train(tiny_world, "stage2", name, OVERRIDES, nproc=2, output=tmp_path / "hang.log",
                          LLAVA_KIT_TEST_STALL_AT_STEP=f"{STALL_AT}:1")
    marker = run_dir / "trainer" / f"checkpoint-{EVERY}" / "COMPLETE.json"
    wait_for(marker.exists, process, timeout=TRAIN_LIMIT_S, what="checkpoint-2")
    saved = time.monotonic()
    process.wait(timeout=LIMIT_S + SLACK_S + 60)
    took = time.monotonic() - saved
    output = output_of(process)
    print(f"both ranks ended {took:.1f} s after checkpoint-{EVERY} (limit {LIMIT_S} s + slack {SLACK_S} s)")
    assert process.returncode == HANG_EXIT_CODE, output[-3000:]
    assert LIMIT_S <= took + 1 and took <= LIMIT_S + SLACK_S, took

    stalled, waiting = (run_dir / "hang" / f"rank-{r}.txt" for r in (1, 0))
    for report in (stalled, waiting):
        text = report.read_text()
        assert f"last completed step {EVERY}; in progress: step {STALL_AT}" in text
        assert "samples of this rank in step 3" in text and "Python stacks, all threads" in text
        assert "Current thread 0x" in text and "\nThread 0x" in text  # all threads: the watchdog's and the main one
    assert "in stall_in_step" in stalled.read_text()  # the frame where rank 1 is stuck
    assert "in stall_in_step" not in waiting.read_text() and "in training_step" in waiting.read_text()
    hangs = sorted(e["rank"] for e in events(tiny_world, name) if e["event"] == "hang")
    assert hangs == [0, 1]

    kept = latest_checkpoint(run_dir / "trainer")
    assert kept is not None and kept.step == EVERY  # intact: marker and every listed file
    again = run_train(tiny_world, "stage2", name, OVERRIDES, nproc=2)
    assert again.returncode == 0, again.stderr[-4000:]
    assert [e["step"] for e in events(tiny_world, name) if e["event"] == "resume"] == [EVERY]
    assert latest_checkpoint(run_dir / "trainer").step == STEPS


def test_torchrun_does_not_outlive_a_killed_launcher(tmp_path):
    """SIGKILL of `llava-kit train` (the launcher) sends SIGTERM to its torchrun: no orphaned job keeps the GPUs."""
    import os
    import signal
    import subprocess
    import sys

    import psutil
    code = ("import sys; from llava.train.command import supervise; "
            f"supervise([sys.executable, '-c', 'import time; time.sleep(120)'], {str(tmp_path)!r})")
    launcher = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not psutil.Process(launcher.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    (child,) = psutil.Process(launcher.pid).children()
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    child.wait(timeout=30)  # psutil.TimeoutExpired if it kept running
