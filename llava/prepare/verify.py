"""Check a dataset folder before any GPU time is spent on it, and quarantine what would fail in training.

Every referenced image is fully decoded (in a thread or process pool, with a progress bar); every conversation is
checked with the same functions the training dataset uses (llava.data.record_checks). Bad samples go to
`quarantine.jsonl` (id, reason, image, and the record itself so nothing is lost). A user's `data.json` is
never rewritten: the samples that passed go to `data.verified.json` beside it (only `prepare data`, which
wrote data.json itself, filters it in place).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from llava.data.image_digests import write_image_digests
from llava.data.image_files import ImageStamp
from llava.data.record_checks import ImageInfo, conversation_fault, id_faults, image_paths, inspect_image
from llava.prepare.storage import read_jsonl, read_records, write_json_atomic, write_jsonl, write_records

DATA_NAME = "data.json"
VERIFIED_NAME = "data.verified.json"
QUARANTINE_NAME = "quarantine.jsonl"
STATS_NAME = "stats.json"
IMAGES_DIR = "images"
_INLINE_BELOW = 64  # a pool costs more than it saves for a handful of images
Executor = Literal["process", "thread"]


@dataclass
class VerifyReport:
    """What one verification found; `faults` are the quarantine rows it added."""

    total: int
    kept: int
    faults: list[dict[str, Any]]
    images_checked: int
    seconds: float
    image_listing_sha256: str
    stats: dict[str, Any] = field(default_factory=dict)
    data_file: str = DATA_NAME  # the file in the folder that holds exactly the samples that passed
    length_check: str = ""  # which token limit samples were checked against, or why none was
    # what the RGB conversion loses, per reason: the kept images it applies to (llava.data.image_files)
    conversions: dict[str, list[str]] = field(default_factory=dict)
    stamps: dict[str, ImageStamp] = field(default_factory=dict)  # kept image -> size and sha256

    @property
    def images_per_second(self) -> float:
        return round(self.images_checked / self.seconds, 1) if self.seconds > 0 else 0.0

    def reasons(self) -> dict[str, int]:
        return dict(Counter(row["reason"] for row in self.faults).most_common())


def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _process_pool(workers: int) -> ProcessPoolExecutor:
    """Workers from a fork server: forking a parent that already runs threads (progress bars, torch's
    OpenMP pool, tokenizers) can deadlock, and decoding needs nothing from the parent."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def check_images(paths: list[str], *, workers: int | None = None, executor: Executor = "thread") -> list[ImageInfo]:
    """`inspect_image` over `paths`, in parallel, in order, with a progress bar.

    Threads by default: Pillow releases the GIL while it decodes, and on the 2-core development machine
    a thread pool beat a process pool in every measured session (docs/data.md, "Throughput").
    """
    workers = default_workers() if workers is None else workers
    bar = dict(total=len(paths), desc="verify images", unit="img", disable=not paths)
    if workers <= 1 or len(paths) < _INLINE_BELOW:
        return [inspect_image(path) for path in tqdm(paths, **bar)]
    chunk = max(1, min(256, len(paths) // (workers * 8)))
    with (_process_pool(workers) if executor == "process" else ThreadPoolExecutor(max_workers=workers)) as pool:
        return list(tqdm(pool.map(inspect_image, paths, chunksize=chunk), **bar))


def find_faults(
    records: list[Any], images_dir: Path, *, expects_image: bool | None,
    workers: int | None = None, executor: Executor = "thread",
) -> tuple[dict[int, tuple[str, str | None]], dict[int, list[ImageInfo]], int]:
    """(index -> (reason, image path at fault)), (index -> ImageInfo per image of the good records),
    and how many images were decoded."""
    faults: dict[int, tuple[str, str | None]] = {i: (reason, None) for i, reason in id_faults(records).items()}
    for index, record in enumerate(records):
        if index not in faults:
            reason = conversation_fault(record, expects_image=expects_image)
            if reason:
                image = record.get("image") if isinstance(record, dict) else None
                faults[index] = (reason, image if isinstance(image, str) else None)
    todo = [(index, rel) for index, record in enumerate(records) if index not in faults for rel in image_paths(record)]
    infos = check_images([str(images_dir / rel) for _, rel in todo], workers=workers, executor=executor)
    per_record: dict[int, list[ImageInfo]] = {}
    for (index, rel), info in zip(todo, infos):
        if info.fault and index not in faults:
            faults[index] = (info.fault, rel)
        per_record.setdefault(index, []).append(info)
    good = {index: found for index, found in per_record.items() if index not in faults}
    return faults, good, len(todo)


def image_listing_sha256(records: list[dict[str, Any]], images_dir: Path) -> str:
    """A cheap fingerprint of the image folder a data.json uses: sha256 over sorted "path size" lines."""
    lines = sorted({f"{rel} {(images_dir / rel).stat().st_size}\n" for record in records for rel in image_paths(record)})
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_dataset(
    dataset_dir: str | os.PathLike,
    *,
    expects_image: bool | None = None,
    recipe_name: str | None = None,
    tokenizer=None,
    max_length: int | None = None,
    workers: int | None = None,
    executor: Executor = "thread",
    apply: bool = True,
    fresh_quarantine: bool = False,
    in_place: bool = False,
) -> VerifyReport:
    """Verify `dataset_dir/data.json` against `dataset_dir/images/`.

    With `apply`, bad samples are added to quarantine.jsonl (replacing it with `fresh_quarantine`), the
    good ones are written to data.verified.json (or, `in_place`, data.json is rewritten without them:
    only for a data.json the kit wrote), and stats.json gets the length histograms. Samples longer than
    `max_length` tokens (default: the stage recipe's model_max_length) are quarantined when a tokenizer
    can count them (llava.prepare.stats.over_length).
    """
    from llava.prepare.stats import dataset_stats, over_length

    folder = Path(dataset_dir)
    records = read_records(folder / DATA_NAME)
    started = time.perf_counter()
    faults, infos, decoded = find_faults(records, folder / IMAGES_DIR, expects_image=expects_image,
                                workers=workers, executor=executor)
    seconds = time.perf_counter() - started
    sizes = {records[i]["id"]: [(info.width, info.height) for info in found] for i, found in infos.items()}
    good = [i for i in range(len(records)) if i not in faults]
    too_long, length_note = over_length([records[i] for i in good], sizes, tokenizer=tokenizer,
                                        recipe_name=recipe_name, max_length=max_length)
    faults.update({good[position]: (reason, None) for position, reason in too_long.items()})
    rows = [{"id": None if not isinstance(records[i], dict) else records[i].get("id"), "reason": reason,
             "image": image, "record": records[i]} for i, (reason, image) in sorted(faults.items())]
    clean = [record for index, record in enumerate(records) if index not in faults]
    report = VerifyReport(
        total=len(records), kept=len(clean), faults=rows, images_checked=decoded, seconds=seconds,
        image_listing_sha256=image_listing_sha256(clean, folder / IMAGES_DIR), length_check=length_note,
    )
    for index, found in sorted(infos.items()):
        for rel, info in zip(image_paths(records[index]), found):
            report.stamps[rel] = info.stamp
            if info.conversion:
                report.conversions.setdefault(info.conversion, []).append(rel)
    report.stats = dataset_stats(clean, sizes, tokenizer=tokenizer, recipe_name=recipe_name)
    if apply:
        report.data_file = _apply(folder, clean, rows, report, replace=fresh_quarantine, in_place=in_place)
    return report


def _apply(folder: Path, clean: list[dict[str, Any]], rows: list[dict[str, Any]], report: VerifyReport,
           *, replace: bool, in_place: bool) -> str:
    """Quarantine rows in, the clean set written, stats refreshed; returns the clean set's file name."""
    new_ids = {row["id"] for row in rows}
    kept_before = [] if replace else [row for row in read_jsonl(folder / QUARANTINE_NAME) if row.get("id") not in new_ids]
    write_jsonl(folder / QUARANTINE_NAME, kept_before + rows)
    write_json_atomic(folder / STATS_NAME, report.stats)
    write_image_digests(folder, report.stamps)
    if in_place:
        if rows:
            write_records(folder / DATA_NAME, clean)
        return DATA_NAME
    if not rows:  # data.json itself passed: a verified copy from an earlier run is stale
        (folder / VERIFIED_NAME).unlink(missing_ok=True)
        return DATA_NAME
    write_records(folder / VERIFIED_NAME, clean)
    return VERIFIED_NAME
