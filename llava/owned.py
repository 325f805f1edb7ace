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
import socket
from pathlib import Path
from typing import Mapping

from llava.errors import KitError

MARKER_NAME = ".llava-kit-output"
_LEGACY_MANIFEST = "manifest.json"


class OutputRefused(KitError):
    """A target path holds something the kit did not write, or overlaps the run's inputs."""


def _kind_document(path: Path) -> dict | None:
    """The JSON object at `path` when it names a string `kind`; None when absent, unreadable or otherwise."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("kind"), str) else None


def _marker_kind(folder: Path) -> str | None:
    body = _kind_document(folder / MARKER_NAME)
    return body["kind"] if body is not None and body.get("written_by") == "llava-kit" else None


def owned_kind(folder: str | os.PathLike) -> str | None:
    """The kind of kit output `folder` is (its marker, else a kit manifest's kind); None if not the kit's."""
    folder = Path(folder)
    kind = _marker_kind(folder)
    if kind is not None:
        return kind
    body = _kind_document(folder / _LEGACY_MANIFEST)
    return body["kind"] if body is not None and {"files", "versions"} <= body.keys() else None


def mark_owned(folder: str | os.PathLike, kind: str) -> Path:
    """Mark `folder` as a kit output of `kind`; callers publish the folder durably.

    Several launchers and ranks (on several nodes, over a shared file system) claim one run folder at
    once, and each reads the marker the others may be writing: so an existing marker of this kind is left
    alone, and a new one appears whole by a rename, never as an empty or half-written file. (Written here
    rather than with llava.durable's atomic writer, which builds on this module.)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if _marker_kind(folder) == kind:
        return folder
    part = folder / f".{MARKER_NAME}.{socket.gethostname()}-{os.getpid()}"
    part.write_text(json.dumps({"written_by": "llava-kit", "kind": kind}) + "\n", encoding="utf-8")
    os.replace(part, folder / MARKER_NAME)
    return folder


def _contents(folder: Path) -> list[str]:
    """The entries of `folder`, less a marker another process is writing into it right now."""
    return sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith(f".{MARKER_NAME}."))


def _entries(folder: Path) -> str:
    names = _contents(folder)
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
    if _contents(path):
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
