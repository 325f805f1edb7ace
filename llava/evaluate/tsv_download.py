"""The benchmark TSV on a fresh box: fetched from the suite's URL (VLMEvalKit's own) into $LMUData.

VLMEvalKit would download it itself, but the kit checks the file before a long run and refuses a
missing one; so the kit fetches it first, from the same URL and held to the same MD5 (the suite's
`tsv.url` and `tsv.md5`, copied from ImageMCQDataset.DATASET_URL / DATASET_MD5 of the pinned artifact).
The download resumes after a cut (llava.http_download); a file with another MD5 never takes the
TSV's place: it is set aside under a name that says so and the run is refused, naming both files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from llava.durable import move_into_place
from llava.errors import KitError
from llava.evaluate.mmbench_tsv import file_md5
from llava.evaluate.suite import Suite
from llava.http_download import bytes_on_disk, fetch_to_part, part_path, remote_size


def download_tsv(suite: Suite, path: Path, suite_path: Path) -> Path:
    """Fetch the suite's TSV from `tsv.url` to `path` (resuming a `.part`), checked against `tsv.md5`."""
    url, expected = suite.tsv.url, suite.tsv.md5
    if url is None or expected is None:
        raise KitError(f"TSV {path} does not exist and {suite_path} gives no tsv.url to fetch it from; place "
                       f"{suite.dataset}'s TSV there (set LMUData) or pass --tsv")
    part = part_path(path)
    size = remote_size(url, "benchmark TSV", f"place {path.name} in {path.parent} yourself (LMUData) or pass --tsv")
    have = bytes_on_disk(part)
    print(f"fetching {suite.dataset}'s TSV from {url} into {path} ({size / (1 << 20):.1f} MiB"
          + (f", resuming at {have / (1 << 20):.1f} MiB" if have else "") + ")", file=sys.stderr, flush=True)
    fetch_to_part(url, part, size, "benchmark TSV")
    actual = file_md5(part)
    if actual != expected:
        bad = path.with_name(path.name + ".bad-md5")
        os.replace(part, bad)
        raise KitError(f"{bad}: the TSV downloaded from {url} has md5 {actual}, not {expected} ({suite_path} key "
                       f"tsv.md5), so it is not the file the scores refer to; it was set aside there (delete it) "
                       f"and {path} was not written. A rerun downloads it afresh; if the publisher changed the "
                       "file, fix tsv.url/tsv.md5 in the suite")
    return move_into_place(part, path)
