"""`llava-kit doctor` on this (CPU, engine-less) machine: real sockets, real file systems, real CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llava.containers import gpu, host
from llava.containers.doctor import run_doctor, volume_layout, wanted_gpus
from llava.containers.engine import EngineFacts
from llava.errors import KitError
from llava.paths import VolumeLayout

LLAVA_KIT = Path(sys.executable).parent / "llava-kit"
GIB = 1024**3

# `nvidia-smi topo -p2p r` on a 4-GPU box where GPU3 sits behind another root complex
P2P_SAMPLE = """\
 \tGPU0\tGPU1\tGPU2\tGPU3\t
 GPU0\tX\tOK\tOK\tCNS\t
 GPU1\tOK\tX\tOK\tCNS\t
 GPU2\tOK\tOK\tX\tCNS\t
 GPU3\tCNS\tCNS\tCNS\tX\t

Legend:

  X    = Self
  OK   = Status Ok
  CNS  = Chipset not supported
  GNS  = GPU not supported
  TNS  = Topology not supported
  NS   = Not supported
  U    = Unknown
"""


@pytest.fixture()
def closed_socket(tmp_path):
    """A unix socket path with nobody listening: connect() is refused, like a stopped dockerd."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return path


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """VolumeLayout's env pointed at a temp dir (the env is the real interface, not a mock)."""
    for var in ("LLAVA_KIT_MODELS", "LLAVA_KIT_DATASETS", "LLAVA_KIT_CHECKPOINTS", "LLAVA_KIT_RUNS", "HF_HOME",
                "LLAVA_KIT_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLAVA_KIT_HOME", str(tmp_path / "data"))
    return tmp_path


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(LLAVA_KIT), "doctor", *args], capture_output=True, text=True, env=env, timeout=120)


def test_doctor_without_engine_says_so_and_exits_nonzero(closed_socket, tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{closed_socket}", "LLAVA_KIT_HOME": str(tmp_path)}
    done = cli("--stage", "smoke", "--json", env=env)
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["stage"] == "smoke" and report["blocking"] is True
    engine = report["findings"][0]
    assert engine["check"] == "engine" and engine["status"] == "block"
    assert f"cannot reach the Docker engine at unix://{closed_socket}" in engine["message"]
    assert "DOCKER_HOST" in engine["fix"] and "docs/containers.md" in engine["fix"]
    # the other checks still ran
    assert [f["check"] for f in report["findings"][1:]] == ["gpus", "shm", "disk"]
    assert not any(f["status"] == "block" for f in report["findings"][1:])

    table = cli("--stage", "smoke", env=env)
    assert table.returncode == 1
    assert "BLOCK" in table.stdout and "cannot reach the Docker" in table.stdout and "blocked" in table.stdout


def test_doctor_without_engine_checks_passes_for_a_cpu_step(home):
    report = run_doctor("smoke", check_engine=False, env={})
    assert not report.blocking
    checks = {f.check: f for f in report.findings}
    assert checks["engine"].status == "info"
    assert checks["gpus"].status == "info"
    assert "nvidia-runtime" not in checks and "p2p" not in checks
    # disk was measured where VolumeLayout puts runs/ (not created yet: its nearest parent counts)
    assert str(home / "data" / "runs") in checks["disk"].message


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this box has NVIDIA GPUs")
def test_gpu_step_is_blocked_on_a_box_without_gpus(home):
    report = run_doctor("stage2", check_engine=False, env={"NUM_GPUS": "2"})
    assert report.blocking
    gpus = next(f for f in report.findings if f.check == "gpus")
    assert gpus.status == "block" and "no CUDA GPU visible" in gpus.message and "smoke" in gpus.fix


def test_disk_needs_come_from_data_and_add_up_per_file_system(home, tmp_path):
    free = shutil.disk_usage(tmp_path).free / GIB
    needs = tmp_path / "needs.yaml"
    # each volume alone fits, both together do not: they share one file system
    needs.write_text(f"smoke:\n  gpu: false\n  disk_gib: {{runs: {free * 0.6:.3f}, checkpoints: {free * 0.6:.3f}}}\n")
    report = run_doctor("smoke", check_engine=False, needs_file=needs, env={})
    disk = [f for f in report.findings if f.check == "disk"]
    assert len(disk) == 1 and disk[0].status == "block" and report.blocking
    assert "runs (" in disk[0].message and "checkpoints (" in disk[0].message
    assert "LLAVA_KIT_DATA_ROOT" in disk[0].fix

    needs.write_text("smoke:\n  gpu: false\n  disk_gib: {runs: 0.001}\n")
    ok = [f for f in run_doctor("smoke", check_engine=False, needs_file=needs, env={}).findings if f.check == "disk"]
    assert ok[0].status == "ok"
    reported_free = float(ok[0].message.split(" GiB free")[0])
    assert abs(reported_free - free) < 0.5


def test_packaged_needs_cover_every_compose_step():
    needs = host.load_needs()
    assert set(needs) == {"prepare", "stage1", "stage1_5", "stage2", "eval", "publish", "smoke"}
    assert [step for step, need in needs.items() if need["gpu"]] == ["stage1", "stage1_5", "stage2", "eval"]
    assert all(need["disk_gib"] for need in needs.values())


def test_bad_inputs_are_kit_errors(tmp_path):
    bad = tmp_path / "needs.yaml"
    bad.write_text("smoke:\n  disk_gib: {scratch: 1}\n")
    with pytest.raises(KitError, match=r"needs.yaml: step 'smoke' names unknown volume\(s\) \['scratch'\]"):
        host.load_needs(bad)
    with pytest.raises(KitError, match="cannot read needs file"):
        host.load_needs(tmp_path / "missing.yaml")
    with pytest.raises(KitError, match="unknown step 'stage3'"):
        run_doctor("stage3", check_engine=False, env={})
    with pytest.raises(KitError, match="NUM_GPUS='two'"):
        wanted_gpus({"NUM_GPUS": "two"})
    assert wanted_gpus({}) == 1 and wanted_gpus({"NUM_GPUS": "8"}) == 8


def test_shm_is_measured_on_the_real_mount():
    stat = os.statvfs("/dev/shm")
    size = stat.f_blocks * stat.f_frsize / GIB
    ok = host.shm_finding(0, multi_gpu=True)
    assert ok.status == "ok" and f"{size:.2f} GiB" in ok.message
    too_small = size + 1
    assert host.shm_finding(too_small, multi_gpu=True).status == "block"
    assert host.shm_finding(too_small, multi_gpu=False).status == "warn"
    assert "ipc: host" in host.shm_finding(too_small, multi_gpu=True).fix
    assert host.shm_finding(1, multi_gpu=True, shm="/nonexistent/shm").status == "warn"


def test_p2p_matrix_parser():
    matrix = gpu.parse_p2p_matrix(P2P_SAMPLE)
    assert len(matrix) == 12  # 4 x 3 ordered pairs, no diagonal
    assert matrix[(0, 1)] == "OK" and matrix[(2, 0)] == "OK"
    assert matrix[(0, 3)] == matrix[(3, 2)] == "CNS"


def test_p2p_rules():
    rtx = ["NVIDIA GeForce RTX 4090"] * 2
    blocked = gpu.p2p_finding(rtx, 2, None, p2p_disabled=False)
    assert blocked.status == "block" and "NCCL_P2P_DISABLE=1" in blocked.fix
    assert gpu.p2p_finding(rtx, 2, None, p2p_disabled=True).status == "ok"
    assert gpu.p2p_finding(rtx, 1, None, p2p_disabled=False).status == "info"  # one GPU used: no P2P

    h100 = ["NVIDIA H100 80GB HBM3"] * 4
    matrix = gpu.parse_p2p_matrix(P2P_SAMPLE)
    assert gpu.p2p_finding(h100, 3, matrix, p2p_disabled=False).status == "ok"  # GPU3 not used
    partial = gpu.p2p_finding(h100, 4, matrix, p2p_disabled=False)
    assert partial.status == "warn" and "GPU0-GPU3:CNS" in partial.message
    assert gpu.p2p_finding(h100, 4, None, p2p_disabled=False).status == "info"


def test_gpu_count_against_num_gpus():
    four = ["NVIDIA A100-SXM4-80GB"] * 4
    short = gpu.gpu_count_finding(four, "nvidia-smi", 8, needs_gpu=True)
    assert short.status == "block" and "NUM_GPUS=8 but only 4 GPU(s)" in short.message and short.fix == (
        "set NUM_GPUS=4 (compose passes it to `llava-kit train`)")
    spare = gpu.gpu_count_finding(four, "nvidia-smi", 2, needs_gpu=True)
    assert spare.status == "info" and "set NUM_GPUS=4" in spare.fix
    assert gpu.gpu_count_finding(four, "nvidia-smi", 4, needs_gpu=True).status == "ok"
    assert gpu.gpu_count_finding([], "none", 1, needs_gpu=True).status == "block"
    assert gpu.gpu_count_finding([], "none", 1, needs_gpu=False).status == "info"


def test_where_doctor_looks_for_the_volumes(tmp_path, home):
    root = tmp_path / "autodl-tmp"
    layout = volume_layout({"LLAVA_KIT_DATA_ROOT": str(root)}, None)
    assert layout.checkpoints == root / "checkpoints" and layout.models == root / "models"
    engine_root = tmp_path / "docker-root"
    engine_root.mkdir()
    facts = EngineFacts(version="20.10", root_dir=str(engine_root), runtimes=frozenset(), local=True)
    named = volume_layout({}, facts)
    assert named.runs == named.models == engine_root / "volumes"
    remote = EngineFacts(version="20.10", root_dir="/var/lib/docker", runtimes=frozenset(), local=False)
    assert volume_layout({}, remote) == VolumeLayout.from_env()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this box has NVIDIA GPUs")
def test_a_cpu_host_gets_no_peer_to_peer_finding(home):
    report = run_doctor("stage2", check_engine=False, env={"NUM_GPUS": "2"})
    assert "p2p" not in {f.check for f in report.findings}  # no P2P question without two GPUs
    assert report.runtime in ("bare", "container")
    gpus = next(f for f in report.findings if f.check == "gpus")
    assert "llava-kit smoke" in gpus.fix and "service" not in gpus.fix  # worded for running llava-kit here


def test_fixes_are_worded_for_the_runtime():
    compose = gpu.gpu_count_finding([], "no NVIDIA driver", 1, True, "docker-host")
    assert "`smoke` service (`docker compose run --rm smoke`)" in compose.fix
    bare = gpu.gpu_count_finding([], "no NVIDIA driver", 1, True, "bare")
    assert "`llava-kit smoke`" in bare.fix and "compose" not in bare.fix
    few = gpu.gpu_count_finding(["NVIDIA H100"], "nvidia-smi", 2, True, "container")
    assert few.status == "block" and "`llava-kit train --nproc 1`" in few.fix
    assert "compose passes it" in gpu.gpu_count_finding(["NVIDIA H100"], "nvidia-smi", 2, True, "docker-host").fix
    rtx = ["NVIDIA GeForce RTX 4090"] * 2
    assert gpu.p2p_finding(rtx, 2, None, False, "bare").fix == "export NCCL_P2P_DISABLE=1 before `llava-kit train`"
    assert "`docker compose run`" in gpu.p2p_finding(rtx, 2, None, False, "docker-host").fix


def test_runtime_and_engine_expectation_follow_the_environment(monkeypatch):
    from llava.containers import doctor
    monkeypatch.setattr(doctor, "in_container", lambda: False)  # what /.dockerenv would say on a plain host
    assert doctor.engine_expected({"DOCKER_HOST": "unix:///x.sock"}) is True
    assert doctor.detect_runtime({"DOCKER_HOST": "unix:///x.sock"}) == "docker-host"
    if not Path("/var/run/docker.sock").exists():
        assert doctor.detect_runtime({}) == "bare" and doctor.engine_expected({}) is False
