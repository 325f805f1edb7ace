"""Stage-2 image sources from their published archives, for every source the user gave no root for.

The plan (which archives, how many bytes still to fetch) is printed and checked against free disk space
before the first byte moves. Each archive downloads to `<file>.part` and resumes with an HTTP Range
request after a crash or a cut connection (llava.http_download); a complete file is checked against the
size the server announced and against the sources file's size/sha256 when it gives them, and only then
renamed into place. Only the members the subset references are extracted (zip's central directory
allows it), into `downloads/images/<source>/`, which then serves as that source's image root.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from llava.data.record_checks import image_paths
from llava.durable import move_into_place
from llava.errors import KitError
from llava.http_download import CHUNK, fetch_to_part, part_path, remote_size
from llava.prepare.sources import ImageArchive
from llava.prepare.storage import require_free_space


@dataclass(frozen=True)
class PlannedArchive:
    """One archive of one source: where it lands, its full size, and how much of it is already on disk."""

    source: str
    archive: ImageArchive
    path: Path
    size: int
    have: int

    @property
    def complete(self) -> bool:
        return self.path.is_file()


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.1f} MiB"


def referenced(records: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """source name -> paths below that source's root, for every image the records reference."""
    wanted: dict[str, set[str]] = {}
    for record in records:
        for path in image_paths(record):
            name, _, rest = path.partition("/")
            wanted.setdefault(name, set()).add(rest)
    return wanted


def _remote_size(url: str) -> int:
    return remote_size(url, "image archive", "check the URL in the sources file or pass --image-root for that source")


def plan_archives(sources: Iterable[str], archives: dict[str, list[ImageArchive]], downloads: Path) -> list[PlannedArchive]:
    """The archives to have on disk for `sources`; a source without a published archive is an error."""
    plan = []
    for name in sorted(sources):
        if not archives.get(name):
            raise KitError(f"image source {name!r} has no published archive in the sources file: pass "
                           f"--image-root {name}=PATH (docs/data.md says where its images come from)")
        for archive in archives[name]:
            path = downloads / name / archive.file_name
            if path.is_file():
                plan.append(PlannedArchive(name, archive, path, path.stat().st_size, path.stat().st_size))
                continue
            size = archive.size or _remote_size(archive.url)
            part = _part(path)
            plan.append(PlannedArchive(name, archive, path, size, part.stat().st_size if part.is_file() else 0))
    return plan


def describe_plan(plan: list[PlannedArchive]) -> str:
    lines = ["stage-2 image archives (no --image-root given for these sources):"]
    for item in plan:
        state = "already downloaded" if item.complete else (
            f"{_gib(item.size - item.have)} to fetch" + (f", resuming at {_gib(item.have)}" if item.have else ""))
        lines.append(f"  {item.source:8} {item.archive.file_name:24} {_gib(item.size):>11}  {state}  <- {item.archive.url}")
    todo = sum(item.size - item.have for item in plan if not item.complete)
    lines.append(f"  total to download: {_gib(todo)}")
    return "\n".join(lines)


def _part(path: Path) -> Path:
    return part_path(path)


def download(item: PlannedArchive) -> Path:
    """Fetch (or finish fetching) one archive and check it; returns the complete file."""
    if item.complete:
        return item.path
    part = fetch_to_part(item.archive.url, _part(item.path), item.size, "image archive")
    _check_checksum(item.archive, part, item.path)
    return move_into_place(part, item.path)


def _check_checksum(archive: ImageArchive, part: Path, final: Path) -> None:
    if archive.sha256 is None:
        return
    digest = hashlib.sha256()
    with open(part, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    if digest.hexdigest() != archive.sha256:
        bad = final.with_name(final.name + ".bad-checksum")
        os.replace(part, bad)
        raise KitError(f"image archive {archive.url}: sha256 {digest.hexdigest()} of the download does not match "
                       f"the sources file's {archive.sha256}; the file was set aside as {bad} (delete it), and "
                       "a rerun downloads it afresh; if the publisher changed the archive, update the sources file")


def extract_referenced(plan: list[PlannedArchive], wanted: dict[str, set[str]], roots_dir: Path) -> dict[str, Path]:
    """Extract what the subset references from each source's archives; returns source -> image root."""
    import zipfile

    from llava.prepare.archives import extract_zip

    roots = {}
    for name in sorted({item.source for item in plan}):
        root = roots_dir / name
        left = set(wanted.get(name, ()))
        items = [item for item in plan if item.source == name]
        for item in items:
            try:
                with zipfile.ZipFile(item.path) as handle:
                    inside = left & set(handle.namelist())
            except (zipfile.BadZipFile, OSError) as err:
                raise KitError(f"image archive {item.path} is not a readable zip ({err}): delete it and run "
                               "the command again to re-download it") from err
            extract_zip(item.path, root, members=inside)
            left -= inside
        if left:
            names = ", ".join(f"{name}/{path}" for path in sorted(left)[:5])
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            files = ", ".join(str(item.path) for item in items)
            raise KitError(f"{len(left)} images the subset references are in none of {name}'s archives "
                           f"({files}): {names}{more}; the images extracted so far are kept in {root}")
        roots[name] = root
    return roots


def fetch_image_sources(records: list[dict[str, Any]], roots: dict[str, Path],
                        archives: dict[str, list[ImageArchive]], downloads: Path
                        ) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Roots for every source the records reference that `roots` lacks (download, check, extract), and
    one manifest row per archive used."""
    wanted = referenced(records)
    missing = {name for name in wanted if name not in roots}
    if not missing:
        return {}, []
    plan = plan_archives(missing, archives, downloads / "archives")
    print(describe_plan(plan), flush=True)
    require_free_space(downloads, sum(item.size - item.have for item in plan if not item.complete),
                       "downloading the stage-2 image archives")
    for item in plan:
        download(item)
    fetched = extract_referenced(plan, wanted, downloads / "roots")
    rows = [{"source": item.source, "url": item.archive.url, "file": item.path.name, "size": item.size,
             "sha256": item.archive.sha256} for item in plan]
    return fetched, rows
