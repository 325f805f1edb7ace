"""What the kit may replace or delete: only folders it wrote and marked as its own.

Every output folder a verb writes (a stage checkpoint, a dataset folder, an eval folder, a publish
dry-run folder, a smoke folder) carries MARKER_NAME, naming the kind of output. A target path is
replaced only when it is absent, an empty folder, or a folder marked with the same kind; anything
else (a user's folder, the checkpoints root, a regular file, a link, another kind of output) is
refused with a message naming the path, and nothing is touched. An output may also never be,
contain or sit inside one of the run's own inputs: replacing it would destroy what the run reads.
Outputs written before the marker existed are recognised by their manifest.json's kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from llava.errors import KitError

MARKER_NAME = ".llava-kit-output"
_LEGACY_MANIFEST = "manifest.json"


class OutputRefused(KitError):
    """A target path holds something the kit did not write, or overlaps the run's inputs."""


def owned_kind(folder: str | os.PathLike) -> str | None:
    """The kind of kit output `folder` is (its marker, else a kit manifest's kind); None if not the kit's."""
    folder = Path(folder)
    for name, check in ((MARKER_NAME, lambda body: body.get("written_by") == "llava-kit"),
                        (_LEGACY_MANIFEST, lambda body: {"kind", "files", "versions"} <= body.keys())):
        try:
            body = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and check(body) and isinstance(body.get("kind"), str):
            return body["kind"]
    return None


def mark_owned(folder: str | os.PathLike, kind: str) -> Path:
    """Mark `folder` as a kit output of `kind` (plain write: callers publish the folder durably)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER_NAME).write_text(json.dumps({"written_by": "llava-kit", "kind": kind}) + "\n", encoding="utf-8")
    return folder


def _entries(folder: Path) -> str:
    names = sorted(entry.name for entry in folder.iterdir())
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} {'entry' if len(names) == 1 else 'entries'}: {shown}"


def require_replaceable(path: str | os.PathLike, kind: str, what: str = "output") -> Path:
    """Refuse unless `path` is absent, an empty folder, or a kit output of `kind`; nothing is changed."""
    path = Path(path)
    advice = "choose a new or empty folder, or move it away yourself"
    if path.is_symlink():
        raise OutputRefused(f"{what} {path} is a symbolic link; llava-kit writes outputs only to real folders: {advice}")
    if not path.exists():
        return path
    if not path.is_dir():
        raise OutputRefused(f"{what} {path} is an existing file, not a folder llava-kit wrote; llava-kit never "
                            f"replaces what it did not write: {advice}")
    found = owned_kind(path)
    if found == kind:
        return path
    if found is not None:
        raise OutputRefused(f"{what} {path} holds a llava-kit {found} output, not a {kind}; it is left as it is: "
                            f"{advice}")
    if any(path.iterdir()):
        raise OutputRefused(f"{what} {path} already exists and was not written by llava-kit (no {MARKER_NAME}; "
                            f"{_entries(path)}); llava-kit replaces only folders it wrote: {advice}")
    return path


def adopt_older_output(folder: str | os.PathLike, kind: str, sign: str) -> None:
    """Mark an unmarked `folder` that an older kit version wrote, known by `sign`, a file only the kit
    writes there (a smoke folder's world.log, a run folder's events.jsonl)."""
    folder = Path(folder)
    if folder.is_dir() and not folder.is_symlink() and not (folder / MARKER_NAME).exists() \
            and (folder / sign).is_file():
        mark_owned(folder, kind)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def refuse_overlap(output: str | os.PathLike, inputs: Mapping[str, str | os.PathLike], what: str = "output") -> None:
    """Refuse an output that is, contains or sits inside one of `inputs` (name -> path)."""
    out = Path(output).resolve()
    for name, source in inputs.items():
        if source is None:
            continue
        src = Path(source).resolve()
        if _within(src, out):
            relation = "is" if src == out else "contains"
        elif _within(out, src):
            relation = "is inside"
        else:
            continue
        raise OutputRefused(f"{what} {output} {relation} this run's input {name} ({source}); writing there would "
                            "replace what the run reads: choose an output folder outside every input")


def claim_folder(path: str | os.PathLike, kind: str, *, inputs: Mapping[str, str | os.PathLike] | None = None,
                 what: str = "output") -> Path:
    """Check `path` may hold a `kind` output of this run, then create and mark it; returns it."""
    refuse_overlap(path, inputs or {}, what)
    return mark_owned(require_replaceable(path, kind, what), kind)
