"""A DeepSpeed checkpoint saved by N processes, made loadable by M through DeepSpeed's universal format.

`deepspeed.checkpoint.ds_to_universal` writes one folder per parameter (fp32 weights, Adam moments)
from the ZeRO shards; an engine configured with `checkpoint.load_universal` then slices them for its
own world size. The converted copy lives beside the checkpoints, in runs/<name>/trainer/resized/
checkpoint-N: the saved checkpoint is never modified, and the trainer's other files (trainer state,
scheduler, weights) are linked in so transformers resumes from that folder as from any checkpoint.
The copy is published atomically with its own marker (a crash mid-conversion leaves only staging),
reused by a rerun, and dropped once a checkpoint in the new layout is published.
"""

from __future__ import annotations

import json
import os
import shutil
from argparse import Namespace
from pathlib import Path

from llava.durable import fsync_tree, write_text

RESIZED = "resized"
CONVERTED = "CONVERTED.json"
LATEST_UNIVERSAL = "latest_universal"  # the tag file an engine with load_universal reads


def saved_tag(checkpoint: Path) -> str | None:
    """The DeepSpeed tag (global_stepN) a checkpoint folder holds, None for a checkpoint without DeepSpeed."""
    latest = checkpoint / "latest"
    if latest.is_file():
        return latest.read_text().strip()
    tags = sorted(p.name for p in checkpoint.glob("global_step*") if p.is_dir())
    return tags[-1] if tags else None


def converted_folder(trainer_dir: Path, checkpoint: Path) -> Path:
    return trainer_dir / RESIZED / checkpoint.name


def read_converted(folder: Path, source: Path) -> dict | None:
    """The conversion marker of a finished copy of `source`, None when there is none."""
    try:
        marker = json.loads((folder / CONVERTED).read_text())
    except (OSError, ValueError):
        return None
    return marker if marker.get("source") == str(source) else None


def convert_to_universal(checkpoint: Path, trainer_dir: Path, saved_world: int) -> Path:
    """Rank 0 only: the universal copy of `checkpoint` (made now, or found from an earlier run)."""
    final = converted_folder(trainer_dir, checkpoint)
    if read_converted(final, checkpoint) is not None:
        return final
    tag = saved_tag(checkpoint)
    staged = final.with_name(f".staging-{checkpoint.name}")
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for entry in checkpoint.iterdir():
        if entry.name != tag and entry.name != "latest" and not entry.name.startswith("COMPLETE"):
            (staged / entry.name).symlink_to(os.path.relpath(entry, staged))
    _run_ds_to_universal(checkpoint / tag, staged / f"{tag}_universal")
    write_text(staged / LATEST_UNIVERSAL, f"{tag}_universal")  # the converter names the staging folder
    write_text(staged / CONVERTED, json.dumps({"source": str(checkpoint), "tag": tag, "saved_world_size": saved_world,
                                                "converter": "deepspeed.checkpoint.ds_to_universal"}, indent=1))
    fsync_tree(staged)
    shutil.rmtree(final, ignore_errors=True)
    staged.rename(final)
    return final


def _run_ds_to_universal(source: Path, target: Path) -> None:
    """DeepSpeed's converter in this process, one worker (no process pool inside a training rank).

    `inject_missing_state`: ZeRO-1/2 checkpoints of a model without tensor parallelism carry no
    universal_checkpoint_info; the converter adds the version record it needs.
    """
    from deepspeed.checkpoint import ds_to_universal

    ds_to_universal.main(Namespace(input_folder=str(source), output_folder=str(target), num_extract_workers=1,
                                   num_merge_workers=1, keep_temp_folder=False, strict=True,
                                   inject_missing_state=True))


def drop_converted(trainer_dir: Path) -> None:
    """Once a checkpoint in the current layout exists the converted copies are no longer needed."""
    shutil.rmtree(Path(trainer_dir) / RESIZED, ignore_errors=True)
