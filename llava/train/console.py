"""What a person sees while a stage trains, and where everything else goes.

The console gets a stage header, transformers' progress bar (step, ETA), one loss line per logging
step and the kit's own events (`[llava-kit] ...`). Library chatter that reads like an error but is
not one (transformers' weight-load reports, FutureWarnings, DeepSpeed notices, weight-writing bars)
goes to runs/<stage>/train.log, which the header names.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from transformers.trainer_callback import ProgressCallback

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# loggers whose records belong in the run's log file, not on the console (the kit's own "llava" logger
# writes there too, and its warnings, such as a skipped sample, still reach the console)
QUIET_LOGGERS = ("py.warnings", "DeepSpeed", "accelerate", "torch", "huggingface_hub")


def log_file(run_dir: Path) -> Path:
    rank = int(os.environ.get("RANK", "0"))
    return run_dir / ("train.log" if rank == 0 else f"train.rank{rank}.log")


@contextmanager
def stage_console(path: Path) -> Iterator[Path]:
    """Route library logging and warnings to the log file `path` for the duration of a step."""
    import transformers.utils.logging as hf_logging

    _quiet_deepspeed_import()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    saved = {name: _take_over(logging.getLogger(name), handler) for name in QUIET_LOGGERS}
    kit = logging.getLogger("llava")
    kit_level = kit.level
    kit.addHandler(handler)
    kit.setLevel(logging.INFO)
    hf_logging.disable_default_handler()
    hf_logging.add_handler(handler)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": the events say it
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.remove_handler(handler)
        hf_logging.enable_default_handler()
        for name, state in saved.items():
            _give_back(logging.getLogger(name), handler, state)
        kit.removeHandler(handler)
        kit.setLevel(kit_level)
        handler.close()


def _quiet_deepspeed_import() -> None:
    """Import DeepSpeed now, so its logger (a stdout handler made at import) is taken over with the rest;
    on a CPU-only box name its accelerator, which it would otherwise announce with a WARNING."""
    import importlib.util

    import torch

    if "deepspeed" in sys.modules or importlib.util.find_spec("deepspeed") is None:
        return
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # noqa: F401


def _take_over(logger: logging.Logger, handler: logging.Handler) -> tuple:
    state = (list(logger.handlers), logger.propagate, logger.level)
    for existing in state[0]:
        logger.removeHandler(existing)
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return state


def _give_back(logger: logging.Logger, handler: logging.Handler, state: tuple) -> None:
    handlers, propagate, level = state
    logger.removeHandler(handler)
    for existing in handlers:
        logger.addHandler(existing)
    logger.propagate, logger.level = propagate, level


def print_header(title: str, output: Path, log_path: Path) -> None:
    """`== stage1 (stages/smoke/stage1.yaml) -> checkpoints/stage1`, and where the details are."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\n== {title} -> {output}\n   details: {log_path}", file=sys.stderr, flush=True)


class StageProgress(ProgressCallback):
    """transformers' bar, with readable log lines in place of its printed dicts."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.first_step = state.global_step  # past 0 when resumed

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "train_runtime" in logs:
            if state.global_step == getattr(self, "first_step", -1):
                return  # resumed at the last step: nothing trained now; the run says "already finished"
            line = (f"{state.global_step} steps in {logs['train_runtime']:.1f} s, "
                    f"mean loss {logs.get('train_loss', float('nan')):.4f}")
        elif "loss" in logs:
            parts = [f"step {state.global_step}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
            if "learning_rate" in logs:
                parts.append(f"lr {logs['learning_rate']:.3g}")
            if "grad_norm" in logs:
                parts.append(f"grad_norm {logs['grad_norm']:.3g}")
            line = "  ".join(parts)
        else:
            return
        self.training_bar.write(line)
