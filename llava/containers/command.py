"""The `doctor` verb. Imports nothing heavy until it runs."""

from __future__ import annotations

import argparse

STEPS = ("prepare", "stage1", "stage1_5", "stage2", "eval", "publish", "smoke")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check that this box can run a step (engine, GPUs, shm, disk, P2P) and say how to fix it",
        description="Check Docker engine, NVIDIA runtime, GPU count vs NUM_GPUS, /dev/shm, free disk on "
        "each volume and GPU peer-to-peer (with two GPUs or more) for one step, worded for where it runs: a "
        "Docker host (compose services), inside a container, or a bare host. Exit code 0: the step can run "
        "here; 1: a BLOCK finding says why it cannot (e.g. a GPU stage on a CPU-only host: `--stage smoke` "
        "checks the CPU path); 2: bad input (unknown step, NUM_GPUS, --needs, --engine without the docker SDK).",
    )
    parser.add_argument("--stage", default="stage2", choices=STEPS, help="the step to check for (default: stage2)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--engine", action=argparse.BooleanOptionalAction, default=None,
                        help="check the Docker engine (default: when DOCKER_HOST is set or /var/run/docker.sock exists)")
    parser.add_argument("--needs", metavar="FILE", help="a needs.yaml of your own (default: the packaged one)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llava.containers.doctor import run_doctor

    report = run_doctor(args.stage, check_engine=args.engine, needs_file=args.needs)
    if args.json:
        print(report.to_json())
    else:
        report.print()
    return 1 if report.blocking else 0
