"""GPU checks for `doctor`: how many GPUs, which ones, and whether peer-to-peer between them is safe.

Reads `nvidia-smi` when it is on PATH (the host, or a container with the NVIDIA runtime), else
torch.cuda when torch imports. The p2p matrix parser is hand-written: no library reads
`nvidia-smi topo -p2p r`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from llava.containers.cuda_variant import QUERY, QUERY_WITHOUT_ARCH, HostGpu, parse_gpu_query
from llava.containers.findings import Finding

# GeForce cards whose driver reports P2P as available although NCCL's P2P transport hangs or
# corrupts data on them; NCCL_P2P_DISABLE=1 makes NCCL go through host memory instead.
P2P_BROKEN_MODELS = ("RTX 4090", "RTX 4080", "RTX 4070")


def _nvidia_smi(*args: str, timeout: float = 20) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpu_names() -> tuple[list[str], str]:
    """Names of the visible GPUs and what saw them ("nvidia-smi", "torch", or why none could)."""
    out = _nvidia_smi("--query-gpu=name", "--format=csv,noheader")
    if out is not None:
        return [line.strip() for line in out.splitlines() if line.strip()], "nvidia-smi"
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()):
        return [], "no NVIDIA driver"  # skip importing torch (seconds) when there cannot be a GPU
    try:
        import torch
    except ImportError:
        return [], "none"
    if not torch.cuda.is_available():
        return [], "torch"
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], "torch"


def host_gpus() -> list[HostGpu]:
    """Name, driver version and compute capability of every GPU nvidia-smi sees ([] without nvidia-smi)."""
    out = _nvidia_smi(*QUERY)
    if out is None:  # drivers before R510 do not know the compute_cap field
        out = _nvidia_smi(*QUERY_WITHOUT_ARCH)
    return parse_gpu_query(out or "")


def parse_p2p_matrix(text: str) -> dict[tuple[int, int], str]:
    """`nvidia-smi topo -p2p r` -> {(i, j): "OK" | "NS" | "CNS" | ...} for every pair i != j."""
    header: list[int] = []
    matrix: dict[tuple[int, int], str] = {}
    for line in text.splitlines():
        cells = line.split()
        if not cells or not cells[0].startswith("GPU"):
            continue  # blank lines and the legend
        if all(c.startswith("GPU") for c in cells):  # the column header
            header = [int(c[3:]) for c in cells]
            continue
        row = int(cells[0][3:])
        for col, status in zip(header, cells[1:]):
            if col != row:
                matrix[(row, col)] = status
    return matrix


def p2p_matrix() -> dict[tuple[int, int], str] | None:
    out = _nvidia_smi("topo", "-p2p", "r")
    return parse_p2p_matrix(out) if out else None


def _cpu_route(runtime: str) -> str:
    if runtime == "docker-host":
        return "or use the `smoke` service (`docker compose run --rm smoke`) for a CPU-only run"
    return "or run `llava-kit smoke` (the whole pipeline on the tiny model, on CPU; `doctor --stage smoke` checks it)"


def _launch_with(runtime: str, found: int) -> str:
    if runtime == "docker-host":
        return f"set NUM_GPUS={found} (compose passes it to `llava-kit train`)"
    return f"set NUM_GPUS={found} or pass `llava-kit train --nproc {found}`"


def gpu_count_finding(names: list[str], source: str, wanted: int, needs_gpu: bool,
                      runtime: str = "docker-host") -> Finding:
    """Compare the GPUs this box shows with NUM_GPUS (what `llava-kit train` launches)."""
    found = len(names)
    seen = f"{found} GPU(s) ({source})" + (f": {', '.join(names)}" if names else "")
    if not needs_gpu:
        return Finding("gpus", "info", f"{seen}; this step runs on CPU")
    if found == 0:
        return Finding("gpus", "block", f"no CUDA GPU visible ({source}): this step trains the real model on NVIDIA GPUs",
                       "run on a box with NVIDIA GPUs and drivers (nvidia-smi must work), " + _cpu_route(runtime))
    if found < wanted:
        return Finding("gpus", "block", f"NUM_GPUS={wanted} but only {seen}", _launch_with(runtime, found))
    if found > wanted:
        return Finding("gpus", "info", f"{seen}; NUM_GPUS={wanted} uses {wanted} of them",
                       _launch_with(runtime, found) + " to train on all of them")
    return Finding("gpus", "ok", seen)


def p2p_finding(names: list[str], wanted: int, matrix: dict[tuple[int, int], str] | None,
                p2p_disabled: bool, runtime: str = "docker-host") -> Finding:
    """Multi-GPU runs on cards with broken P2P need NCCL_P2P_DISABLE=1, else NCCL hangs."""
    if wanted < 2 or len(names) < 2:
        return Finding("p2p", "info", "single GPU: peer-to-peer not used")
    if p2p_disabled:
        return Finding("p2p", "ok", "NCCL_P2P_DISABLE=1: NCCL copies through host memory")
    broken = sorted({n for n in names if any(model in n for model in P2P_BROKEN_MODELS)})
    if broken:
        before = "`docker compose run` (compose passes it on)" if runtime == "docker-host" else "`llava-kit train`"
        return Finding("p2p", "block", f"{', '.join(broken)}: NCCL peer-to-peer hangs on these cards",
                       f"export NCCL_P2P_DISABLE=1 before {before}")
    if matrix is None:
        return Finding("p2p", "info", "could not read `nvidia-smi topo -p2p r`; P2P support unknown")
    used = range(wanted)
    unsupported = sorted({f"GPU{i}-GPU{j}:{s}" for (i, j), s in matrix.items()
                          if i in used and j in used and s != "OK"})
    if unsupported:
        return Finding("p2p", "warn", f"P2P not supported between {', '.join(unsupported)}",
                       "NCCL falls back to shared memory by itself; if it hangs, export NCCL_P2P_DISABLE=1")
    return Finding("p2p", "ok", f"P2P reported OK between the {wanted} GPUs used")
