"""Pre-scan throughput of `prepare verify`: images fully decoded per second on this machine.

Generates a photo-like JPEG set (smooth gradients plus mild noise, COCO-sized by default), then times
`check_images` serially, with a process pool and with a thread pool, and the whole `verify_dataset`
(conversation checks, decoding, stats, writing). Not a test: numbers depend on the machine.

    python benchmarks/verify_throughput.py --count 2000 --size 640x480
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from llava.prepare.verify import check_images, default_workers, verify_dataset


def gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([128 + 100 * np.sin(x / 37), 128 + 100 * np.cos(y / 53), 128 + 60 * np.sin((x + y) / 91)], axis=-1)


def photo_like(base: np.ndarray, seed: int) -> Image.Image:
    """The shared gradient, shifted and re-noised per image so no two files are alike."""
    rng = np.random.default_rng(seed)
    shifted = np.roll(base, (int(rng.integers(0, base.shape[0])), int(rng.integers(0, base.shape[1]))), axis=(0, 1))
    noisy = shifted + rng.normal(0, 12, base.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_dataset(folder: Path, count: int, width: int, height: int) -> list[str]:
    images = folder / "images"
    images.mkdir(parents=True)
    records = []
    base = gradient(width, height)
    for n in range(count):
        name = f"{n:06d}.jpg"
        photo_like(base, n).save(images / name, "JPEG", quality=90)
        records.append({"id": str(n), "image": name, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image."},
            {"from": "gpt", "value": "A synthetic picture with smooth colour bands."}]})
    (folder / "data.json").write_text(json.dumps(records))
    return [str(images / record["image"]) for record in records]


def timed(label: str, count: int, run, repeat: int) -> float:
    """Best of `repeat` runs: on a shared machine the best run is the least disturbed one."""
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - started))
    print(f"{label:<34} {max(rates):8.1f} images/s  (runs: {', '.join(f'{r:.0f}' for r in rates)})")
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        paths = make_dataset(folder, args.count, width, height)
        mean_kib = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        print(f"{args.count} JPEGs {args.size}, mean {mean_kib:.0f} KiB, made in {time.perf_counter() - started:.1f} s; "
              f"{os.cpu_count()} CPUs, {args.workers} workers")
        print(f"load average before timing: {os.getloadavg()[0]:.1f}")
        runs = {
            "serial (1 worker)": lambda: check_images(paths, workers=1),
            f"process pool ({args.workers})": lambda: check_images(paths, workers=args.workers, executor="process"),
            f"thread pool ({args.workers})": lambda: check_images(paths, workers=args.workers, executor="thread"),
            f"verify_dataset ({args.workers} threads)":
                lambda: verify_dataset(folder, expects_image=True, recipe_name="stage1", workers=args.workers),
        }
        for label, run in runs.items():
            timed(label, len(paths), run, args.repeat)
        print(f"load average after timing: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
