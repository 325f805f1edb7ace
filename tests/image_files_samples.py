"""Image files that the RGB conversion treats specially, written small, for the image-loading tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1x1 PNG whose header claims side x side pixels: Pillow refuses it at open as a
    decompression bomb (over 2 x MAX_IMAGE_PIXELS), before reading any pixel data."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC over type + body
    path.write_bytes(bytes(data))
    return path


def grey16_png(path: Path, value: int = 40000, size: tuple[int, int] = (32, 32)) -> Path:
    pixels = np.full(size[::-1], value, dtype=np.uint16)
    pixels[0, 0] = 0
    Image.fromarray(pixels).save(path)
    return path


def lossy_images(folder: Path) -> dict[str, str]:
    """One file per lossy conversion (name -> the reason verify must report) and one opaque RGBA (no reason)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgba = Image.new("RGBA", (16, 16), (200, 30, 30, 255))
    rgba.save(folder / "opaque.png")
    rgba.putpixel((0, 0), (200, 30, 30, 0))
    rgba.save(folder / "cutout.png")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "print.jpg")
    grey16_png(folder / "scan16.png")
    palette = Image.new("P", (16, 16), 3)
    palette.save(folder / "sticker.png", transparency=3)
    return {"cutout.png": "transparency dropped (alpha not fully opaque)",
            "print.jpg": "CMYK converted without colour management",
            "scan16.png": "16-bit grey scaled to 8 bit",
            "sticker.png": "palette with transparency"}
