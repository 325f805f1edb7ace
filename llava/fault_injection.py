"""Test-only crash points: a real SIGKILL of this process at a chosen step or save phase.

Crash tests then exercise the true failure (no handler runs, nothing is flushed) without racing
a log watcher against a 20 ms training step. Inert unless one of these variables is set:

- LLAVA_KIT_TEST_KILL_AT_STEP=N: die at the end of optimizer step N (every rank, like a lost box).
- LLAVA_KIT_TEST_KILL_IN_STEP=N: die inside optimizer step N, after its forward pass and before its
  backward (a box lost mid-step: the step's work is gone, the last save is what a resume has).
- LLAVA_KIT_TEST_KILL_IN_SAVE=N:PHASE: die while saving step N, PHASE "staged" (files written to the
  staging folder, not yet renamed) or "unmarked" (renamed into place, completion marker not yet written).
- LLAVA_KIT_TEST_KILL_IN_WRITE=STEP: die at STEP of a durable write (`llava.durable.FILE_STEPS`,
  `FOLDER_STEPS`), e.g. "folder.aside": the old folder moved aside, the new one not yet in place.
- LLAVA_KIT_TEST_STALL_AT_STEP=N:R[:S]: rank R stops making progress inside optimizer step N (sleeps in
  `stall_in_step` until killed, or for S seconds), as a rank stuck on a bad file or a lost peer would;
  a finite pause lets a test change the world mid-run (fill the disk after preflight passed).
"""

from __future__ import annotations

import os
import signal
import time

KILL_AT_STEP = "LLAVA_KIT_TEST_KILL_AT_STEP"
KILL_IN_STEP = "LLAVA_KIT_TEST_KILL_IN_STEP"
KILL_IN_SAVE = "LLAVA_KIT_TEST_KILL_IN_SAVE"
KILL_IN_WRITE = "LLAVA_KIT_TEST_KILL_IN_WRITE"
STALL_AT_STEP = "LLAVA_KIT_TEST_STALL_AT_STEP"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _die_at(variable: str, step: int) -> None:
    wanted = os.environ.get(variable)
    if wanted and int(wanted) == step:
        _die()


def kill_at_step(step: int) -> None:
    _die_at(KILL_AT_STEP, step)


def kill_in_step(step: int) -> None:
    _die_at(KILL_IN_STEP, step)


def kill_in_save(step: int, phase: str) -> None:
    wanted = os.environ.get(KILL_IN_SAVE)
    if wanted and wanted == f"{step}:{phase}":
        _die()


def kill_in_write(step: str) -> None:
    if os.environ.get(KILL_IN_WRITE) == step:
        _die()


def stall_in_step(step: int) -> None:
    wanted = os.environ.get(STALL_AT_STEP)
    if not wanted:
        return
    parts = wanted.split(":")
    if parts[:2] != [str(step), os.environ.get("RANK", "0")]:
        return
    until = time.monotonic() + float(parts[2]) if len(parts) > 2 else float("inf")
    while time.monotonic() < until:
        time.sleep(min(1.0, max(0.0, until - time.monotonic())))
