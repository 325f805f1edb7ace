"""Lay out the Hub repository on disk: checkpoint files, card, chart, eval results, subset lists.

The folder is built under a temporary name and swapped into place when complete (llava.durable), so an
interrupted dry run never leaves a half folder that looks finished, nor loses the earlier one. Files are
copies with one mode (0644): an edit in a dry-run folder never reaches the checkpoint.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llava.durable import recover_folder, replace_folder, staging_folder
from llava.errors import KitError
from llava.owned import MARKER_NAME, refuse_overlap, require_replaceable

# What a HF-native LlavaOnevision checkpoint folder needs; anything else in the folder stays behind
# (eval outputs, trainer state, pickles).
CHECKPOINT_FILES = (
    "*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
    "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json", "manifest.json",
)
REQUIRED = {
    "weights (*.safetensors)": ("*.safetensors",),
    "config.json": ("config.json",),
    "generation_config.json": ("generation_config.json",),
    "tokenizer (tokenizer.json or vocab.json)": ("tokenizer.json", "vocab.json"),
    "chat template (chat_template.jinja/.json)": ("chat_template.jinja", "chat_template.json"),
    "processor (preprocessor_config.json)": ("preprocessor_config.json",),
}
PUBLISH_KIND = "publish"  # the llava.owned kind of a repo folder
FILE_MODE = 0o644


@dataclass(frozen=True)
class Extras:
    """Files the repo gets beside the checkpoint: name in repo -> source on disk."""

    files: dict[str, Path]


def checkpoint_files(checkpoint: Path) -> list[str]:
    names = sorted(p.name for p in checkpoint.iterdir() if p.is_file())
    chosen = [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in CHECKPOINT_FILES)]
    missing = [what for what, patterns in REQUIRED.items()
               if not any(fnmatch.fnmatch(name, pattern) for name in chosen for pattern in patterns)]
    if missing:
        raise KitError(f"{checkpoint} cannot be published: missing {', '.join(missing)}")
    return chosen


def _copy(source: Path, target: Path) -> None:
    """A copy, not a hard link (an edit there would change the checkpoint), with the repo's one file mode."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, FILE_MODE)


def assemble(checkpoint: Path, out: Path, readme: str, extras: Extras) -> Path:
    """Write the repo folder at `out` (replacing an earlier dry-run folder there) and return it."""
    recover_folder(out)
    refuse_overlap(out, {"checkpoint": checkpoint, **extras.files}, "publish folder")
    require_replaceable(out, PUBLISH_KIND, "publish folder")
    partial = staging_folder(out)
    for name in checkpoint_files(checkpoint):
        _copy(checkpoint / name, partial / name)
    for name, source in extras.files.items():
        _copy(source, partial / name)
    (partial / "README.md").write_text(readme, encoding="utf-8")
    os.chmod(partial / "README.md", FILE_MODE)
    return replace_folder(partial, out, kind=PUBLISH_KIND)


def local_files(folder: Path) -> list[str]:
    """The files the repo gets (the kit's ownership marker stays local)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER_NAME)
