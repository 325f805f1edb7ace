"""What a changed recipe means for a resumed stage: which keys changed, and what happens to the LR.

A resumable checkpoint records the recipe it was trained with. Resuming under other values makes a
run that no fresh run reproduces (steps 0..S followed the old values, S.. the new ones), so it is
refused unless the user asks for it (`llava-kit train --allow-recipe-change`). Keys that only decide
bookkeeping (logging, reporting, saving, workers, where the output goes) change nothing trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# dotted prefixes whose values never change the weights a run produces
BOOKKEEPING = ("description", "output", "profile", "checkpointing.", "training.logging_steps", "training.report_to",
               "training.save_strategy", "training.save_steps", "training.save_total_limit",
               "training.dataloader_num_workers", "watchdog.")
# keys that decide how many optimizer steps the stage has, hence the LR schedule's length
LENGTH_KEYS = ("training.max_steps", "training.epochs")


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    @property
    def bookkeeping(self) -> bool:
        return any(self.key == p or self.key.startswith(p) for p in BOOKKEEPING)

    def __str__(self) -> str:
        return f"{self.key}: {self.old!r} -> {self.new!r}"


def flatten(body: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in body.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recipe_changes(old: dict, new: dict) -> list[Change]:
    """Every dotted key whose value differs between two recipe dumps, in key order."""
    before, after = flatten(old), flatten(new)
    return [Change(key, before.get(key), after.get(key)) for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key)]


def warmup_steps(total: int, ratio: float) -> int:
    """As TrainingArguments.get_warmup_steps counts them: a ratio below 1, a step count from 1 up."""
    return int(ratio) if ratio >= 1 else math.ceil(total * ratio)


def _lr_at(step: int, total: int, training: dict) -> float:
    """The learning rate transformers' scheduler gives at `step` of `total`."""
    import torch
    from transformers import get_scheduler

    warmup = warmup_steps(total, training.get("warmup_ratio", 0.0))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=training["learning_rate"])
    schedule = get_scheduler(training.get("scheduler", "linear"), optimizer, num_warmup_steps=warmup,
                             num_training_steps=total)
    return training["learning_rate"] * schedule.lr_lambdas[0](step)


def new_total_steps(old_total: int, old: dict, new: dict) -> int | None:
    """The stage's optimizer steps under the new recipe, when only its length keys decide it."""
    if new.get("max_steps", -1) > 0:
        return new["max_steps"]
    if old.get("max_steps", -1) <= 0 and old.get("epochs"):
        return math.ceil(old_total * new["epochs"] / old["epochs"])
    return None


def schedule_effect(changes: list[Change], old: dict, new: dict, step: int, old_total: int | None) -> str:
    """What resuming at `step` does to the learning rate, in numbers where they can be known."""
    old_t, new_t = old.get("training", {}), new.get("training", {})
    shaped = [c for c in changes if c.key.startswith("training.") and not c.bookkeeping]
    if not shaped:
        return "the learning-rate schedule is unchanged"
    if old_total is None or "learning_rate" not in old_t:
        return ("the learning-rate schedule is rebuilt from the new values and resumed at step "
                f"{step}, so the LR jumps from the old schedule's value to the new one")
    total = new_total_steps(old_total, old_t, new_t)
    if total is None:
        return (f"the learning-rate schedule ({new_t.get('scheduler')}, warmup_ratio {new_t.get('warmup_ratio')}) is "
                f"rebuilt for the new number of steps and resumed at step {step}")
    carried, fresh, next_new = _lr_at(step, old_total, old_t), _lr_at(step, total, new_t), _lr_at(step + 1, total, new_t)
    warmup = warmup_steps(total, new_t.get("warmup_ratio", 0.0))
    where = "inside" if step < warmup else "past"
    return (f"the {new_t.get('scheduler')} LR schedule is rebuilt for {total} steps instead of {old_total} (warmup "
            f"{warmup} steps; step {step} is {where} it): step {step + 1} still runs at lr {carried:.3g}, the value the "
            f"old schedule left in the optimizer state, and steps {step + 2}..{total} follow the new schedule "
            f"from {next_new:.3g}; a fresh run with the new values would run step {step + 1} at {fresh:.3g}, "
            f"and steps 1..{step} differently too")


def change_report(changes: list[Change], old: dict, new: dict, step: int, old_total: int | None) -> str:
    listed = "; ".join(str(c) for c in changes)
    return f"the recipe changed since step {step} was saved ({listed}); {schedule_effect(changes, old, new, step, old_total)}"
