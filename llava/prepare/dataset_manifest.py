"""The `dataset` manifest training checks: hashes of the small files, counts, subset hash, source commit.

Each kept image's size and sha256 are in `image_digests.tsv` (hashed here like the other small files),
which training checks every image against as it loads it; `image_listing_sha256` fingerprints the
referenced paths and sizes in one value.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from llava.data.image_digests import DIGESTS_NAME
from llava.data.record_checks import image_paths
from llava.manifest import ManifestError, read_manifest, write_manifest
from llava.prepare.storage import read_jsonl, read_records
from llava.prepare.subsets import INDEX_NAME
from llava.prepare.verify import DATA_NAME, QUARANTINE_NAME, STATS_NAME, VERIFIED_NAME, VerifyReport

FIXES_NAME = "image_fixes.jsonl"
HASHED_FILES = (DATA_NAME, VERIFIED_NAME, INDEX_NAME, QUARANTINE_NAME, STATS_NAME, FIXES_NAME, DIGESTS_NAME)


def _stat_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """p50/p95/max per histogram. Keys avoid the word "token": the manifest scrubs such keys as secrets."""
    summary: dict[str, Any] = {"text_unit": stats.get("text_unit")}
    for key, name in (("text_tokens", "text"), ("image_tokens", "image"), ("total_tokens", "total")):
        hist = stats.get(key)
        if hist and hist.get("n"):
            summary[name] = {field: hist[field] for field in ("p50", "p95", "max")}
    if "over_model_max_length" in stats:
        summary["over_max_length"] = stats["over_model_max_length"]
    return summary


def previous_extra(folder: str | os.PathLike) -> dict[str, Any]:
    """The `extra` of an existing dataset manifest, or {} (a re-verify keeps source and subset)."""
    try:
        return dict(read_manifest(folder).get("extra", {}))
    except ManifestError:
        return {}


def write_dataset_manifest(
    folder: str | os.PathLike, report: VerifyReport, *, extra: dict[str, Any], started: float | None = None,
) -> dict[str, Any]:
    """Write manifest.json (kind "dataset") for a verified folder; its counts are the verified set's."""
    folder = Path(folder)
    records = read_records(folder / report.data_file)
    with_image = sum(1 for record in records if image_paths(record))
    quarantine = read_jsonl(folder / QUARANTINE_NAME)  # this run's rows and any kept from earlier runs
    metrics = {
        "samples": len(records),
        "image_samples": with_image,
        "text_samples": len(records) - with_image,
        "quarantined": len(quarantine),
        "images_checked": report.images_checked,
        "images_per_second": report.images_per_second,
    }
    body = {
        **extra,
        "verified_file": report.data_file,
        "quarantine_reasons": dict(Counter(row.get("reason") for row in quarantine).most_common()),
        "image_listing_sha256": report.image_listing_sha256,
        "image_conversions": {reason: len(paths) for reason, paths in report.conversions.items()},
        "lengths": _stat_summary(report.stats),
    }
    return write_manifest(folder, "dataset", metrics=metrics, extra=body, started=started,
                          file_patterns=HASHED_FILES)
