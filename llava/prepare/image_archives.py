"""Stage-2 image sources from their published archives, for every source the user gave no root for.

The plan (which archives, how many bytes still to fetch) is printed and checked against free disk space
before the first byte moves; a server announcing another size than the sources file pins is refused
before the download, and an archive on disk of another size before extraction. Each archive downloads
to `<file>.part` and resumes after a crash or a cut connection (llava.http_download); a complete file is
checked against the size and sha256 (pinned in the sources file, else the first-use sha256 recorded in
`archives/first_use.json`) and only then renamed into place. Each archive's layout is checked from its
central directory, then only the members the subset references are extracted, into
`downloads/images/<source>/`, which then serves as that source's image root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from llava.data.record_checks import image_paths
from llava.durable import move_into_place
from llava.errors import KitError
from llava.http_download import fetch_to_part, part_path, remote_size
from llava.manifest import sha256_file
from llava.prepare.first_use import FirstUsePins
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


def _remote_size(url: str) -> int | None:
    """The size the server announces for `url` (its Content-Length), None when it announces none."""
    return remote_size(url, "image archive", "check the URL in the sources file or pass --image-root for that source",
                       required=False)


def _size(archive: ImageArchive) -> int:
    """The archive's size: the pinned one, which the server must announce too, else the announced one."""
    announced = _remote_size(archive.url)
    if archive.size is None and announced is None:
        raise KitError(f"image archive {archive.url} announces no size (Content-Length) and the sources file "
                       "pins none: cannot check the download; pin its size in the sources file")
    if archive.size is not None and announced is not None and announced != archive.size:
        raise KitError(f"image archive {archive.url} announces {announced} bytes, the sources file pins "
                       f"{archive.size}: the publisher changed the archive or the sources file is wrong; "
                       "nothing was downloaded")
    return archive.size or announced


def _on_disk(name: str, archive: ImageArchive, path: Path) -> PlannedArchive:
    """An archive complete from an earlier run; refused (before extraction) when its size is not the pin."""
    have = path.stat().st_size
    if archive.size is not None and have != archive.size:
        raise KitError(f"image archive {path} has {have} bytes, the sources file pins {archive.size} for "
                       f"{archive.url}: it is not that archive; delete it (a rerun downloads it afresh) or fix "
                       "the sources file; nothing was extracted")
    return PlannedArchive(name, archive, path, have, have)


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
                plan.append(_on_disk(name, archive, path))
                continue
            size = _size(archive)
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


def download(item: PlannedArchive, pins: FirstUsePins) -> dict[str, Any]:
    """Fetch (or finish fetching) one archive and check it; returns its manifest row."""
    if item.complete:
        return _row(item, _held_on_disk(item, pins))
    part = fetch_to_part(item.archive.url, _part(item.path), item.size, "image archive")
    sha256 = _check_checksum(item.archive, part, item.path, pins)
    move_into_place(part, item.path)
    return _row(item, sha256)


def _held_on_disk(item: PlannedArchive, pins: FirstUsePins) -> str:
    """The sha256 an archive complete on disk was checked against (a first-use one is recorded now if an
    earlier kit downloaded it without recording)."""
    if item.archive.sha256 is not None:
        return item.archive.sha256
    pin = pins.get(item.archive.url)
    if pin is None:
        pin = pins.record(item.archive.url, sha256=sha256_file(item.path), size=item.size, file=item.path.name)
    return pin["sha256"]


def _expected_sha256(archive: ImageArchive, pins: FirstUsePins) -> tuple[str | None, str, str]:
    """(sha256 to hold the download to, where it comes from, how to accept a changed archive); None when
    this is the first download of a first-use archive."""
    if archive.sha256 is not None:
        return archive.sha256, "the sources file's", "if the publisher changed the archive, update the sources file"
    pin = pins.get(archive.url)
    if pin is None:
        return None, "", ""
    return (pin["sha256"], f"the first-use sha256 recorded in {pins.path} on {pin.get('recorded_at')}",
            f"if the publisher changed the archive on purpose, delete its entry in {pins.path}")


def _check_checksum(archive: ImageArchive, part: Path, final: Path, pins: FirstUsePins) -> str:
    """The complete download's sha256, held to the pinned one, else to the first-use one (recorded now
    if this is the first download); a mismatch sets the file aside and names it."""
    actual = sha256_file(part)
    expected, where, fix = _expected_sha256(archive, pins)
    if expected is None:
        pins.record(archive.url, sha256=actual, size=part.stat().st_size, file=final.name)
    elif actual != expected:
        bad = final.with_name(final.name + ".bad-checksum")
        os.replace(part, bad)
        raise KitError(f"image archive {archive.url}: sha256 {actual} of the download does not match "
                       f"{where} {expected}; the file was set aside as {bad} (delete it), and a rerun downloads "
                       f"it afresh; {fix}")
    return actual


def _row(item: PlannedArchive, sha256: str) -> dict[str, Any]:
    """The manifest row of one archive: what it is and which of its checks were pinned or first-use."""
    return {"source": item.source, "url": item.archive.url, "file": item.path.name, "size": item.size,
            "sha256": sha256, "checks": {
                "size": "pinned" if item.archive.size else "server Content-Length",
                "sha256": "pinned" if item.archive.sha256 else "first-use"}}


def _check_source(name: str, items: list[PlannedArchive], want: set[str]) -> list[set[str]]:
    """Each archive's directory, once the source's layout is checked against the sources file."""
    from llava.prepare.archive_layout import check_holds, check_layout, member_names

    directories = [member_names(item.path) for item in items]
    for item, names in zip(items, directories):
        check_holds(item.path, names, item.archive.holds)
    files = ", ".join(str(item.path) for item in items)
    left = check_layout(f"the archives of image source {name!r} ({files})", set().union(*directories), want,
                        f"`holds` of source {name!r} in the sources file, or pass --image-root {name}=PATH")
    if left:
        paths = ", ".join(f"{name}/{path}" for path in sorted(left)[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        raise KitError(f"{len(left)} images the subset references are in none of {name}'s archives "
                       f"({files}): {paths}{more}; nothing was extracted")
    return directories


def extract_referenced(plan: list[PlannedArchive], wanted: dict[str, set[str]], roots_dir: Path) -> dict[str, Path]:
    """Extract what the subset references from each source's archives; returns source -> image root.

    Every archive's layout is checked from its central directory before any member is extracted.
    """
    from llava.prepare.archives import extract_zip

    sources = {name: [item for item in plan if item.source == name] for name in sorted({i.source for i in plan})}
    checked = {name: _check_source(name, items, set(wanted.get(name, ()))) for name, items in sources.items()}
    for name, items in sources.items():
        for item, names in zip(items, checked[name]):
            extract_zip(item.path, roots_dir / name, members=set(wanted.get(name, ())) & names)
    return {name: roots_dir / name for name in sources}


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
    pins = FirstUsePins(downloads / "archives")
    rows = [download(item, pins) for item in plan]
    fetched = extract_referenced(plan, wanted, downloads / "roots")
    return fetched, rows
