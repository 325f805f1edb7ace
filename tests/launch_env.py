"""What `llava-kit train` would hand torchrun on one node of a cluster template (`--print-launch`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"


def node_launch(args: list[str], env: dict[str, str]) -> dict:
    """`llava-kit ARGS --print-launch` in a node's environment: torchrun's options (`--key=value`)
    and the kit command line torchrun starts in each worker (`worker`)."""
    clean = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    done = subprocess.run([sys.executable, "-m", "llava.cli", *args, "--print-launch"], env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return parse_torchrun(json.loads(done.stdout.strip().splitlines()[-1])["torchrun"])


def parse_torchrun(command: list[str]) -> dict:
    assert command[1:3] == ["-m", "torch.distributed.run"], command
    start = command.index("llava.cli")
    options = dict(arg[2:].split("=", 1) for arg in command[3:start - 1])
    return {**options, "worker": command[start + 1:]}
