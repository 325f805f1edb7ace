"""llava_v1_5_mix665k: the seed's ocr_vqa filter, and staging images from user-supplied source roots.

mix665k image paths start with the source's folder name (coco/, gqa/, ocr_vqa/, textvqa/, vg/). The
images themselves are not on the Hub in one place, so users point at their copies with
`--image-root NAME=PATH`. OCR-VQA's download script keeps each cover's original format, so some
files the JSON calls `.jpg` are GIF or PNG, either under the `.jpg` name or under their own extension:
staging detects both, stages the real file under its real extension and fixes the record's path.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Literal

from tqdm import tqdm

from llava.data.record_checks import image_paths
from llava.errors import KitError
from llava.prepare.storage import require_free_space

LinkMode = Literal["hardlink", "copy", "symlink"]
_REAL_EXTENSION = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
_SIBLING_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".JPG", ".JPEG", ".PNG", ".GIF", ".webp")


def drop_by_image(
    records: list[dict[str, Any]], substrings: Iterable[str]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Records whose image paths contain none of `substrings`, and how many each substring dropped."""
    substrings = list(substrings)
    dropped: Counter[str] = Counter({text: 0 for text in substrings})
    kept = []
    for record in records:
        hit = next((text for text in substrings for path in image_paths(record) if text in path), None)
        if hit is None:
            kept.append(record)
        else:
            dropped[hit] += 1
    return kept, dict(dropped)


def parse_image_roots(specs: Iterable[str], known: Iterable[str]) -> dict[str, Path]:
    """`NAME=PATH` entries, or a bare `PATH` holding one folder per source name."""
    known = list(known)
    roots: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            parent = Path(spec)
            if not parent.is_dir():
                raise KitError(f"--image-root {spec}: folder does not exist")
            roots.update({source: parent / source for source in known if (parent / source).is_dir()})
            continue
        if name not in known:
            raise KitError(f"--image-root {spec}: unknown source {name!r}; known sources: {', '.join(known)}")
        if not Path(path).is_dir():
            raise KitError(f"--image-root {spec}: folder {path} does not exist")
        roots[name] = Path(path)
    return roots


def _real_format(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.format
    except (UnidentifiedImageError, OSError):
        return None


def resolve_source_image(root: Path, rest: str) -> tuple[Path | None, str, str | None]:
    """(file to stage, path below root to stage it at, why it differs from `rest`) for one record image.

    Handles "gif/png named .jpg" (the file's real format decides its extension) and "the .jpg is
    missing but a .gif/.png with the same stem exists". None as the file means not found.
    """
    source = root / rest
    if not source.is_file():
        for extension in _SIBLING_EXTENSIONS:
            sibling = source.with_suffix(extension)
            if sibling != source and sibling.is_file():
                source = sibling
                break
        else:
            return None, rest, None
    real_format = _real_format(source)
    real = _REAL_EXTENSION.get(real_format or "")
    if real is None or source.suffix.lower() in ((".jpg", ".jpeg") if real == ".jpg" else (real,)):
        extension = source.suffix  # the name matches the content (or PIL cannot tell: verification will)
    else:
        extension = real
    staged = Path(rest).with_suffix(extension).as_posix()
    if staged == rest:
        return source, rest, None
    named = Path(rest).suffix
    if source.name == Path(rest).name:
        return source, staged, f"{real_format.lower()} named {named}"
    return source, staged, f"{named} missing, found {source.suffix}"


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _copy_bytes(resolved: list, images_dir: Path, link: LinkMode) -> int:
    """Bytes staging will write: sources are copied, or hardlinked when on the same file system."""
    if link == "symlink":
        return 0
    device = _existing_ancestor(images_dir).stat().st_dev
    total = 0
    for _, name, _, source, staged, _ in resolved:
        if source is None or (images_dir / name / staged).exists():
            continue
        stat = source.stat()
        if link == "copy" or stat.st_dev != device:
            total += stat.st_size
    return total


def _place(source: Path, target: Path, link: LinkMode) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    tmp.unlink(missing_ok=True)
    if link == "symlink":
        tmp.symlink_to(source.resolve())
    elif link == "hardlink":
        try:
            os.link(source, tmp)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(source, tmp)  # another file system: fall back to a copy
    else:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _plan(records: list[dict[str, Any]], roots: dict[str, Path]) -> list[tuple[dict[str, Any], str, str]]:
    """(record, source name, path below the source) for every record image; refuses absent roots."""
    plan, missing = [], Counter()
    for record in records:
        for path in image_paths(record):
            name, _, rest = path.partition("/")
            if name not in roots:
                missing[name] += 1
            plan.append((record, name, rest))
    if missing:
        wanted = ", ".join(f"{name} ({count} images)" for name, count in missing.most_common())
        raise KitError(f"no image root for {wanted}: pass --image-root NAME=PATH for each "
                       "(docs/data.md lists where each source comes from)")
    return plan


def stage_images(
    records: list[dict[str, Any]], roots: dict[str, Path], images_dir: Path, *, link: LinkMode = "hardlink"
) -> list[dict[str, Any]]:
    """Put every record image under `images_dir/<source>/...`, fixing record paths where the real file
    differs; returns one {"id", "image", "staged_as", "reason"} row per fix. Missing files are left for
    verification to quarantine."""
    plan = _plan(records, roots)
    resolved = [(record, name, rest, *resolve_source_image(roots[name], rest))
                for record, name, rest in tqdm(plan, desc="find source images", unit="img")]
    require_free_space(images_dir, _copy_bytes(resolved, images_dir, link), "staging stage-2 images")
    fixes = []
    for record, name, rest, source, staged, reason in tqdm(resolved, desc="stage images", unit="img"):
        if source is None:
            continue
        target = images_dir / name / staged
        if not (target.exists() and target.stat().st_size == source.stat().st_size):
            _place(source, target, link)
        if reason:
            old = f"{name}/{rest}"
            new = f"{name}/{staged}"
            paths = record["image"]
            record["image"] = new if isinstance(paths, str) else [new if p == old else p for p in paths]
            fixes.append({"id": record["id"], "image": old, "staged_as": new, "reason": reason})
    return fixes
