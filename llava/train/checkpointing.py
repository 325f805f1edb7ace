"""Resumable training state that survives kill -9, a full disk and preemption.

transformers' Trainer writes the state itself (weights, optimizer, scheduler, RNG per rank, the
trainer state that holds the sampler position, DeepSpeed shards); this module decides where and
when it counts: everything goes to runs/<name>/trainer/.staging/checkpoint-N, is fsynced, renamed to
trainer/checkpoint-N, and only then marked complete by COMPLETE.json (every file and its size).
Resume takes the newest marked folder: transformers' get_last_checkpoint would take a half-written
one. Rotation runs after the new marker, so the last complete checkpoint is never deleted.
Hand-written: neither transformers nor accelerate publishes checkpoints atomically.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from llava.durable import recover_folders_in, replace_folder, write_text
from llava.errors import KitError
from llava.train.events import EventLog
from llava.fault_injection import kill_in_save
from llava.train.recipe_change import change_report, recipe_changes
from llava.train.resize import resize_conversions
from llava.train.universal_resume import drop_converted

MARKER = "COMPLETE.json"
STAGING = ".staging"
NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    marker: dict

    @property
    def name(self) -> str:
        return self.path.name


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def read_checkpoint(folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder` if it is complete: a marker for its step, every listed file at its size."""
    match = NAME.match(folder.name)
    if not match or not folder.is_dir():
        return None
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    step = int(match.group(1))
    if not isinstance(marker, dict) or marker.get("step") != step or not marker.get("files"):
        return None
    for rel, size in marker["files"].items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
    return Checkpoint(folder, step, marker)


def complete_checkpoints(trainer_dir: Path) -> list[Checkpoint]:
    if not trainer_dir.is_dir():
        return []
    recover_folders_in(trainer_dir)
    found = (read_checkpoint(path) for path in trainer_dir.iterdir())
    return sorted((c for c in found if c is not None), key=lambda c: c.step)


def latest_checkpoint(trainer_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint: what a resumed run starts from."""
    complete = complete_checkpoints(trainer_dir)
    return complete[-1] if complete else None


def remove_incomplete(trainer_dir: Path) -> list[str]:
    """Delete the staging area and every checkpoint-N folder without a valid marker; returns their names."""
    removed = []
    if not trainer_dir.is_dir():
        return removed
    for path in sorted(trainer_dir.iterdir()):
        if path.name == STAGING or (NAME.match(path.name) and read_checkpoint(path) is None):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def load_model_weights(model, folder: str | Path) -> None:
    """Restore the weights of a resumable checkpoint into the live model, every tensor or an error.

    transformers' Trainer resumes with `load_state_dict(strict=False)` on the raw file, but the file
    holds LlavaOnevision's saved key names (language_model.model.*), so it would load nothing and
    say little. `from_pretrained` applies the model's own key mapping; strict loading proves it.
    """
    dtype = next(model.parameters()).dtype
    loaded = type(model).from_pretrained(folder, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)


def _scheduled_steps(folder: Path) -> int | None:
    """The total optimizer steps the checkpoint's run was scheduled for (its trainer_state.json)."""
    try:
        return int(json.loads((folder / "trainer_state.json").read_text())["max_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def segment_loss_sum(trainer) -> float:
    """Sum of per-step losses in this train() call so far, as transformers adds them up for train_loss."""
    total = float(getattr(trainer, "_total_loss_scalar", 0.0))
    pending = getattr(trainer, "_tr_loss", None)
    return total + (float(pending.item()) if pending is not None else 0.0)


class ResumableCheckpoints:
    """The stage's checkpoint folder: resume point, atomic saves, rotation.

    `fingerprint` ({"recipe_hash", "data", "world_size", "grad_accum", "deepspeed", "zero_stage"}) is
    stored in each marker so a resume on other data is refused instead of silently going wrong, and a
    resume on another world size knows what to convert; `resizes` (each world-size change and the
    conversions it ran, llava.train.resize) is carried into every later marker.
    """

    def __init__(self, trainer_dir: str | Path, keep_last: int, fingerprint: dict, events: EventLog, stop=None,
                 support_files: Callable[[Path], None] | None = None, recipe: dict | None = None,
                 allow_recipe_change: bool = False):
        self.trainer_dir = Path(trainer_dir)
        self.recipe = recipe  # the values this run trains with, stored in each marker to diff on resume
        self.allow_recipe_change = allow_recipe_change
        self.support_files = support_files  # tokenizer, processor, generation config: evaluable as is
        self.staging_root = self.trainer_dir / STAGING
        self.keep_last = keep_last
        self.fingerprint = fingerprint
        self.events = events
        self.stop = stop
        self.reason = "schedule"
        self.latest: Checkpoint | None = None
        self.base_step = 0
        self.base_loss_sum = 0.0
        self.resizes: list[dict] = []  # every world-size change on the way to the latest checkpoint

    def resume_point(self) -> Checkpoint | None:
        """Newest complete checkpoint, checked against this run; sets the loss carried over from it."""
        found = latest_checkpoint(self.trainer_dir)
        if found is None:
            return None
        self.resizes = list(found.marker.get("resizes") or [])
        self._check_compatible(found)
        self.latest = found
        self.base_step = found.step
        self.base_loss_sum = float(found.marker.get("loss_sum", 0.0))
        if self.stop is not None:
            self.stop.last_checkpoint = str(found.path)
        return found

    def _check_compatible(self, found: Checkpoint) -> None:
        saved, now = found.marker.get("fingerprint", {}), self.fingerprint
        start_over = f"move {self.trainer_dir} away to start this stage from step 0"
        if saved.get("data") != now["data"]:
            raise KitError(f"{found.path} was trained on other data (dataset manifest hash "
                           f"{str(saved.get('data'))[:12]}, now {str(now['data'])[:12]}): its sampler position means "
                           f"nothing for this data. Restore the data it was trained on, or {start_over}")
        ranks = saved.get("world_size")
        if ranks is not None and ranks != now["world_size"]:
            resized = {"from": found.name, "step": found.step, "world_size": [ranks, now["world_size"]],
                       "conversions": resize_conversions(ranks, now["world_size"], saved.get("grad_accum"),
                                                         now.get("grad_accum", 0), now.get("zero_stage"))}
            self.resizes.append(resized)
            self.events.emit("resize", f"{found.name} was saved by {ranks} processes, this run has "
                             f"{now['world_size']}: " + "; ".join(resized["conversions"]), **resized)
        if saved.get("recipe_hash") != now["recipe_hash"]:
            self._check_recipe(found, start_over)

    def _check_recipe(self, found: Checkpoint, start_over: str) -> None:
        """Name the changed keys and the LR effect; refuse a change to trained values unless allowed."""
        old = found.marker.get("recipe")
        if old is None or self.recipe is None:
            text = f"the recipe changed since {found.name} was saved (its marker does not record the old values)"
            changes = []
        else:
            changes = recipe_changes(old, self.recipe)
            text = change_report(changes, old, self.recipe, found.step, _scheduled_steps(found.path))
        if changes and all(c.bookkeeping for c in changes):
            self.events.emit("warning", f"{text}; only bookkeeping keys changed: resuming", changed=[c.key for c in changes])
        elif self.allow_recipe_change:
            self.events.emit("warning", f"{text}; resuming with the new values (--allow-recipe-change)",
                             changed=[c.key for c in changes])
        else:
            raise KitError(f"{found.path}: {text}. Refused: resuming would make a run that neither recipe gives "
                           "from a fresh start. Run again with --allow-recipe-change to resume with the new values "
                           f"anyway, put the old values back to resume as saved, or {start_over}")

    @contextmanager
    def staging(self, trainer) -> Iterator[Path]:
        """Yields the folder transformers should save into; publishes checkpoint-N when the body returns."""
        step = trainer.state.global_step
        staged = self.staging_root / f"checkpoint-{step}"
        main = trainer.args.should_save
        started = time.monotonic()
        loss_sum = self.base_loss_sum + segment_loss_sum(trainer)
        try:
            if main:
                shutil.rmtree(staged, ignore_errors=True)
                staged.mkdir(parents=True)
            trainer.accelerator.wait_for_everyone()
            yield self.staging_root
            trainer.accelerator.wait_for_everyone()
            if main:
                if self.support_files is not None:
                    self.support_files(staged)
                kill_in_save(step, "staged")
                self._publish(staged, step, loss_sum, time.monotonic() - started)
        except Exception as err:
            if main:
                shutil.rmtree(staged, ignore_errors=True)
            message = self._failure_message(staged.name, err)
            self.events.emit("save_failed", message, step=step)
            raise KitError(message) from err
        trainer.accelerator.wait_for_everyone()
        self.latest = read_checkpoint(self.trainer_dir / staged.name)
        if self.stop is not None:
            self.stop.last_checkpoint = str(self.trainer_dir / staged.name)

    def _publish(self, staged: Path, step: int, loss_sum: float, seconds: float) -> None:
        # replaces only an unmarked leftover of an abandoned run (complete ones are never re-saved)
        final = replace_folder(staged, self.trainer_dir / staged.name, kind="resumable-state")
        if not any(self.staging_root.iterdir()):
            self.staging_root.rmdir()
        kill_in_save(step, "unmarked")
        write_text(final / MARKER, json.dumps({
            "step": step, "reason": self.reason, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "save_seconds": round(seconds, 3), "loss_sum": loss_sum, "fingerprint": self.fingerprint,
            "recipe": self.recipe, "resizes": self.resizes,
            "files": file_sizes(final)}, indent=1, sort_keys=True))
        self._rotate(final)
        drop_converted(self.trainer_dir)
        self.events.emit("checkpoint", f"saved resumable state {final} ({self.reason}, {seconds:.1f} s)",
                         step=step, reason=self.reason, path=str(final), seconds=round(seconds, 3))

    def _rotate(self, newest: Path) -> None:
        """Keep the newest `keep_last` complete checkpoints; drop older ones and unmarked leftovers."""
        keep = {c.path for c in complete_checkpoints(self.trainer_dir)[-self.keep_last:]} | {newest}
        for path in self.trainer_dir.iterdir():
            if NAME.match(path.name) and path not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def _failure_message(self, name: str, err: Exception) -> str:
        try:
            free = f"{shutil.disk_usage(self.trainer_dir).free / 2**20:.1f} MiB free on that disk"
        except OSError:
            free = "free space unknown"
        if self.latest is not None:
            free += f", the last checkpoint took {sum(self.latest.marker['files'].values()) / 2**20:.1f} MiB"
        kept = (f"the previous complete checkpoint {self.latest.path} (step {self.latest.step}) is intact and the "
                f"next run resumes from it" if self.latest else "no earlier complete checkpoint exists, so the next "
                "run starts from step 0")
        return (f"could not save resumable state {name} in {self.trainer_dir}: {type(err).__name__}: {err} ({free}); "
                f"{kept}. Free disk space (checkpointing.keep_last={self.keep_last} complete checkpoints are kept "
                "besides the one being written), then run the same command again")
