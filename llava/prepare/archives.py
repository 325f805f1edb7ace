"""Zip extraction that checks the disk first, refuses unsafe member names, and resumes after a crash."""

from __future__ import annotations

import os
import errno
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable

from tqdm import tqdm

from llava.durable import replacing
from llava.errors import KitError
from llava.prepare.storage import require_free_space


def _broken(archive: Path, detail: object) -> KitError:
    return KitError(
        f"archive {archive} is broken ({detail}): delete it and run the command again to re-download it"
    )


def _target(dest: Path, name: str, strip_prefix: str) -> Path | None:
    """Where a member lands, None for members outside `strip_prefix`; refuses path escapes."""
    if strip_prefix:
        if not name.startswith(strip_prefix):
            return None
        name = name[len(strip_prefix):]
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts:
        raise KitError(f"archive member {name!r} would be written outside {dest}: the archive is not trusted")
    return dest.joinpath(*parts)


def extract_zip(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    members: Iterable[str] | None = None,
    strip_prefix: str = "",
) -> int:
    """Extract `archive` (or only the named `members`, paths after `strip_prefix`) into `dest`.

    A member already present with the right size is skipped, and each file is written to a temp name
    and renamed, so an interrupted run resumes where it stopped. Returns the number of files written.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise KitError(f"archive {archive} does not exist: download it first (or fix the path)")
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise _broken(archive, err) from err
    wanted = set(members) if members is not None else None
    with handle:
        todo = []
        for info in handle.infolist():
            target = _target(dest, info.filename, strip_prefix)
            if target is None or info.is_dir():
                continue
            if wanted is not None and target.relative_to(dest).as_posix() not in wanted:
                continue
            if target.is_file() and target.stat().st_size == info.file_size:
                continue
            todo.append((info, target))
        require_free_space(dest, sum(info.file_size for info, _ in todo), f"extracting {archive.name}")
        for info, target in tqdm(todo, desc=f"extract {archive.name}", unit="file", disable=not todo):
            try:
                with handle.open(info) as src, replacing(target, fsync=False) as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                raise _broken(archive, f"member {info.filename}: {err}") from err
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise KitError(f"the disk holding {dest} filled up while extracting {archive.name}: "
                                   "free space and run the command again (it resumes)") from err
                raise
    return len(todo)
