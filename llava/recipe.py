"""A training stage as data: one typed, validated recipe loaded from `stages/*.yaml`.

Stages differ only by these values; the training code never branches on a stage name.
Unknown keys and wrong types fail here, before any model is built, naming the file and key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llava.errors import KitError
from llava.packaged import STAGES_DIR, packaged_path
from llava.typed_config import braces_as_mapping, config_error, key_line, read_document, set_dotted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyTextSpec(_Strict):
    """Shapes of a random-initialised Qwen2 (tiny worlds and real-size benches)."""
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int


class InitSpec(_Strict):
    """Where the weights come from: an LLM + SigLIP folder, or the previous stage's checkpoint."""
    llm: str | None = None
    vision_tower: str | None = None
    from_checkpoint: str | None = None
    reset_image_newline: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "InitSpec":
        if self.from_checkpoint is None and (self.llm is None or self.vision_tower is None):
            raise ValueError("init needs either from_checkpoint or both llm and vision_tower")
        return self


class DataSpec(_Strict):
    path: str
    image_folder: str
    template: Literal["plain", "qwen_1_5"]
    # "original" keeps LLaVA-NeXT's quirk (structural tokens of every turn supervised);
    # "assistant_only" supervises assistant replies and their <|im_end|> only.
    label_mode: Literal["original", "assistant_only"] = "original"
    system_prompt: str = "You are a helpful assistant."
    max_skip_fraction: float = Field(0.01, ge=0, le=1)
    require_manifest: bool = True


class ModelSpec(_Strict):
    """LlavaOnevision settings that make transformers reproduce the original recipe."""
    image_mode: Literal["square", "anyres"]
    vision_layers: int = Field(26, gt=0, description="SigLIP layers kept (so400m has 27; LLaVA drops the last)")
    vision_feature_layer: int = -1
    vision_feature_select_strategy: Literal["full", "default"] = "full"
    vision_aspect_ratio: str = "anyres_max_9"
    # (width, height) pairs in the original's order; converted to transformers' (height, width).
    grid_pinpoints_wh: list[tuple[int, int]] = Field(default_factory=list)
    patch_merge: Literal["flat", "spatial_unpad"] = "flat"
    image_token: str = "<image>"
    image_token_index: int | None = Field(None, description="checked against the tokenizer when set")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "torch_varlen"] = "sdpa"
    projector_hidden_act: str = "gelu"


class TrainingSpec(_Strict):
    epochs: float = Field(1, gt=0)
    per_device_batch: int = Field(gt=0)
    grad_accum: int = Field(gt=0)
    num_gpus: int = Field(1, gt=0, description="world size the recipe was written for")
    keep_global_batch: bool = True
    learning_rate: float = Field(gt=0)
    vision_tower_lr: float | None = Field(None, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    scheduler: str = "cosine"
    max_grad_norm: float = Field(1.0, ge=0, description="0 turns clipping off")
    model_max_length: int = Field(gt=0)
    bf16: bool = True
    tf32: bool = True
    gradient_checkpointing: bool = True
    save_strategy: Literal["no", "steps"] = "steps"
    save_steps: int = Field(500, gt=0)
    save_total_limit: int = Field(1, ge=0)
    logging_steps: int = Field(10, gt=0)
    group_by_modality_length: bool = False
    dataloader_num_workers: int = Field(4, ge=0)
    dataloader_drop_last: bool = False
    seed: int = Field(42, ge=0)
    max_steps: int = Field(-1, ge=-1, description="-1: run `epochs`; else the optimizer steps to run")
    optim: str = "adamw_torch"
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    # Speed settings (stages/profiles/fast.yaml); the defaults are the seed's behaviour.
    loss_impl: Literal["model", "selected", "liger"] = Field(
        "model", description="model: transformers' loss over every position's logits (the seed); selected: logits "
                             "only where a label is supervised; liger: Liger's fused linear cross-entropy on those "
                             "positions (GPU with liger-kernel, else selected)")
    loss_average: Literal["micro_batch", "per_sample"] = Field(
        "micro_batch", description="micro_batch: token mean over the micro-batch (the seed); per_sample: mean over "
                                   "samples of each sample's token mean (equals the seed's at per_device_batch 1)")
    packing: bool = Field(False, description="one row per micro-batch, position_ids restart per sample; only "
                                             "where a varlen attention runs (flash_attention_2, torch_varlen), padded otherwise")

    @model_validator(mode="after")
    def _loss_settings_agree(self) -> "TrainingSpec":
        if self.max_steps == 0:
            raise ValueError("max_steps 0 would train nothing: use -1 to run `epochs`, or a positive step count")
        if self.loss_average == "per_sample" and self.loss_impl == "model":
            raise ValueError("loss_average per_sample needs loss_impl selected or liger (the model's own loss "
                             "is a token mean over the micro-batch)")
        return self

    @property
    def global_batch(self) -> int:
        return self.per_device_batch * self.grad_accum * self.num_gpus


class CheckpointingSpec(_Strict):
    """The kit's own resumable-state policy, separate from the seed's HF save flags in `training`.

    The seed's `save_strategy`/`save_steps`/`save_total_limit` stay recorded as the seed ran them
    (stage 1 saved nothing for 6.3 h); these keys decide when the kit writes full resumable state
    (weights, optimizer, scheduler, sampler position, RNG, DeepSpeed shards) and how many it keeps.
    """
    resume_every_steps: int = Field(200, ge=0, description="optimizer steps between saves; 0 = only on "
                                                            "SIGTERM/SIGINT, SAVE_NOW and at the last step")
    keep_last: int = Field(1, ge=1, description="complete checkpoints kept in runs/<name>/trainer/")


class WatchdogSpec(_Strict):
    """When a rank counts as hung: no optimizer step completed within the limit (llava.train.watchdog)."""
    step_timeout_s: float | None = Field(None, gt=0, description="fixed limit in seconds; unset: derived from the "
                                         "measured step time (factor x median step, never below floor_s)")
    factor: float = Field(20.0, gt=1, description="derived limit = factor x the median of the steps measured so far")
    floor_s: float = Field(600.0, gt=0, description="the derived limit never goes below this")
    first_step_s: float = Field(1800.0, gt=0, description="limit until the first step of a run has completed "
                                                           "(data loader start, compilation, first collectives)")
    collective_timeout_s: int = Field(1800, gt=0, description="process-group timeout: a collective still "
                                      "waiting after this fails (NCCL, with TORCH_NCCL_ASYNC_ERROR_HANDLING=1)")


class Recipe(_Strict):
    # runs/<name> is the run folder: one plain folder name, never a path
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    init: InitSpec
    data: DataSpec
    model: ModelSpec
    tunable_parts: list[Literal["mm_mlp_adapter", "mm_vision_tower", "mm_language_model"]]
    training: TrainingSpec
    checkpointing: CheckpointingSpec = Field(default_factory=CheckpointingSpec)
    watchdog: WatchdogSpec = Field(default_factory=WatchdogSpec)
    deepspeed: str | None = Field(None, description="profile name in stages/deepspeed/ or a JSON path")
    output: str
    profile: str | None = Field(None, description="speed profile applied on top (stages/profiles/), if any")
    source: str | None = Field(None, exclude=True)

    @property
    def hf_grid_pinpoints(self) -> list[list[int]]:
        """transformers reads pinpoints as (height, width): swap, keeping the order (ties go to the first)."""
        return [[h, w] for (w, h) in self.model.grid_pinpoints_wh]

    def content_hash(self) -> str:
        body = self.model_dump(mode="json", exclude={"source"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """`stage2` -> the packaged stages/stage2.yaml; a path is taken as is, or as the packaged file of that name."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return packaged_path(path)
    candidate = STAGES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise KitError(f"no recipe {name_or_path!r}: pass a YAML path or one of {sorted(p.stem for p in STAGES_DIR.glob('*.yaml'))}")


@dataclass(frozen=True)
class Override:
    """One `--set key.sub=value` from the command line, kept whole so errors can quote it."""
    key: str
    raw: str

    @property
    def text(self) -> str:
        return f"--set {self.key}={self.raw}"

    @property
    def value(self) -> Any:
        return _parse_value(self.raw)


def parse_overrides(items: list[str] | None) -> list[Override]:
    """`key.sub=value` strings -> Overrides; a malformed one is a command-line error."""
    parsed = []
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise KitError(f"command line: --set {item!r} must look like key.sub=value, e.g. --set training.max_steps=10")
        parsed.append(Override(key.strip(), raw))
    return parsed


def _parse_value(raw: str) -> Any:
    """YAML scalars, except that YAML 1.1's yes/no/on/off stay strings (save_strategy=no), and so does a
    lone `{placeholder}` (output={checkpoints}/x is text already: YAML cannot parse it)."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw  # e.g. "{checkpoints}/stage1": a path, not a YAML mapping
    if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
        return raw.strip()
    if braces_as_mapping(value):  # "{checkpoints}" on a command line is the placeholder, not a mapping
        return raw.strip()
    return value


def apply_overrides(body: dict, overrides: list[Override]) -> dict:
    for override in overrides:
        set_dotted(body, override.key, override.value, f"command line {override.text}")
    return body


def _origin(loc: str, overrides: list[Override]) -> Override | None:
    """The override that set `loc`, a key inside it, or (for a section-wide check) a key below it."""
    for override in reversed(overrides):
        key = override.key
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return override
    return None


def read_recipe_body(path: Path) -> dict:
    """The YAML mapping of a recipe file, or an error naming the file."""
    body = read_document(path, f"recipe file {path} does not exist") or {}
    if not isinstance(body, dict):
        raise KitError(f"{path}: a recipe is a YAML mapping of keys (name, init, data, ...), not a {type(body).__name__}")
    return body


def validate_recipe(body: dict, path: Path, overrides: list[Override] | None = None) -> Recipe:
    """Build the typed recipe; each error names its dotted key and whether the file or a --set caused it."""
    overrides = overrides or []
    try:
        return Recipe(**body, source=str(path))
    except ValidationError as err:
        locs = [".".join(map(str, e["loc"])) for e in err.errors()]
        from_cli = [_origin(loc, overrides) for loc in locs]
        if all(from_cli):
            where = f"command line: {', '.join(dict.fromkeys(o.text for o in from_cli))} does not fit recipe {path}"
        elif any(from_cli):
            where = f"invalid recipe {path} and command-line --set values"
        else:
            where = f"{path}: invalid recipe"

        def note(key: str) -> str:  # only worth saying when the file and the command line both erred
            origin = _origin(key, overrides) if any(from_cli) and not all(from_cli) else None
            if origin is None and not _origin(key, overrides):
                return _braces_line(path, key)
            return f"  [from the command line: {origin.text}]" if origin else ""

        raise config_error(err, str(path), Recipe, header=where, note=note) from None


def _braces_line(path: Path, key: str) -> str:
    """Where an unquoted `{placeholder}` sits in the recipe file, for the error line that names it."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    body = yaml.safe_load(text) or {}
    value = body
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    line = key_line(text, key) if braces_as_mapping(value) else None
    return f" ({path}, line {line})" if line else ""


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load, apply `key.sub=value` overrides (values parsed as YAML) and validate.

    Only yaml and pydantic are imported: the CLI calls this before torch, transformers or a torchrun
    re-launch, so a typo costs well under a second.
    """
    path = resolve_recipe_path(name_or_path)
    parsed = parse_overrides(overrides)
    body = apply_overrides(read_recipe_body(path), parsed)
    return validate_recipe(body, path, parsed)
