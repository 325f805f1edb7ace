"""An archive's layout checked against the sources file from its central directory, before extraction.

Opening a zip reads only its central directory (the member data is not touched), so a layout that the
sources file gets wrong (a top-level folder more or less, images in another archive) is refused in
about a second, naming the member found and the one expected, instead of after hours of extraction.
"""

from __future__ import annotations

import heapq
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from llava.errors import KitError


def member_names(archive: Path) -> set[str]:
    """The file members of `archive` (directories left out), read from its central directory only."""
    try:
        with zipfile.ZipFile(archive) as handle:
            return {info.filename for info in handle.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError) as err:
        raise KitError(f"image archive {archive} is not a readable zip ({err}): delete it and run "
                       "the command again to re-download it") from err


SAMPLE = 20  # absent members looked up elsewhere in the archive: a layout mismatch shows in any of them


def _shared_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    count = 0
    for left, right in zip(reversed(a), reversed(b)):
        if left != right:
            break
        count += 1
    return count


def _same_files_elsewhere(absent: list[str], names: set[str]) -> tuple[str, str] | None:
    """(expected, found): the first of `absent` whose file the archive holds under other folders, with the
    member sharing the longest path tail; one pass over the directory."""
    by_base = {want.rpartition("/")[2]: [] for want in absent}
    for name in names:
        base = name.rpartition("/")[2]
        if base in by_base:
            by_base[base].append(name)
    for want in absent:
        parts = PurePosixPath(want).parts
        found = by_base[want.rpartition("/")[2]]
        if found:
            return want, max(found, key=lambda name: (_shared_tail(PurePosixPath(name).parts, parts), name))
    return None


def _prefix_note(expected: str, found: str) -> str:
    if found.endswith("/" + expected):
        return f" (the archive's members carry a leading {found[:-len(expected)]!r} that the layout lacks)"
    if expected.endswith("/" + found):
        return f" (the layout's leading {expected[:-len(found)]!r} is not in the archive)"
    return ""


def check_layout(archives: str, names: set[str], expected: Iterable[str], fix: str) -> set[str]:
    """Refuse a layout mismatch between the members the sources file expects and the directory `names`
    of `archives` (one or more files, for the message); returns the expected members that are absent.

    A mismatch is an absent member whose file the archive holds under other folders, or (with
    nothing expected present at all) any absence. `fix` says what to change in the sources file.
    """
    expected = set(expected)
    missing = expected - names
    if not missing:
        return missing
    elsewhere = _same_files_elsewhere(heapq.nsmallest(SAMPLE, missing), names)
    if elsewhere is not None:
        want, found = elsewhere
        raise KitError(f"{archives}: the sources file's layout expects member {want!r}, the archive has "
                       f"{found!r} instead{_prefix_note(want, found)} ({len(missing)} of {len(expected)} "
                       f"referenced members are not where expected); nothing was extracted: fix {fix}")
    if missing == expected:
        first = min(names) if names else "(no file members)"
        raise KitError(f"{archives}: none of the {len(expected)} members the sources file's layout expects is "
                       f"there (e.g. {min(missing)!r}; the archive's first member is {first!r}); nothing was "
                       f"extracted: fix {fix}")
    return missing


def check_holds(archive: Path, names: set[str], holds: str | None) -> None:
    """Refuse an archive with no member under the folder the sources file says it holds."""
    if holds is None or any(name.startswith(holds) for name in names):
        return
    first = min(names) if names else "(no file members)"
    raise KitError(f"image archive {archive}: the sources file says it holds {holds!r}, but no member is under "
                   f"it (its first member is {first!r}); nothing was extracted: fix `holds` (and the image "
                   "paths it implies) in the sources file, or pass --image-root for that source")
