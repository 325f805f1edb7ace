"""An evaluation suite (eval/*.yaml) as a typed, validated object.

Suites are data: which benchmark file, how prompts are built, how VLMEvalKit is driven, and the
reference tables a run is compared against. Unknown keys are errors so a typo never goes unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llava.packaged import packaged_path
from llava.paths import VolumeLayout
from llava.typed_config import load_config

# VLMEvalKit scores a dataset circularly iff its name contains one of these (image_mcq.py:269-274).
CIRCULAR_NAME_MARKERS = ("mmbench", "ccbench", "circular", "mmcr")


def vlmevalkit_treats_as_circular(dataset: str) -> bool:
    return any(marker in dataset.lower() for marker in CIRCULAR_NAME_MARKERS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TsvSpec(_Strict):
    file: str | None = Field(None, description="TSV file name inside $LMUData (None: given per run)")
    md5: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    url: str | None = Field(None, pattern=r"^https?://",
                            description="where a missing file is fetched from (VLMEvalKit's DATASET_URL)")

    @model_validator(mode="after")
    def _url_needs_md5(self) -> "TsvSpec":
        if self.url is not None and (self.md5 is None or self.file is None):
            raise ValueError("tsv.url needs tsv.file and tsv.md5: a fetched TSV is held to its md5")
        return self


class PromptSpec(_Strict):
    template: Literal["image_mcq"] = "image_mcq"  # VLMEvalKit ImageMCQDataset.build_prompt
    image_prefix: str = "<image>\n"  # LLaVA_OneVision_HF writes the image token into the text
    max_new_tokens: int = Field(2048, ge=1)


class VlmEvalKitSpec(_Strict):
    package: str = Field(pattern=r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+$",
                         description="the PyPI artifact run (docker/vlmevalkit.txt holds its sha256)")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="the VLMEvalKit commit that artifact packages")
    model_class: str = "LLaVA_OneVision_HF"
    data_class: str = "ImageMCQDataset"
    model_key: str = Field("llava_kit", pattern=r"^[A-Za-z0-9_.-]+$")


class ReferenceTable(_Strict):
    label: str
    source: str
    rows: dict[str, float]

    @field_validator("rows")
    @classmethod
    def _fractions(cls, rows: dict[str, float]) -> dict[str, float]:
        bad = [name for name, value in rows.items() if not 0.0 <= value <= 1.0]
        if bad:
            raise ValueError(f"accuracies must lie in [0, 1]; out of range: {bad}")
        return rows


class Suite(_Strict):
    name: str
    dataset: str = Field(description="VLMEvalKit dataset key; also the TSV stem VLMEvalKit looks for")
    split: str = "dev"
    circular: bool
    judge: Literal["exact_matching"] = "exact_matching"
    tsv: TsvSpec = TsvSpec()
    prompt: PromptSpec = PromptSpec()
    vlmevalkit: VlmEvalKitSpec | None = None  # needed by --backend vlmevalkit only
    references: dict[Literal["seed", "official"], ReferenceTable] = {}

    @model_validator(mode="after")
    def _circular_matches_vlmevalkit(self) -> "Suite":
        if self.circular != vlmevalkit_treats_as_circular(self.dataset):
            raise ValueError(
                f"circular: {self.circular} disagrees with VLMEvalKit, which scores {self.dataset!r} "
                f"{'circularly' if not self.circular else 'one row at a time'} (names containing "
                f"{'/'.join(CIRCULAR_NAME_MARKERS)} are circular); fix `circular` or `dataset`"
            )
        return self

    def default_tsv_path(self) -> Path | None:
        """Where VLMEvalKit would look: $LMUData/<file>, else <datasets volume>/LMUData/<file>."""
        if self.tsv.file is None:
            return None
        root = os.environ.get("LMUData") or VolumeLayout.from_env().datasets / "LMUData"
        return Path(root) / self.tsv.file


def adhoc_suite(tsv: Path, *, circular: bool) -> Suite:
    """A suite for scoring a TSV no suite file describes: its stem as the name, no references."""
    return Suite.model_construct(name=Path(tsv).stem, dataset=Path(tsv).stem, split="dev", circular=circular,
                                 judge="exact_matching", tsv=TsvSpec(), prompt=PromptSpec(), vlmevalkit=None,
                                 references={})


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite YAML (eval/NAME.yaml is the packaged one if no such file is here)."""
    path = packaged_path(path)
    return load_config(Suite, path, "suite",
                       f"suite file {path} does not exist (suites live in eval/, e.g. eval/mmbench_dev_en.yaml)")
