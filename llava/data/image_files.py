"""Image file -> the RGB picture the model sees: the one loader of training, verify, render, eval and generate.

LLaVA's own loader is `Image.open(path).convert("RGB")`. That stays for the modes its data has: RGBA
loses its alpha (transparent pixels show whatever colour they store, usually black), CMYK converts
without colour management, a palette's transparent entry shows its colour. `prepare verify` counts
those (`conversion_loss`). Two cases differ on purpose:

- 16-bit grey (`I;16*`, or `I` holding 0..65535) is scaled to 8 bit (value / 257). `convert("RGB")`
  clips every value above 255, so a 16-bit scan becomes a white picture.
- Float (`F`) and 32-bit integers beyond 16 bits have no defined range: refused with that reason.

A decompression bomb (more pixels than twice Pillow's `MAX_IMAGE_PIXELS`) and every other unusable
file raise `UnusableImage`, whose text is the quarantine / skip-ledger reason.

PIL and numpy only: verify decodes in process-pool workers that must not pay for importing torch.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnusableImage(ValueError):
    """An image the kit will not use; the message is the reason."""


@dataclass(frozen=True)
class ImageStamp:
    """What `prepare verify` recorded of one image file, to notice a later change."""

    size: int
    sha256: str


def stamp_of(data: bytes) -> ImageStamp:
    return ImageStamp(len(data), hashlib.sha256(data).hexdigest())


def decode(data: bytes) -> Image.Image:
    """Fully decoded image in its own mode; a bomb is an `UnusableImage`, other faults PIL's own errors."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise UnusableImage(f"decompression bomb: {err}") from None
    image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB picture the model sees (module docstring: what is kept from LLaVA and what is not)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        pixels = np.asarray(image)
        if image.mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise UnusableImage(f"32-bit integer pixels ({pixels.min()}..{pixels.max()}) have no defined "
                                "range to scale to 8 bit: convert the file to 8 or 16 bit")
        grey = np.round(pixels.astype(np.float32) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "F":
        raise UnusableImage("32-bit float pixels have no defined range to scale to 8 bit: "
                            "convert the file to 8 or 16 bit")
    return image.convert("RGB")


def conversion_loss(image: Image.Image) -> str | None:
    """What `to_rgb` loses for this image, or None when the conversion keeps everything."""
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        return "16-bit grey scaled to 8 bit"
    if mode == "CMYK":
        return "CMYK converted without colour management"
    if mode in TRANSPARENT_MODES:
        alpha = image.getchannel("A" if "A" in image.getbands() else image.getbands()[-1])
        return "transparency dropped (alpha not fully opaque)" if alpha.getextrema()[0] < 255 else None
    if "transparency" in image.info:
        return "palette with transparency" if mode == "P" else "transparent colour key dropped"
    return None


def load_rgb(path: str | os.PathLike, verified: ImageStamp | None = None) -> Image.Image:
    """Read, check against what verify recorded (when given), decode and convert one image file.

    The bytes hashed are the bytes decoded, so a file swapped between the check and the decode cannot
    slip through. A missing file raises FileNotFoundError, a broken one PIL's error or UnusableImage.
    """
    data = Path(path).read_bytes()
    if verified is not None:
        found = stamp_of(data)
        if found != verified:
            what = (f"{verified.size} -> {found.size} bytes" if found.size != verified.size
                    else "same size, different sha256")
            raise UnusableImage(f"image {path} changed since `prepare verify` ({what}): run "
                                "`llava-kit prepare verify` on the dataset folder again")
    return to_rgb(decode(data))
