"""`prepare models`: fetch the LLM and the vision tower named in model_sources.yaml into models/.

Each model lands in `models/<name>/` with a `manifest.json` (kind "model") that records the repo id, the
revision asked for and the commit it resolved to, so later steps can refuse a folder that changed.
"""

from __future__ import annotations

import fnmatch
import os
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from llava.manifest import write_manifest
from llava.prepare.hub import fetch_repo
from llava.typed_config import load_config

SOURCES_RESOURCE = "model_sources.yaml"
# Pickle-based weight formats can run code when loaded; they are never fetched.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")


class ModelSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    repo_id: str
    revision: str = "main"
    source: str | None = None  # where the pinned revision was confirmed
    allow_patterns: list[str]

    @field_validator("allow_patterns")
    @classmethod
    def _no_pickles(cls, patterns: list[str]) -> list[str]:
        """A pattern with an open tail ('x*') or one matching a pickled name could fetch pickles."""
        samples = [pickled.replace("*", stem) for pickled in PICKLE_PATTERNS for stem in ("model", "pytorch_model")]
        for pattern in patterns:
            hit = next((s for s in samples if fnmatch.fnmatch(s, pattern)), None)
            if hit or pattern.endswith(("*", "?", "]")):
                raise ValueError(
                    f"pattern {pattern!r} could fetch pickled weights (e.g. {hit or 'model.bin'}); "
                    "name the files or end the pattern with a safe extension such as .safetensors"
                )
        return patterns


class ModelSources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSource]


def load_sources(path: str | os.PathLike | None = None) -> list[ModelSource]:
    """Read the packaged model_sources.yaml, or a user's revision file with the same layout."""
    path = path or Path(str(resources.files("llava.prepare").joinpath(SOURCES_RESOURCE)))
    return load_config(ModelSources, path, "revision file", f"revision file {path} does not exist").models


def prepare_models(
    models_root: str | os.PathLike,
    *,
    endpoint: str | None = None,
    sources: str | os.PathLike | None = None,
) -> list[Path]:
    """Download every model in `sources` (default: the packaged list) under `models_root`; return the folders."""
    folders = []
    for source in load_sources(sources):
        folders.append(prepare_model(source, Path(models_root), endpoint=endpoint))
    return folders


def prepare_model(source: ModelSource, models_root: Path, *, endpoint: str | None = None) -> Path:
    snapshot = fetch_repo(
        source.repo_id, models_root / source.name, revision=source.revision,
        allow_patterns=source.allow_patterns, ignore_patterns=list(PICKLE_PATTERNS), endpoint=endpoint,
    )
    write_manifest(
        snapshot.path, "model",
        extra={
            "repo_id": source.repo_id, "revision": source.revision, "commit": snapshot.commit,
            "total_bytes": snapshot.total_bytes,
        },
        # exact names: the client's own bookkeeping under .cache/ must not enter the manifest
        file_patterns=snapshot.files,
    )
    return snapshot.path
