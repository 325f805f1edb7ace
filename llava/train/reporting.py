"""Where training metrics go: `training.report_to` -> transformers' reporter callbacks.

TensorBoard always writes to runs/<stage>/tensorboard (transformers 5 would pick a dated folder under
the trainer's output dir). A reporter the recipe asks for but this install lacks is announced loudly
instead of being dropped in silence, as transformers' `report_to` filtering would let it be.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from llava.errors import KitError
from llava.train.events import EventLog

TENSORBOARD = "tensorboard"


@dataclass(frozen=True)
class Reporters:
    """What this run reports to: transformers' names for TrainingArguments, and our TensorBoard folder."""
    report_to: list[str]
    tensorboard_dir: Path | None
    missing: list[str]


def choose_reporters(requested: list[str], run_dir: Path) -> Reporters:
    """Split the recipe's reporters into the ones that run here and the ones this install lacks."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    unknown = [r for r in requested if r not in INTEGRATION_TO_CALLBACK]
    if unknown:
        raise KitError(f"training.report_to names {unknown}, which transformers does not know; use any of "
                       f"{sorted(INTEGRATION_TO_CALLBACK)} or []")
    available = set(get_available_reporting_integrations())
    present = [r for r in requested if r in available]
    return Reporters(report_to=[r for r in present if r != TENSORBOARD],
                     tensorboard_dir=run_dir / TENSORBOARD if TENSORBOARD in present else None,
                     missing=[r for r in requested if r not in available])


def reporter_callbacks(reporters: Reporters) -> list:
    """The TensorBoard callback, pointed at the run folder (what TENSORBOARD_LOGGING_DIR would do, without
    changing the process environment)."""
    if reporters.tensorboard_dir is None:
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(reporters.tensorboard_dir)
    return [callback]


def announce_reporters(reporters: Reporters, events: EventLog, recipe_source: str | None) -> None:
    """One line saying where metrics go; a missing reporter as a boxed warning and a `warning` event."""
    if reporters.tensorboard_dir is not None:
        events.emit("reporting", f"TensorBoard events -> {reporters.tensorboard_dir} "
                    f"(tensorboard --logdir {reporters.tensorboard_dir.parent})", path=str(reporters.tensorboard_dir))
    if not reporters.missing or not events.enabled:
        return
    names = ", ".join(reporters.missing)
    fix = ("pip install 'llava-kit[train]' (it brings tensorboard)" if TENSORBOARD in reporters.missing
           else f"pip install {' '.join(reporters.missing)}")
    message = (f"training.report_to of {recipe_source} asks for {names}, which is not installed: this run "
               f"logs NO {names} metrics. Fix: {fix}, or set training.report_to=[] to train without it.")
    rule = "!" * 78
    print(f"\n{rule}", file=sys.stderr, flush=True)
    events.emit("warning", f"WARNING: {message}", missing=reporters.missing)
    print(f"{rule}\n", file=sys.stderr, flush=True)
