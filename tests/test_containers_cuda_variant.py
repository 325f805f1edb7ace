"""`llava-kit doctor` says which GPU image runs on a host, from its driver version and GPU archs.

nvidia-smi cannot run on this CPU box, so a stand-in on PATH serves recorded output in nvidia-smi's real
formats (csv,noheader query lines; the error a pre-R510 driver gives for the compute_cap field), and the
real `llava-kit doctor` CLI reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.containers.cuda_variant import HostGpu, build_runs_arch, parse_gpu_query, variant_finding
from llava.torch_builds import load_matrix

LLAVA_KIT = Path(sys.executable).parent / "llava-kit"

# `nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader` on four real box types
H100_R580 = "NVIDIA H100 80GB HBM3, 580.65.06, 9.0\nNVIDIA H100 80GB HBM3, 580.65.06, 9.0\n"
H100_R550 = "NVIDIA H100 80GB HBM3, 550.54.15, 9.0\n"
B200_R570 = "NVIDIA B200, 570.133.20, 10.0\n"
RTX5090_R580 = "NVIDIA GeForce RTX 5090, 580.82.09, 12.0\n"
RTX4090_R535 = "NVIDIA GeForce RTX 4090, 535.104.05, 8.9\nNVIDIA GeForce RTX 4090, 535.104.05, 8.9\n"
V100_R570 = "Tesla V100-SXM2-32GB, 570.86.15, 7.0\n"
# a pre-R510 driver: the compute_cap field is unknown (exit 2), name and driver still answer
T4_R470_ERROR = 'Field "compute_cap" is not a valid field to query.\n'
T4_R470 = "Tesla T4, 470.256.02\n"


def stand_in(tmp_path: Path, query: str, no_arch: str | None = None) -> Path:
    """An `nvidia-smi` on PATH answering the name, full and driver-only queries from recorded output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    names = "".join(line.split(",")[0] + "\n" for line in (no_arch or query).splitlines())
    script = bin_dir / "nvidia-smi"
    script.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
if "--query-gpu=name" in args:
    sys.stdout.write({names!r})
elif "--query-gpu=name,driver_version,compute_cap" in args:
    if {no_arch is not None!r}:
        sys.stdout.write({T4_R470_ERROR!r}); sys.exit(2)
    sys.stdout.write({query!r})
elif "--query-gpu=name,driver_version" in args:
    sys.stdout.write({(no_arch or query)!r})
else:
    sys.exit(2)
""")
    script.chmod(0o755)
    return bin_dir


def doctor(tmp_path: Path, bin_dir: Path, **env: str) -> dict:
    gpus = len(subprocess.run([bin_dir / "nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.splitlines())
    run_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NUM_GPUS": str(gpus),
               "LLAVA_KIT_HOME": str(tmp_path / "data"), **env}
    run_env.pop("DOCKER_HOST", None)
    done = subprocess.run([LLAVA_KIT, "doctor", "--stage", "stage1", "--json", "--no-engine"],
                          capture_output=True, text=True, env=run_env, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    return next(f for f in report["findings"] if f["check"] == "image")


def test_r580_hopper_box_runs_the_default_cuda_image(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, H100_R580))
    assert finding["status"] == "ok"
    assert "driver 580.65.06" in finding["message"] and "cuda image (torch 2.13.0, CUDA 13.0) runs here" in finding["message"]


def test_blackwell_on_r580_runs_the_cuda_image(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, RTX5090_R580))
    assert finding["status"] == "ok" and "sm_120" in finding["message"]


def test_older_driver_gets_the_legacy_image_and_its_build_command(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, RTX4090_R535))
    assert finding["status"] == "warn"
    assert "CUDA 13.0 needs driver R580+ (this host has 535)" in finding["message"]
    assert "cuda126 image (torch 2.13.0+cu126, up to sm_90)" in finding["message"]
    # bare host: the pip line from PyTorch's cu126 index
    assert "https://download.pytorch.org/whl/cu126 torch==2.13.0+cu126" in finding["fix"]


def test_legacy_build_command_on_a_docker_host():
    gpus = parse_gpu_query(H100_R550)
    finding = variant_finding(gpus, "docker-host", {})
    assert finding.status == "warn"
    assert "LLAVA_KIT_IMAGE=llava-kit:cuda126" in finding.fix and "--build-arg VARIANT=cuda126" in finding.fix


def test_blackwell_on_an_older_driver_is_blocked_with_the_driver_fix(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, B200_R570))
    assert finding["status"] == "block"
    assert "torch's cu126 build has no sm_100" in finding["message"]
    assert "upgrade the NVIDIA driver to R580" in finding["fix"] and "Blackwell" in finding["fix"]


def test_pre_ampere_gpu_is_blocked():
    finding = variant_finding(parse_gpu_query(V100_R570), "bare", {})
    assert finding.status == "block" and "sm_70: the images start at sm_80" in finding.message


def test_pre_r510_driver_without_compute_cap_still_gets_a_verdict(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, "", no_arch=T4_R470))
    assert finding["status"] == "block"
    assert "driver 470.256.02" in finding["message"] and "needs driver R580+" in finding["message"]


def test_running_the_cuda_image_on_an_old_driver_is_blocked(tmp_path):
    finding = doctor(tmp_path, stand_in(tmp_path, H100_R550), LLAVA_KIT_IMAGE_VARIANT="cuda")
    assert finding["status"] == "block" and "this is the cuda image, which cannot run here" in finding["message"]


def test_parse_and_arch_compatibility():
    gpus = parse_gpu_query(RTX4090_R535)
    assert gpus == [HostGpu("NVIDIA GeForce RTX 4090", "535.104.05", "8.9")] * 2
    archs = load_matrix()["torch"]["2.13.0"]["builds"]["cu126"]["archs"]
    assert build_runs_arch(archs, "8.9") and build_runs_arch(archs, "9.0")
    assert not build_runs_arch(archs, "10.0") and not build_runs_arch(archs, "12.0")


@pytest.mark.skipif(sys.platform != "linux", reason="stand-in is a script with a shebang")
def test_cpu_step_has_no_image_finding(tmp_path):
    bin_dir = stand_in(tmp_path, H100_R580)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LLAVA_KIT_HOME": str(tmp_path / "d")}
    env.pop("DOCKER_HOST", None)
    done = subprocess.run([LLAVA_KIT, "doctor", "--stage", "smoke", "--json", "--no-engine"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert all(f["check"] != "image" for f in json.loads(done.stdout)["findings"])
