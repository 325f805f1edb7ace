"""Host checks for `doctor`: /dev/shm and free disk on each volume against what a step needs.

What each step needs is data (llava/resources/containers/needs.yaml), not code.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import fields
from importlib import resources
from pathlib import Path

from llava.containers.findings import Finding
from llava.errors import KitError
from llava.paths import VolumeLayout
from llava.typed_config import read_document

GIB = 1024**3


def load_needs(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """The per-step needs table: the packaged needs.yaml, or a user's file of the same shape."""
    origin = str(path or resources.files("llava").joinpath("resources/containers/needs.yaml"))
    table = read_document(origin, f"cannot read needs file {origin}: it does not exist") or {}
    if not isinstance(table, dict) or not all(isinstance(need or {}, dict) for need in table.values()):
        raise KitError(f"{origin}: the needs table maps each step to its needs (gpu, shm_gib, disk_gib)")
    volumes = {f.name for f in fields(VolumeLayout)}
    for step, need in table.items():
        unknown = set((need or {}).get("disk_gib", {})) - volumes
        if unknown:
            raise KitError(f"{origin}: step {step!r} names unknown volume(s) {sorted(unknown)} under "
                           f"disk_gib; use {sorted(volumes)}")
    return table


def _existing_ancestor(path: Path) -> Path:
    """A volume folder may not exist yet; its disk is the one of the nearest existing parent."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def disk_findings(layout: VolumeLayout, disk_gib: dict[str, float]) -> list[Finding]:
    """One finding per file system: the volumes on it share its free space, so their needs add up."""
    groups: dict[int, list[tuple[str, Path, float]]] = {}
    for volume, need in disk_gib.items():
        anchor = _existing_ancestor(getattr(layout, volume))
        groups.setdefault(os.stat(anchor).st_dev, []).append((volume, anchor, float(need)))
    findings = []
    for members in groups.values():
        anchor = members[0][1]
        free = shutil.disk_usage(anchor).free / GIB
        need = sum(m[2] for m in members)
        names = ", ".join(f"{v} ({getattr(layout, v).absolute()})" for v, _, _ in members)
        message = f"{free:.1f} GiB free for {names}; the step needs {need:g} GiB"
        if free < need:
            findings.append(Finding("disk", "block", message,
                                    f"free {need - free:.1f} GiB on the disk holding {anchor}, or put the "
                                    "volumes on a bigger disk (LLAVA_KIT_DATA_ROOT with "
                                    "compose.hostdirs.yaml, or LLAVA_KIT_HOME on a bare host)"))
        else:
            findings.append(Finding("disk", "ok", message))
    return findings


def shm_finding(need_gib: float, multi_gpu: bool, shm: str | os.PathLike = "/dev/shm") -> Finding:
    """NCCL and DataLoader workers exchange tensors through /dev/shm; Docker's default is 64 MiB."""
    try:
        size = os.statvfs(shm)
    except OSError:
        return Finding("shm", "warn" if multi_gpu else "info", f"{shm} is missing",
                       "mount a tmpfs at /dev/shm (compose: ipc: host)")
    total = size.f_blocks * size.f_frsize / GIB
    message = f"{shm} is {total:.2f} GiB"
    if total >= need_gib:
        return Finding("shm", "ok", message)
    fix = "compose services use `ipc: host`; otherwise pass --shm-size=16g (bare hosts: remount /dev/shm bigger)"
    return Finding("shm", "block" if multi_gpu else "warn", f"{message}, below {need_gib:g} GiB", fix)
