"""`llava-kit doctor`: can this box run a step? Engine, NVIDIA runtime, GPUs vs NUM_GPUS, /dev/shm,
free disk per volume and GPU peer-to-peer, each finding with its fix.

Runs on the Docker host before `docker compose run STEP` (engine checks on), inside a container or on
a bare host such as AutoDL (engine checks off: detected, or `--no-engine`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from llava.containers import engine, gpu, host
from llava.containers.findings import DoctorReport, Finding
from llava.errors import KitError
from llava.paths import VolumeLayout


def in_container() -> bool:
    """Docker writes /.dockerenv and Podman /run/.containerenv into every container."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def engine_expected(env: Mapping[str, str]) -> bool:
    """Check the engine when one is named or its default socket exists, or when on a plain host.

    Inside a container with no socket (a compose service, an AutoDL instance) there is no engine to ask.
    """
    return bool(env.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists() or not in_container()


def wanted_gpus(env: Mapping[str, str]) -> int:
    raw = env.get("NUM_GPUS", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise KitError(f"NUM_GPUS={raw!r} is not a positive whole number; set it to the GPUs per node to train on")
    return value


def volume_layout(env: Mapping[str, str], facts: engine.EngineFacts | None) -> VolumeLayout:
    """Where the step's data lives as seen from here.

    LLAVA_KIT_DATA_ROOT (compose.hostdirs.yaml) names host folders; otherwise compose keeps named
    volumes under the engine's root dir; inside a container or on a bare host it is VolumeLayout's env.
    """
    if env.get("LLAVA_KIT_DATA_ROOT"):
        return VolumeLayout.from_env(env["LLAVA_KIT_DATA_ROOT"])
    if facts is not None and facts.local and facts.root_dir and Path(facts.root_dir).exists():
        store = Path(facts.root_dir) / "volumes"
        return VolumeLayout(models=store, datasets=store, checkpoints=store, runs=store, hf_cache=store)
    return VolumeLayout.from_env()


def run_doctor(stage: str, *, check_engine: bool | None = None, needs_file: str | os.PathLike | None = None,
               env: Mapping[str, str] | None = None) -> DoctorReport:
    """All checks for `stage` (a compose service name); never raises for a failed check, only for bad input."""
    env = os.environ if env is None else env
    needs = host.load_needs(needs_file)
    if stage not in needs:
        raise KitError(f"unknown step {stage!r}; doctor knows {', '.join(needs)}")
    need = needs[stage]
    needs_gpu = bool(need.get("gpu"))
    wanted = wanted_gpus(env)
    report = DoctorReport(stage)

    facts = None
    if check_engine is None:
        check_engine = engine_expected(env)
    if check_engine:
        facts, finding = engine.probe_engine()
        report.findings.append(finding)
        if facts is not None:
            report.findings.append(engine.nvidia_runtime_finding(facts, needs_gpu))
    else:
        report.findings.append(Finding("engine", "info", "engine checks skipped (inside a container without DOCKER_HOST, or --no-engine)"))

    names, source = gpu.gpu_names()
    report.findings.append(gpu.gpu_count_finding(names, source, wanted, needs_gpu))
    if needs_gpu:
        matrix = gpu.p2p_matrix() if len(names) > 1 and wanted > 1 else None
        report.findings.append(gpu.p2p_finding(names, wanted, matrix, env.get("NCCL_P2P_DISABLE") == "1"))
    report.findings.append(host.shm_finding(float(need.get("shm_gib", 0)), multi_gpu=needs_gpu and wanted > 1))
    report.findings.extend(host.disk_findings(volume_layout(env, facts), need.get("disk_gib", {})))
    return report
