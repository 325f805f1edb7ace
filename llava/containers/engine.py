"""Docker engine checks for `doctor`, through the docker SDK (the same API compose talks to)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

from llava.containers.findings import Finding

DEFAULT_HOST = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class EngineFacts:
    version: str
    root_dir: str
    runtimes: frozenset[str]
    local: bool  # the engine runs on this machine, so its root dir is a path here


def _first_line(err: BaseException, limit: int = 240) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:limit]


SDK_FIX = "pip install 'llava-kit[containers]' (the docker SDK, docker==7.2.0)"


def sdk_available() -> bool:
    """doctor talks to the engine through the docker SDK, an optional extra (`[containers]`)."""
    return importlib.util.find_spec("docker") is not None


def probe_engine() -> tuple[EngineFacts | None, Finding]:
    """Ping the engine named by DOCKER_HOST (or the default socket) and read what doctor needs."""
    import docker
    import requests

    where = os.environ.get("DOCKER_HOST", DEFAULT_HOST)
    try:
        client = docker.from_env(timeout=10)
        info = client.info()
        version = client.version().get("Version", "?")
    except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
        fix = ("start the engine (`sudo systemctl start docker`) or point DOCKER_HOST at it; on hosts that "
               "cannot run Docker (AutoDL) use the bare path in docs/containers.md and `doctor --no-engine`")
        return None, Finding("engine", "block", f"cannot reach the Docker engine at {where}: {_first_line(err)}", fix)
    facts = EngineFacts(version=version, root_dir=info.get("DockerRootDir", ""),
                        runtimes=frozenset(info.get("Runtimes") or {}),
                        local=where.startswith("unix://") or where.startswith("npipe://"))
    return facts, Finding("engine", "ok", f"Docker engine {version} at {where}")


def nvidia_runtime_finding(facts: EngineFacts, needs_gpu: bool) -> Finding:
    """GPU reservations in compose need the NVIDIA Container Toolkit registered with the engine."""
    toolkit = shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-ctk")
    if "nvidia" in facts.runtimes or toolkit:
        how = "nvidia runtime registered" if "nvidia" in facts.runtimes else f"toolkit at {toolkit}"
        return Finding("nvidia-runtime", "ok", how)
    message = f"no NVIDIA container runtime (engine runtimes: {', '.join(sorted(facts.runtimes)) or 'none'})"
    if not needs_gpu:
        return Finding("nvidia-runtime", "info", message + "; not needed for this step")
    return Finding("nvidia-runtime", "block", message,
                   "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure "
                   "--runtime=docker && sudo systemctl restart docker`")
