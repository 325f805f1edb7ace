"""Lay out the Hub repository on disk: checkpoint files, card, chart, eval results, subset lists.

The folder is built under a temporary name and swapped into place when complete (llava.durable), so an
interrupted dry run never leaves a half folder that looks finished, nor loses the earlier one.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from llava.durable import recover_folder, replace_folder
from llava.errors import KitError

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
MARKERS = ("README.md", "config.json")  # how a folder written by an earlier dry run is recognised


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


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard links keep multi-GB weights from being copied; other filesystems get a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def assemble(checkpoint: Path, out: Path, readme: str, extras: Extras) -> Path:
    """Write the repo folder at `out` (replacing an earlier dry-run folder there) and return it."""
    recover_folder(out)
    if out.exists() and any(out.iterdir()) and not all((out / marker).exists() for marker in MARKERS):
        raise KitError(f"{out} exists and is not a folder written by `llava-kit publish`: choose an empty or new path")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in checkpoint_files(checkpoint):
        _link_or_copy(checkpoint / name, partial / name)
    for name, source in extras.files.items():
        _link_or_copy(source, partial / name)
    (partial / "README.md").write_text(readme, encoding="utf-8")
    return replace_folder(partial, out)


def local_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
