"""What differs between the recorded run's environment and this one, and what that means for the comparison."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from llava.manifest import git_commit, package_versions


@dataclass
class EnvironmentDiff:
    differences: list[str] = field(default_factory=list)
    exact: bool = False  # identical environment on CPU: bit-identical losses are expected
    needs_gpus: int = 0  # GPUs the recorded run used that this machine lacks (0: none missing)
    meaning: str = ""


def _gpus_here() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def compare_environment(recorded: dict[str, Any], profile: str | None) -> EnvironmentDiff:
    diff = EnvironmentDiff()
    here = package_versions()
    for name, version in sorted((recorded.get("versions") or {}).items()):
        if here.get(name) != version:
            diff.differences.append(f"package {name}: recorded {version}, here {here.get(name, 'not installed')}")
    if not recorded.get("versions"):
        diff.differences.append("package versions: not recorded")
    kit = git_commit()
    if recorded.get("git_commit") != kit:
        diff.differences.append(f"llava-kit commit: recorded {recorded.get('git_commit') or 'none'}, "
                                f"here {kit or 'unknown'}")
    image = os.environ.get("LLAVA_KIT_IMAGE_DIGEST")
    if recorded.get("image_digest") != image:
        diff.differences.append(f"image digest: recorded {recorded.get('image_digest') or 'none (bare host)'}, "
                                f"here {image or 'none (bare host)'}")
    gpus, device = _gpus_here(), recorded.get("device") or "not recorded"
    world = recorded.get("world_size") or 1
    if device == "cuda" and gpus < world:
        diff.needs_gpus = world
    if device != ("cuda" if gpus else "cpu") or (device == "cuda" and gpus != world) or world != 1 and not gpus:
        diff.differences.append(f"devices: recorded {world} x {device}, here "
                                f"{f'{gpus} x cuda' if gpus else 'CPU only'}")
    if profile and profile != (recorded.get("profile") or "seed"):
        diff.differences.append(f"profile: recorded {recorded.get('profile') or 'seed'}, here {profile}")
    diff.exact = not diff.differences and device == "cpu"
    diff.meaning = (
        "identical environment on CPU: every logged loss and every eval row must match bit for bit"
        if diff.exact else
        "the environment differs, so kernels and reduction orders may differ: losses and accuracy are held "
        "to the band in llava/reproduce/tolerances.yaml, not compared bit for bit")
    return diff
