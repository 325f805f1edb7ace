"""Process-group setup that makes DeepSpeed and the Trainer agree on CPU and GPU alike."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

import torch

from llava.errors import KitError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def prepare_process_group(uses_deepspeed: bool) -> dict:
    """Returns the Trainer's accelerator_config.

    DeepSpeed wants the torchrun variables even in one process (else it looks for MPI). On CPU,
    accelerate counts one process unless its state is created first with gloo (environment.md).
    Without DeepSpeed that state must also say `cpu=True`: otherwise accelerate settles on "no
    distribution" with a live process group, the model is never wrapped in DDP and each rank trains
    its own unsynchronised copy (rank 0's is saved). With DeepSpeed, `cpu=True` would skip its setup.
    """
    if uses_deepspeed or world_size() > 1:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        for var, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
            os.environ.setdefault(var, value)
    if torch.cuda.is_available() or not (uses_deepspeed or world_size() > 1):
        return {}
    if uses_deepspeed:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState
    PartialState(cpu=not uses_deepspeed, backend="gloo")
    return {"use_configured_state": True}


def _appears(path: Path, wait_s: float = 5.0) -> bool:
    """Whether `path` exists, allowing a network file system a few seconds to show another node's file."""
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def require_shared_folder(folder: Path, is_main: bool, device) -> None:
    """Several nodes must share the checkpoint folder: the job's rank 0 alone publishes checkpoints,
    while every rank writes its own RNG state (and ZeRO shards) into them, so with node-local folders
    a resume would find state on one node only. Checked once at start, before any step: rank 0
    leaves a file with a fresh name, every rank looks for it."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) == world_size():
        return  # one node
    import torch.distributed as dist
    from llava.train.step_control import agree_across_ranks  # imports transformers: only when several nodes
    (token,) = agree_across_ranks(device, secrets.randbits(62) if is_main else 0)
    probe = folder / f".shared-folder-probe-{token}"
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
    dist.barrier()
    (missing,) = agree_across_ranks(device, int(not _appears(probe)))
    if is_main:
        probe.unlink(missing_ok=True)
    if missing:
        raise KitError(f"{folder} is not one folder shared by all nodes (a file rank 0 wrote there is not visible "
                       "on every node): checkpoints are published by rank 0 only, so point LLAVA_KIT_HOME (or the "
                       "checkpoints and runs volumes) of every node at the same shared file system; see "
                       "docs/containers.md, 'Several nodes'")
