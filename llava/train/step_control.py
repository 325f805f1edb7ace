"""What happens at each optimizer-step end besides training: saves on schedule or on request, graceful stop.

Every rank takes the same decision at the same step (one tiny all-reduce of the requests): a
signal or a SAVE_NOW file seen by one rank alone would otherwise make ranks disagree about a
collective save and hang ZeRO-3. A rank that learns of a signal this way adopts it, so that it also
leaves through the stop path instead of going on to the final save alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from llava.train.checkpointing import ResumableCheckpoints
from llava.train.events import EventLog
from llava.fault_injection import kill_at_step
from llava.train.signals import StopRequests


def agree_across_ranks(device, *values: int) -> tuple[int, ...]:
    """Each value becomes the largest any rank holds (so a flag true on one rank is true on all)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(int(value) for value in values)
    tensor = torch.tensor([int(value) for value in values], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(int(value) for value in tensor.tolist())


def agree_on_stop(stop: StopRequests, device) -> bool:
    """Outside the step loop (model loading, after the last step): stop on every rank or on none."""
    (signum,) = agree_across_ranks(device, stop.signal_number)
    stop.adopt(signum)
    return bool(signum)


class StepControl(TrainerCallback):
    def __init__(self, every_steps: int, checkpoints: ResumableCheckpoints, stop: StopRequests, events: EventLog):
        self.every_steps = every_steps
        self.checkpoints = checkpoints
        self.stop = stop
        self.events = events
        self.stopped_at: int | None = None
        self._save_now_pending = False

    def _reason(self, step: int, max_steps: int, stop: bool, save_now: bool, seed_save: bool) -> str | None:
        if stop:
            return self.stop.signal_name
        if save_now:
            return "SAVE_NOW"
        if self.every_steps and step % self.every_steps == 0:
            return "schedule"
        if step >= max_steps:
            return "last step"
        return "seed save_steps" if seed_save else None

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        kill_at_step(step)
        signum, save_now = agree_across_ranks(args.device, self.stop.signal_number, self.stop.save_now_requested())
        self.stop.adopt(signum)
        stop, save_now = bool(signum), bool(save_now)
        reason = self._reason(step, state.max_steps, stop, save_now, control.should_save)
        if reason:
            control.should_save = True
            self.checkpoints.reason = reason
        if stop:
            control.should_training_stop = True
            self.stopped_at = step
        self._save_now_pending = save_now
        return control

    def on_save(self, args, state, control, **kwargs):
        if self._save_now_pending and args.should_save:
            self.stop.clear_save_now()
            self.events.emit("save_now", f"SAVE_NOW handled at step {state.global_step}: removed "
                             f"{self.stop.save_now_path}", step=state.global_step)
        self._save_now_pending = False
        return control


class AlreadyFinished(Exception):
    """Raised before a step that would go past max_steps: the resumed stage had finished."""


class StopAtMaxSteps(TrainerCallback):
    """transformers, resumed at max_steps short of an epoch's end, starts one step more before it checks the
    limit (its step loop runs to the epoch's end and tests max_steps after each step). The checkpoint's
    weights are loaded by then and no step has run: stop there, on every rank alike."""

    def on_step_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise AlreadyFinished()
