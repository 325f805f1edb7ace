"""Per-sample checks shared by `prepare verify`, `render` and training (one set, so they never disagree).

Each check returns a short reason string (the quarantine reason) or None for a good sample. They are
kept cheap and depend on PIL only, because the training dataset calls them on every sample it loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llava.data.image_files import ImageStamp

IMAGE_TAG = "<image>"
ROLES = ("human", "gpt")

# PIL format names that a file extension promises; an extension not listed here is not checked.
_EXTENSION_FORMATS = {
    ".jpg": ("JPEG", "MPO"),  # MPO is a multi-picture JPEG that PIL reports separately
    ".jpeg": ("JPEG", "MPO"),
    ".png": ("PNG",),
    ".gif": ("GIF",),
    ".webp": ("WEBP",),
    ".bmp": ("BMP",),
    ".tif": ("TIFF",),
    ".tiff": ("TIFF",),
}


def image_paths(record: dict[str, Any]) -> list[str]:
    """The record's image paths: [] for text-only, one entry per image otherwise."""
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


def id_faults(records: list[Any]) -> dict[int, str]:
    """index -> "missing id" / "duplicate id" (the second and later uses of an id)."""
    faults, seen = {}, set()
    for index, record in enumerate(records):
        sample_id = record.get("id") if isinstance(record, dict) else None
        if sample_id is None or sample_id == "":
            faults[index] = "missing id"
        elif str(sample_id) in seen:
            faults[index] = "duplicate id"
        seen.add(str(sample_id))
    return faults


def length_fault(tokens: int, max_length: int | None) -> str | None:
    """Why a sample of `tokens` tokens (text and image tokens) cannot be trained on, or None."""
    if max_length is not None and tokens > max_length:
        return f"{tokens} tokens exceed model_max_length {max_length}"
    return None


def _image_key_fault(record: dict[str, Any]) -> str | None:
    image = record.get("image")
    if image is None:
        return None
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        return "image must be a non-empty relative path or a list of them"
    for path in paths:
        if os.path.isabs(path) or ".." in Path(path).parts:
            return f"image path {path!r} leaves the image folder"
    return None


def _turns_fault(turns: Any) -> str | None:
    if not isinstance(turns, list) or not turns:
        return "empty conversation"
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            role = turn.get("from") if isinstance(turn, dict) else type(turn).__name__
            return f"turn {number} has role {role!r}, expected 'human' or 'gpt'"
        if turn["from"] != ROLES[(number - 1) % 2]:
            return "roles do not alternate human/gpt"
        value = turn.get("value")
        if not isinstance(value, str) or not value.strip():
            return f"turn {number} has an empty value"
    return None


def conversation_fault(record: dict[str, Any], *, expects_image: bool | None = None) -> str | None:
    """Why a record cannot be trained on as-is, or None.

    `expects_image`: True for stages whose template needs an image (stages 1 and 1.5), False for a
    text-only set, None to accept both (stage 2). A sample with images must carry exactly one
    `<image>` tag per image; a text-only sample none.
    """
    if not isinstance(record, dict):
        return "record is not a JSON object"
    fault = _image_key_fault(record) or _turns_fault(record.get("conversations"))
    if fault:
        return fault
    expected = len(image_paths(record))
    if expects_image is True and expected == 0:
        return "no image, expected an image sample"
    if expects_image is False and expected > 0:
        return "has an image, expected a text-only sample"
    tags = sum(turn["value"].count(IMAGE_TAG) for turn in record["conversations"])
    if tags != expected:
        return f"{tags} {IMAGE_TAG} tags, expected {expected}"
    return None


@dataclass(frozen=True)
class ImageInfo:
    """What decoding one image file found: a fault, or its size and format; `stamp` lets training notice a
    later change, `conversion` says what the RGB conversion loses (llava.data.image_files)."""

    fault: str | None
    width: int = 0
    height: int = 0
    format: str | None = None
    stamp: ImageStamp | None = None
    conversion: str | None = None


def inspect_image(path: str | os.PathLike) -> ImageInfo:
    """Read, fully decode and convert `path` as training will (llava.data.image_files).

    Truncation is reported while PIL's `ImageFile.LOAD_TRUNCATED_IMAGES` is False (its default, and
    what verification uses). Training sets it to True for parity with the original recipe, which then
    pads a truncated JPEG silently, as upstream did.
    """
    from PIL import UnidentifiedImageError

    from llava.data.image_files import UnusableImage, conversion_loss, decode, stamp_of, to_rgb

    path = Path(path)
    try:
        if not path.is_file():
            return ImageInfo("not a regular file" if path.exists() else "missing image")
        data = path.read_bytes()
    except OSError as err:
        return ImageInfo(f"unreadable file: {err.strerror}")
    if not data:
        return ImageInfo("zero-byte file")
    try:
        image = decode(data)
        fmt, (width, height) = image.format, image.size
        conversion = conversion_loss(image)
        to_rgb(image)
    except UnidentifiedImageError:
        return ImageInfo("undecodable image: not a format PIL can read")
    except UnusableImage as err:
        return ImageInfo(str(err))
    except OSError as err:
        text = str(err)
        if "truncated" in text or "incomplete" in text:
            return ImageInfo("truncated image")
        return ImageInfo(f"undecodable image: {text}")
    except Exception as err:  # PIL raises several types for corrupt data (SyntaxError, ValueError)
        return ImageInfo(f"undecodable image: {type(err).__name__}: {err}")
    expected = _EXTENSION_FORMATS.get(path.suffix.lower())
    if expected and fmt not in expected:
        return ImageInfo(f"{(fmt or 'unknown').lower()} named {path.suffix.lower()}", width, height, fmt)
    return ImageInfo(None, width, height, fmt, stamp_of(data), conversion)


def image_fault(path: str | os.PathLike) -> str | None:
    """Why the image at `path` is unusable ("missing image", "zero-byte file", "truncated image",
    "gif named .jpg", "undecodable image: ..."), or None."""
    return inspect_image(path).fault
