"""Which GPU image variant runs on this host: the NVIDIA driver's version against each variant's CUDA, and
every GPU's architecture against the archs its torch build was compiled for.

The variants and their floors are data (llava/resources/torch_cuda.yaml): the default `cuda` image (torch
2.13.0's CUDA 13.0 build) needs driver R580+ and is the only one with Blackwell (sm_100, sm_120); the
legacy `cuda126` image runs on R525+ up to Hopper. The facts come from `nvidia-smi --query-gpu=name,
driver_version,compute_cap --format=csv,noheader` (one line per GPU: "NVIDIA H100 80GB HBM3, 580.65.06,
9.0"); drivers older than R510 do not know `compute_cap`, and then only the driver decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llava.containers.findings import Finding, Runtime
from llava.torch_builds import load_matrix, variant_build

QUERY = ("--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader")
QUERY_WITHOUT_ARCH = ("--query-gpu=name,driver_version", "--format=csv,noheader")


@dataclass(frozen=True)
class HostGpu:
    name: str
    driver: str
    arch: str | None  # "9.0"; None when the driver cannot report it

    @property
    def driver_major(self) -> int:
        return int(self.driver.split(".")[0])


def parse_gpu_query(text: str) -> list[HostGpu]:
    """nvidia-smi's csv,noheader lines -> one HostGpu per GPU (a third column is the compute capability)."""
    gpus = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) >= 2 and cells[1][:1].isdigit():
            arch = cells[2] if len(cells) > 2 and cells[2][:1].isdigit() else None
            gpus.append(HostGpu(cells[0], cells[1], arch))
    return gpus


def _arch_key(arch: str) -> tuple[int, int]:
    major, minor = arch.split(".")
    return int(major), int(minor)


def build_runs_arch(build_archs: list[str], arch: str) -> bool:
    """A cubin for sm_XY runs on sm_XZ with Z >= Y (same major): does the build have one for `arch`?"""
    major, minor = _arch_key(arch)
    return any(m == major and n <= minor for m, n in map(_arch_key, build_archs))


def variant_runs(spec: dict, gpus: list[HostGpu]) -> str | None:
    """None when the variant runs on all of `gpus`, else why not."""
    old = min(gpu.driver_major for gpu in gpus)
    if old < spec["min_driver"]:
        return f"CUDA {spec['cuda']} needs driver R{spec['min_driver']}+ (this host has {old})"
    floor = spec["arch_list"][0]
    for gpu in gpus:
        if gpu.arch is None:
            continue
        if _arch_key(gpu.arch) < _arch_key(floor):
            return f"{gpu.name} is sm_{gpu.arch.replace('.', '')}: the images start at sm_{floor.replace('.', '')} (bf16)"
        if not build_runs_arch(spec["archs"], gpu.arch):
            return f"torch's {spec['label']} build has no sm_{gpu.arch.replace('.', '')} ({gpu.name})"
    return None


def build_command(spec: dict, runtime: Runtime) -> str:
    """How to get this variant where doctor runs: compose's build, or the bare path's pip line."""
    if runtime == "docker-host":
        if spec["variant"] == "cuda":
            return "`docker compose build` (the default cuda image)"
        return (f"`export LLAVA_KIT_IMAGE={spec['image']}` and `docker compose build --build-arg "
                f"VARIANT={spec['variant']} prepare` (keep LLAVA_KIT_IMAGE set for every `docker compose run`)")
    if spec["build"] == "cu130" and spec["pypi"]:
        return "README's bare-path lines (`pip install --require-hashes` of docker/requirements-cuda.lock: PyPI's CUDA 13.0 torch)"
    return (f"`pip install --index-url {spec['index']} torch=={spec['torch']}+{spec['label']}` first, then README's bare-path "
            "lines without the torch, triton, nvidia-* and cuda-* lines of the lock (docs/containers.md)")


def variant_finding(gpus: list[HostGpu], runtime: Runtime, env: Mapping[str, str],
                    matrix: dict | None = None, torch_version: str = "2.13.0") -> Finding:
    """Which image variant runs on these GPUs and this driver, with the command that builds it."""
    matrix = matrix or load_matrix()
    specs = [variant_build(matrix, torch_version, name) for name in matrix["variants"]]
    why_not = {spec["variant"]: variant_runs(spec, gpus) for spec in specs}
    seen = f"driver {min(gpus, key=lambda g: g.driver_major).driver}, " + ", ".join(
        f"{gpu.name} (sm_{gpu.arch.replace('.', '')})" if gpu.arch else gpu.name for gpu in gpus)
    running = env.get("LLAVA_KIT_IMAGE_VARIANT")
    fits = [spec for spec in specs if why_not[spec["variant"]] is None]
    if not fits:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in why_not.items())
        blackwell = any(gpu.arch and _arch_key(gpu.arch) >= (10, 0) for gpu in gpus)
        fix = ("upgrade the NVIDIA driver to R580 or newer: Blackwell GPUs run only the CUDA 13 (cuda) image"
               if blackwell else "upgrade the NVIDIA driver to R580 or newer (the cuda image) or R525+ (cuda126)")
        return Finding("image", "block", f"{seen}: no image variant runs here ({reasons})", fix)
    best = fits[0]
    if running in why_not and why_not[running] is not None:
        return Finding("image", "block", f"{seen}: this is the {running} image, which cannot run here "
                       f"({why_not[running]}); the {best['variant']} image can", build_command(best, runtime))
    if running in why_not or best["variant"] == "cuda":
        variant = running if running in why_not else best["variant"]
        return Finding("image", "ok", f"{seen}: the {variant} image (torch {torch_version}, CUDA "
                       f"{variant_build(matrix, torch_version, variant)['cuda']}) runs here")
    return Finding("image", "warn", f"{seen}: the default cuda image cannot run here ({why_not['cuda']}); the "
                   f"{best['variant']} image (torch {torch_version}+{best['label']}, up to sm_{best['archs'][-1].replace('.', '')}) can",
                   build_command(best, runtime))
