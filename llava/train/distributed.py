"""Process-group setup that makes DeepSpeed and the Trainer agree on CPU and GPU alike."""

from __future__ import annotations

import os
import socket

import torch


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
