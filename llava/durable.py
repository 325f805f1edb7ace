"""Durable writes: a file or a folder is replaced whole, and what a crash leaves is the old one or the new one.

Every writer of the kit (manifests, checkpoints, training state, eval outputs, prepared data, publish
folders) goes through this one sequence: write beside the target, fsync it, rename it over the target,
fsync the parent folder. rename(2) cannot replace a non-empty folder, so an existing folder is first
moved aside to `.NAME.llava-kit-old`; a crash right then leaves no folder under the final name, and
`recover_folder` (called by every reader of a step output, and before the next replace) renames the
aside copy back, or deletes it once the new folder is in place. One writer per target at a time.
A folder is replaced only when llava.owned allows it (absent, empty, or the kit's own output of the same
kind), and the new folder is marked as the kit's before it appears.
Hand-written: the standard library has the system calls, not the sequence.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from llava.fault_injection import kill_in_write
from llava.owned import mark_owned, require_replaceable

# The steps of each sequence, in order; a test kills the process at each (LLAVA_KIT_TEST_KILL_IN_WRITE).
FILE_STEPS = ("file.written", "file.synced", "file.renamed", "file.dir_synced")
FOLDER_STEPS = ("folder.staged", "folder.synced", "folder.aside", "folder.renamed", "folder.dir_synced",
                "folder.old_removed")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush one file or folder entry (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike) -> None:
    """Flush every file, then every folder bottom-up, so a rename publishes data that is on disk."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(root)


@contextmanager
def replacing(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary handle whose bytes replace `path` when the block ends (nothing changes if it raises).

    `fsync=False` for bulk image writes: the rename still hides partial files after a process crash,
    and verification catches what a power loss might leave."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
        kill_in_write("file.written")
        move_into_place(tmp, path, fsync=fsync)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_into_place(complete: str | os.PathLike, path: str | os.PathLike, *, fsync: bool = True) -> Path:
    """Rename the finished file `complete` (a sibling of `path`) over `path`: fsync it, rename, fsync the folder."""
    path = Path(path)
    if fsync:
        fsync_path(complete)
    kill_in_write("file.synced")
    os.replace(complete, path)
    kill_in_write("file.renamed")
    if fsync:
        fsync_path(path.parent)
    kill_in_write("file.dir_synced")
    return path


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Readers see the old file or the new one, never half of one."""
    with replacing(path, fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.llava-kit-old")


def recover_folder(final: str | os.PathLike) -> Path:
    """Finish or undo a folder replace that a crash interrupted; a no-op when none was."""
    final = Path(final)
    aside = _aside(final)
    if aside.is_dir():
        if final.exists():  # the new folder made it into place: the old copy is garbage
            shutil.rmtree(aside)
        else:  # crashed between moving the old folder aside and renaming the new one in
            os.replace(aside, final)
            fsync_path(final.parent)
    return final


def recover_folders_in(parent: str | os.PathLike) -> None:
    """`recover_folder` for every interrupted replace among `parent`'s entries."""
    parent = Path(parent)
    if parent.is_dir():
        for entry in parent.glob(".*.llava-kit-old"):
            recover_folder(parent / entry.name[1:-len(".llava-kit-old")])


def staging_path(final: str | os.PathLike) -> Path:
    """Where the replacement of `final` is built: a hidden, kit-named sibling (never a user's name)."""
    final = Path(final)
    return final.with_name(f".{final.name}.llava-kit-new")


def staging_folder(final: str | os.PathLike) -> Path:
    """A fresh, empty `staging_path(final)` (a leftover of an interrupted write is discarded)."""
    staged = staging_path(final)
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    return staged


def replace_folder(staged: str | os.PathLike, final: str | os.PathLike, *, kind: str) -> Path:
    """Make the complete folder `staged` appear as `final`, marked as a `kind` output, durably.

    What is at `final` is replaced only if it is the kit's own `kind` output or an empty folder;
    anything else raises llava.owned.OutputRefused and nothing changes."""
    staged, final = Path(staged), Path(final)
    recover_folder(final)
    require_replaceable(final, kind)
    mark_owned(staged, kind)
    kill_in_write("folder.staged")
    fsync_tree(staged)
    kill_in_write("folder.synced")
    final.parent.mkdir(parents=True, exist_ok=True)
    aside = _aside(final)
    if final.exists():
        os.replace(final, aside)
        kill_in_write("folder.aside")
    try:
        os.replace(staged, final)
    except OSError:
        recover_folder(final)
        raise
    kill_in_write("folder.renamed")
    fsync_path(final.parent)
    kill_in_write("folder.dir_synced")
    shutil.rmtree(aside, ignore_errors=True)
    kill_in_write("folder.old_removed")
    return final
