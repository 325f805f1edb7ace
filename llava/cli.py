"""`llava-kit <verb>`: one entry point for every runtime (compose, bare host, CI).

Each verb lives in its feature package as `command.py` with `register(subparsers)`; those modules
import nothing heavy at module level so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llava.errors import KitError

# verb modules, in the order `--help` lists them
COMMAND_MODULES = (
    "llava.prepare.command",
    "llava.train.command",
    "llava.evaluate.command",
    "llava.evaluate.generate",
    "llava.publish.command",
    "llava.pipeline",
    "llava.data.command",
    "llava.containers.command",
    "llava.bench.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-kit",
        description="Prepare, train (3 stages), evaluate, publish and reproduce a scaled LLaVA-OneVision model.",
    )
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
