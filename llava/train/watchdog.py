"""Turn a hung rank into a restart: no optimizer step within the limit -> stacks on disk, distinct exit code.

A rank waiting on a dead peer's collective, a stuck dataloader worker or uneven work makes every rank
wait forever, holding the whole allocation. A thread on every rank watches the step ends; when none
comes within the limit (the recipe's `watchdog` section: a fixed value, or factor x the median step
measured so far, never below a floor, with a longer limit until the first step) the rank writes its
Python stacks (all threads) and the step and samples it is on to runs/<stage>/hang/rank-<r>.txt, logs
a `hang` event, and exits with HANG_EXIT_CODE. torchrun then ends the job, the launcher
(llava.train.command) exits with the same code, and the scheduler's restart policy starts the job
again, which resumes from the last complete checkpoint (docs/reliability.md, "A hang").

Hand-written: torch's NCCL watchdog aborts a timed-out collective (and is set up by the launchers as
the backstop), but neither it nor transformers writes Python stacks or gives a restartable exit code,
and gloo (CPU) has no such watchdog at all.
"""

from __future__ import annotations

import faulthandler
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from llava.train.events import EventLog

HANG_EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, worth retrying
HANG_DIR = "hang"
SETTLE_S = 2.0  # after writing its stacks a rank waits this long, so the peers' watchdogs (same limit) write theirs
CHECK_EVERY_S = 0.5


class StepLimit:
    """The limit in seconds for the step in progress, from the recipe's watchdog values and measured steps."""

    def __init__(self, spec):
        self.spec = spec
        self.steps: list[float] = []
        self.longest_save = 0.0

    def seconds(self) -> tuple[float, str]:
        if self.spec.step_timeout_s:
            return self.spec.step_timeout_s, "watchdog.step_timeout_s"
        if not self.steps:
            return self.spec.first_step_s, "watchdog.first_step_s (no step completed yet)"
        median = statistics.median(self.steps[-50:])
        derived = max(self.spec.floor_s, self.spec.factor * median, 2 * self.longest_save)
        return derived, (f"max(watchdog.floor_s {self.spec.floor_s:g}, watchdog.factor {self.spec.factor:g} x median "
                         f"step {median:.2f} s, 2 x longest save {self.longest_save:.1f} s)")


class StepWatchdog(TrainerCallback):
    """One per rank; `where` describes the step in progress (its sample ids) when the rank is found hung."""

    def __init__(self, spec, run_dir: Path, rank: int, where: Callable[[int], str] = lambda step: ""):
        self.limit = StepLimit(spec)
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.where = where
        self.step = 0
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def hang_file(self) -> Path:
        return self.run_dir / HANG_DIR / f"rank-{self.rank}.txt"

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="llava-kit-step-watchdog", daemon=True)
        self._thread.start()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        self.limit.steps.append(now - self._last_beat)
        self.step = state.global_step
        self._last_beat = now

    def on_save(self, args, state, control, **kwargs):
        """A save follows the step end: its time counts towards the limit, not as a step."""
        now = time.monotonic()
        self.limit.longest_save = max(self.limit.longest_save, now - self._last_beat)
        self._last_beat = now

    def on_train_end(self, args, state, control, **kwargs):
        self.stop()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(CHECK_EVERY_S):
            limit, why = self.limit.seconds()
            waited = time.monotonic() - self._last_beat
            if waited > limit:
                self._fire(waited, limit, why)

    def _fire(self, waited: float, limit: float, why: str) -> None:
        step = self.step + 1
        try:
            samples = self.where(step)
        except Exception as err:  # the report must still be written
            samples = f"(samples unknown: {type(err).__name__}: {err})"
        self.hang_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.hang_file, "w") as out:
            out.write(f"rank {self.rank} (pid {os.getpid()}): no optimizer step completed for {waited:.1f} s, limit "
                      f"{limit:.1f} s = {why}\nlast completed step {self.step}; in progress: step {step}\n{samples}\n\n"
                      "Python stacks, all threads (most recent call first):\n")
            out.flush()
            faulthandler.dump_traceback(file=out, all_threads=True)
        EventLog(self.run_dir / "events.jsonl").emit(
            "hang", f"rank {self.rank}: no optimizer step for {waited:.0f} s (limit {limit:.0f} s) in step {step}; "
            f"stacks in {self.hang_file}; exiting with code {HANG_EXIT_CODE} to be restarted from the last checkpoint",
            rank=self.rank, step=step, limit_s=round(limit, 1), file=str(self.hang_file))
        time.sleep(SETTLE_S)
        os._exit(HANG_EXIT_CODE)


def rank_batches(train_dataloader, step_in_epoch: int, accumulation: int) -> list[list[int]]:
    """Dataset indices of this rank's micro-batches in an optimizer step, from the dataloader's own
    batch sampler (accelerate's per-rank shard): what this rank was loading when it hung."""
    from itertools import islice
    batches = islice(iter(train_dataloader.batch_sampler), step_in_epoch * accumulation,
                     (step_in_epoch + 1) * accumulation)
    return [list(batch) for batch in batches]


def step_samples(trainer, dataset) -> Callable[[int], str]:
    """For StepWatchdog: the sample ids this rank draws in a given optimizer step."""
    def where(step: int) -> str:
        loader = trainer.callback_handler.train_dataloader
        accumulation = trainer.args.gradient_accumulation_steps
        per_epoch = max(1, -(-len(loader) // accumulation))
        batches = rank_batches(loader, (step - 1) % per_epoch, accumulation)
        listed = "; ".join(", ".join(dataset.sample_id(i) for i in batch) for batch in batches)
        return f"samples of this rank in step {step} (micro-batches separated by ';'): {listed}"
    return where


def hang_files_since(run_dir: Path, started: float) -> list[Path]:
    """Stack files written by this run's ranks (newer than `started`, a time.time())."""
    folder = Path(run_dir) / HANG_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("rank-*.txt") if p.stat().st_mtime >= started)
