"""runs/<name>: the folder a stage keeps its resumable state, logs and events in, claimed before use.

Torch-free on purpose: the launcher claims it before torchrun starts, so a refusal is one message from
one process, and no rank writes its log into a folder the kit does not own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from llava.owned import MARKER_NAME, adopt_older_output, claim_folder, mark_owned, owned_kind

RUN_KIND = "run"  # the llava.owned kind of runs/<name>
MARKER_WAIT_S = 120.0  # how long a rank other than 0 waits for the claim before writing anyway


def claim_run_folder(run_dir: Path) -> Path:
    """runs/<name> holds state the kit deletes and rewrites (unfinished checkpoints, the skip ledger), so it
    must be the kit's: new, empty, or marked. Also taken: a run folder of an older kit version (it has
    events.jsonl) and one holding only kit outputs (`eval`'s default runs/<checkpoint>/eval). The launcher
    and rank 0 claim it; the other ranks wait for that claim before they write their logs there."""
    if os.environ.get("RANK", "0") != "0":
        _wait_for_claim(run_dir)
        return run_dir
    adopt_older_output(run_dir, RUN_KIND, "events.jsonl")
    if run_dir.is_dir() and not (run_dir / MARKER_NAME).exists() \
            and all(entry.is_dir() and owned_kind(entry) for entry in run_dir.iterdir()):
        mark_owned(run_dir, RUN_KIND)
    return claim_folder(run_dir, RUN_KIND, what="run folder")


def _wait_for_claim(run_dir: Path) -> None:
    """Bounded: if rank 0 refuses the folder it exits and torchrun ends this rank too."""
    deadline = time.monotonic() + MARKER_WAIT_S
    while owned_kind(run_dir) != RUN_KIND and time.monotonic() < deadline:
        time.sleep(0.2)
