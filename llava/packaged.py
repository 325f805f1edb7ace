"""The recipes and suites that ship inside the package: llava/resources/{stages,eval}/.

They are package data (importlib.resources), so a wheel or a non-editable install finds them wherever it
runs; the repository's top-level `stages/` and `eval/` are links to the same folders, so paths such as
`stages/stage2.yaml` (compose, docs) stay true in a checkout. A relative path that does not exist where
the command runs is looked up inside the package, so `llava-kit train stages/stage2.yaml` works from any
folder; a user's own file is always taken as given.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

# pip and wheels install the package as files on disk, so the resource root is a real folder.
RESOURCES = Path(str(resources.files("llava").joinpath("resources")))
STAGES_DIR = RESOURCES / "stages"
SUITES_DIR = RESOURCES / "eval"
_PACKAGED_ROOTS = ("stages", "eval")


def packaged_path(path: str | os.PathLike) -> Path:
    """`path` itself when it exists (or is absolute); else the packaged file of that name, when there is one."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] not in _PACKAGED_ROOTS:
        return path
    inside = RESOURCES / path
    return inside if inside.exists() else path
