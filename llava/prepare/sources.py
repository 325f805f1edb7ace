"""The dataset source table (`dataset_sources.yaml`) as validated objects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llava.errors import KitError
from llava.typed_config import load_config

DEFAULT_SOURCES = Path(__file__).with_name("dataset_sources.yaml")
STAGES = ("1", "1.5", "2")


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    repo_id: str
    repo_type: Literal["dataset", "model"] = "dataset"
    revision: str | None = None  # a 40-hex commit, else a first-use pin (see fetch.py)
    source: str | None = None  # where the pinned commit was confirmed
    files: list[str] = Field(min_length=1)


class SubsetRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(gt=0)
    seed: int = 0


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = "id"
    image: str = "image"
    conversations: str = "conversations"


class ImageArchive(BaseModel):
    """One published archive of a stage-2 image source; size and checksum are checked when given, a
    missing sha256 is pinned at first use, and `holds` is the folder its images sit in."""

    model_config = ConfigDict(extra="forbid")

    url: str
    size: int | None = Field(None, gt=0)
    sha256: str | None = Field(None, pattern="^[0-9a-f]{64}$")
    holds: str | None = Field(None, pattern="^[^/].*/$")  # e.g. "train2017/", below the source's root
    source: str | None = None  # where size and sha256 were confirmed

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class StageSource(BaseModel):
    """How one stage's dataset is fetched, converted and subset."""

    model_config = ConfigDict(extra="forbid")

    dir: str
    description: str = ""
    format: Literal["llava_json", "recap_parquet"]
    expects_image: bool | None
    recipe: str  # the training recipe (stages/<name>.yaml) whose image settings give token counts
    hub: HubSource
    subset: SubsetRule | None = None
    # llava_json
    json_file: str | None = None
    images_archive: str | None = None
    archive_strip_prefix: str = ""
    drop_image_containing: list[str] = Field(default_factory=list)
    image_sources: dict[str, str] = Field(default_factory=dict)
    # source name -> its published archives (members laid out as below that source's root)
    image_archives: dict[str, list[ImageArchive]] = Field(default_factory=dict)
    # recap_parquet
    parquet_glob: str | None = None
    columns: Columns = Field(default_factory=Columns)
    prompt: str | None = None
    image_subdir: str = "images"

    @model_validator(mode="after")
    def _format_fields(self) -> "StageSource":
        if self.format == "llava_json" and not self.json_file:
            raise ValueError("format llava_json needs json_file")
        if self.format == "recap_parquet" and not (self.parquet_glob and self.prompt is not None):
            raise ValueError("format recap_parquet needs parquet_glob and prompt")
        unknown = sorted(set(self.image_archives) - set(self.image_sources))
        if unknown:
            raise ValueError(f"image_archives names {unknown} that image_sources does not list")
        return self


class SourceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stages: dict[str, StageSource]


def load_sources(path: str | os.PathLike | None = None) -> dict[str, StageSource]:
    """Read and validate the table (the argument, else $LLAVA_KIT_DATASET_SOURCES, else the packaged one);
    a KitError names the file and the bad key."""
    path = Path(path or os.environ.get("LLAVA_KIT_DATASET_SOURCES") or DEFAULT_SOURCES)
    missing = f"dataset source table {path} does not exist: fix --sources"
    return load_config(SourceTable, path, "dataset source table", missing).stages


def stage_source(stage: str, path: str | os.PathLike | None = None) -> StageSource:
    stages = load_sources(path)
    if stage not in stages:
        raise KitError(f"stage {stage!r} is not in {path or os.environ.get('LLAVA_KIT_DATASET_SOURCES') or DEFAULT_SOURCES}; known stages: {', '.join(stages)}")
    return stages[stage]
