"""`llava-kit doctor`: can this box run a step? Engine, NVIDIA runtime, GPUs vs NUM_GPUS, which GPU image
variant the driver and GPUs take, /dev/shm, free disk per volume and GPU peer-to-peer, each finding with
its fix.

Runs on the Docker host before `docker compose run STEP` (engine checks on), inside a container or on
a bare host such as AutoDL (engine checks off: detected, or `--no-engine`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from llava.containers import engine, gpu, host
from llava.containers.cuda_variant import variant_finding
from llava.containers.findings import DoctorReport, Finding, Runtime
from llava.errors import KitError
from llava.paths import VolumeLayout


def in_container() -> bool:
    """Docker writes /.dockerenv and Podman /run/.containerenv into every container."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def detect_runtime(env: Mapping[str, str]) -> Runtime:
    """Where doctor runs: `docker-host` (an engine is named or its socket exists: compose's side),
    `container` (inside one: a compose service, an AutoDL instance) or `bare` (a host without an engine)."""
    if in_container():
        return "container"
    if env.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        return "docker-host"
    return "bare"


def engine_expected(env: Mapping[str, str]) -> bool:
    """Check the engine when one is named or its default socket exists.

    Inside a container with no socket, or on a host without an engine (a laptop, a bare GPU box), there
    is no engine to ask: `--engine` asks anyway.
    """
    return bool(env.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()


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

    runtime = detect_runtime(env)
    facts = _engine_findings(report, env, check_engine, needs_gpu, runtime)
    if runtime == "docker-host" and check_engine is False:
        runtime = "bare"  # --no-engine on a Docker host: the user runs llava-kit here, not compose

    names, source = gpu.gpu_names()
    report.findings.append(gpu.gpu_count_finding(names, source, wanted, needs_gpu, runtime))
    if needs_gpu and source == "nvidia-smi" and names:  # driver and archs decide which GPU image runs here
        host_gpus = gpu.host_gpus()
        if host_gpus:
            report.findings.append(variant_finding(host_gpus, runtime, env))
    if needs_gpu and wanted > 1 and len(names) > 1:  # peer-to-peer only matters between two GPUs or more
        report.findings.append(gpu.p2p_finding(names, wanted, gpu.p2p_matrix(),
                                               env.get("NCCL_P2P_DISABLE") == "1", runtime))
    report.findings.append(host.shm_finding(float(need.get("shm_gib", 0)), multi_gpu=needs_gpu and wanted > 1))
    report.findings.extend(host.disk_findings(volume_layout(env, facts), need.get("disk_gib", {})))
    report.runtime = runtime
    return report


def _engine_findings(report: DoctorReport, env: Mapping[str, str], check_engine: bool | None, needs_gpu: bool,
                     runtime: Runtime) -> engine.EngineFacts | None:
    """Engine and NVIDIA-runtime findings; `--engine` without the docker SDK is a usage error."""
    explicit = check_engine is True
    if check_engine is None:
        check_engine = engine_expected(env)
    if not check_engine:
        report.findings.append(Finding("engine", "info", _no_engine_reason(runtime)))
        return None
    if not engine.sdk_available():
        if explicit:
            raise KitError("doctor --engine: the Python docker SDK is not installed, so the engine cannot be asked; "
                           f"{engine.SDK_FIX}, or run `doctor --no-engine`")
        where = env.get("DOCKER_HOST") or "/var/run/docker.sock"
        report.findings.append(Finding("engine", "warn", f"an engine is configured here ({where}) but the Python "
                                       "docker SDK is not installed: engine not checked", engine.SDK_FIX))
        return None
    facts, finding = engine.probe_engine()
    report.findings.append(finding)
    if facts is not None:
        report.findings.append(engine.nvidia_runtime_finding(facts, needs_gpu))
    return facts


def _no_engine_reason(runtime: Runtime) -> str:
    if runtime == "container":
        return "inside a container without DOCKER_HOST: engine checks skipped (`--engine` to check one anyway)"
    if runtime == "bare":
        return ("no Docker engine on this host (no DOCKER_HOST, no /var/run/docker.sock): checked for running "
                "`llava-kit` directly here; `--engine` checks an engine anyway")
    return "engine checks skipped (--no-engine)"
