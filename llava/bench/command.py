"""`llava-kit bench STAGE`: samples/s, tokens/s, MFU, memory and padding of one stage under a profile."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from llava.durable import write_text


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time training steps of a stage on synthetic data (real-shape or tiny model)",
        description="Build the stage's model with random weights (real shapes: Qwen2.5-0.5B + SigLIP-so400m, "
                    "0.89B parameters; or the tiny one), run N training steps through the training code on "
                    "synthetic samples shaped like the stage's data, and report samples/s, tokens/s, MFU, peak "
                    "memory, padding and dataloader speed. Nothing is downloaded.")
    parser.add_argument("stage", choices=["stage1", "stage1_5", "stage2"])
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--profile", default="fast", help="speed profile in stages/profiles/ (seed | fast) or a YAML path")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps; the first is not timed; 0 = build and describe only")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value before the profile, e.g. --set training.keep_global_batch=false")
    parser.add_argument("--loader-seconds", type=float, default=2.0, help="time spent measuring the data pipeline")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from llava.bench.report import result_table
    from llava.bench.runner import run_bench
    if args.steps < 0:
        from llava.errors import KitError
        raise KitError(f"--steps must be 0 or more, got {args.steps}")
    # The Trainer prints its logs on stdout; with --json stdout carries the result only.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = run_bench(args.stage, size=args.size, profile=args.profile, steps=args.steps,
                           overrides=args.overrides, loader_seconds=args.loader_seconds)
    text = json.dumps(result, indent=1)
    if args.out:
        write_text(Path(args.out), text)
    if args.json:
        print(text)
    else:
        Console().print(result_table(result))
    return 0
