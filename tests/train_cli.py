"""Run `llava-kit train` as a real subprocess on the tiny world, and compare what it wrote.

Crash tests need a separate process (a SIGKILL must kill the trainer, not pytest). One thread per
process keeps float reductions identical between the runs being compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from llava.manifest import write_manifest
from llava.recipe import STAGES_DIR
from llava.train.distributed import free_port
from llava.train.events import EventLog

DISTRIBUTED_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "TORCHELASTIC_RUN_ID")


def train_env(world: Path, nproc: int = 1, **extra: str) -> dict[str, str]:
    """A clean environment; several processes get a free rendezvous port (torchrun's 29500 may be
    taken by another job on the same box)."""
    env = {**os.environ, "LLAVA_KIT_HOME": str(world), "OMP_NUM_THREADS": "1", "NUM_GPUS": str(nproc),
           "TOKENIZERS_PARALLELISM": "false"}
    for var in DISTRIBUTED_VARS:
        env.pop(var, None)
    if nproc > 1:
        env["MASTER_PORT"] = str(free_port())
    return {**env, **extra}


def train_args(stage: str, name: str, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "llava.cli", "train", str(STAGES_DIR / "smoke" / f"{stage}.yaml"),
            f"--set=name={name}", f"--set=output={{checkpoints}}/{name}", *[f"--set={o}" for o in overrides]]


TRAIN_LIMIT_S = 300  # one `llava-kit train` run of a test; tests mark their pytest timeout from it


def limit_for(*subprocess_limits: float) -> "pytest.MarkDecorator":
    """A pytest timeout that outlasts every subprocess limit the test (and its fixtures) may wait out,
    so a slow shared machine fails nothing that would have passed."""
    import pytest

    return pytest.mark.timeout(int(sum(subprocess_limits)) + 60)


def run_train(world: Path, stage: str, name: str, overrides: list[str], nproc: int = 1,
              timeout: float = TRAIN_LIMIT_S, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_args(stage, name, overrides), env=train_env(world, nproc, **env),
                          capture_output=True, text=True, timeout=timeout)


def start_train(world: Path, stage: str, name: str, overrides: list[str], nproc: int = 1,
                output: Path | None = None, **env: str) -> subprocess.Popen:
    """Popen of `llava-kit train`; with `output`, stdout and stderr go to that file instead of pipes
    (two processes write more than a pipe holds, and an unread full pipe stalls training)."""
    args, environment = train_args(stage, name, overrides), train_env(world, nproc, **env)
    if output is None:
        return subprocess.Popen(args, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with open(output, "w") as sink:
        process = subprocess.Popen(args, env=environment, stdout=sink, stderr=subprocess.STDOUT, text=True)
    process.output_path = output
    return process


def output_of(process: subprocess.Popen) -> str:
    """What the process wrote to stderr (its pipe, or the `output` file of start_train)."""
    path = getattr(process, "output_path", None)
    return Path(path).read_text() if path is not None else process.stderr.read()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process and its descendants: torchrun's workers live in their own sessions and
    would outlive a killed launcher."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc {process.returncode}) before {what}:\n"
                                 f"{output_of(process)[-3000:]}")
        if time.monotonic() > deadline:
            kill_tree(process)
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(folder) / "model.safetensors")


def assert_bit_identical(expected: Path, actual: Path) -> None:
    """torch.equal on every tensor of model.safetensors."""
    a, b = weights(expected), weights(actual)
    assert a.keys() == b.keys()
    differ = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differ, f"{len(differ)} of {len(a)} tensors differ, e.g. {differ[:3]}"


def logged_steps(world: Path, name: str) -> list[dict]:
    """The run's per-step log entries (loss, grad_norm, ...) from runs/<name>/log_history.json."""
    history = json.loads((world / "runs" / name / "log_history.json").read_text())
    return [entry for entry in history if "loss" in entry]


def events(world: Path, name: str, runs: Path | None = None) -> list[dict]:
    return EventLog((runs or world / "runs") / name / "events.jsonl").read()


def new_dataset(source: Path, target: Path) -> tuple[list[dict], Path]:
    """A copy of a dataset folder's images, and its records to edit before `write_dataset`."""
    shutil.copytree(source / "images", target / "images")
    return json.loads((source / "data.json").read_text()), target / "images"


def write_dataset(target: Path, records: list[dict]) -> Path:
    (target / "data.json").write_text(json.dumps(records))
    write_manifest(target, "dataset", file_patterns=("data.json",), extra={"source": "planted bad samples"})
    return target


def data_overrides(folder: Path) -> list[str]:
    return [f"data.path={folder}/data.json", f"data.image_folder={folder}/images"]


# What a planted fault does to a record, and a word its skip reason must contain.
FAULTS = ("missing", "corrupt", "truncated", "roles", "tags", "too_long")
REASON_WORDS = {"missing": "missing image", "corrupt": "unreadable", "truncated": "unreadable",
                "roles": "alternate", "tags": "<image> tags", "too_long": "exceed model_max_length"}


def plant_fault(record: dict, fault: str, images: Path) -> dict:
    """A broken copy of an image record (the broken files are written under `images`)."""
    broken = json.loads(json.dumps(record))
    sample_id, turns = broken["id"], broken["conversations"]
    if fault == "missing":
        broken["image"] = f"absent-{sample_id}.png"
    elif fault in ("corrupt", "truncated"):
        data = (images / record["image"]).read_bytes()
        (images / f"{fault}-{sample_id}.png").write_bytes(
            bytes(range(256)) * 4 if fault == "corrupt" else data[:len(data) * 2 // 3])
        broken["image"] = f"{fault}-{sample_id}.png"
    elif fault == "roles":
        turns[1]["from"] = "human"
    elif fault == "tags":
        turns[0]["value"] = "<image>\n" + turns[0]["value"]
    elif fault == "too_long":
        turns[1]["value"] = " ".join(["a small red circle on the left of a blue square"] * 200)
    return broken


def plant_faults(records: list[dict], positions: list[int], images: Path) -> dict[str, str]:
    """Break the records at `positions` in place, cycling through FAULTS; returns {id: fault}."""
    planted = {}
    for n, position in enumerate(positions):
        fault = FAULTS[n % len(FAULTS)]
        records[position] = plant_fault(records[position], fault, images)
        planted[records[position]["id"]] = fault
    return planted
