"""What happens at each optimizer-step end besides training: saves on schedule or on request, graceful stop.

Every rank takes the same decision at the same step (one tiny all-reduce of the request flags):
a signal or a SAVE_NOW file seen by one rank alone would otherwise make ranks disagree about a
collective save and hang ZeRO-3.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from llava.train.checkpointing import ResumableCheckpoints
from llava.train.events import EventLog
from llava.train.fault_injection import kill_at_step
from llava.train.signals import StopRequests


def agree_across_ranks(device, *flags: bool) -> tuple[bool, ...]:
    """Each flag is true on every rank if it is true on any rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(flags)
    tensor = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


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
            return self.stop.signal_name or "stop requested on another rank"
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
        stop, save_now = agree_across_ranks(args.device, self.stop.stop_requested, self.stop.save_now_requested())
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
