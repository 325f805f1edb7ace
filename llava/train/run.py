"""Train one stage from a recipe: preflight, build, Trainer, atomic HF-native output + manifest."""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from llava.data.collator import Collator, SkipLedger
from llava.data.dataset import ConversationDataset, load_records
from llava.data.images import image_pipeline
from llava.errors import KitError
from llava.manifest import write_manifest
from llava.model.build import BuiltModel, build_model
from llava.model.checkpoint import save_checkpoint
from llava.model.tunable import TunableParts
from llava.paths import VolumeLayout
from llava.recipe import Recipe
from llava.train.deepspeed_profiles import load_deepspeed_config
from llava.train.distributed import prepare_process_group, world_size
from llava.train.preflight import preflight
from llava.train.trainer import LlavaTrainer

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    output: Path
    train_loss: float
    global_steps: int
    skipped: int


def grad_accum_for_world(recipe: Recipe, world: int) -> int:
    """Keep the recipe's global batch on another number of GPUs by rescaling accumulation."""
    spec = recipe.training
    if not spec.keep_global_batch or world == spec.num_gpus:
        return spec.grad_accum
    total = spec.grad_accum * spec.num_gpus
    if total % world:
        raise KitError(f"{recipe.source}: global batch {spec.global_batch} cannot be kept on {world} processes "
                       f"(grad_accum x num_gpus = {total} is not divisible); set training.keep_global_batch=false")
    return total // world


def training_arguments(recipe: Recipe, run_dir: Path, accelerator_config: dict) -> TrainingArguments:
    spec = recipe.training
    cuda = torch.cuda.is_available()
    reporters = [r for r in spec.report_to if importlib.util.find_spec(r) is not None]
    return TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        per_device_train_batch_size=spec.per_device_batch,
        gradient_accumulation_steps=grad_accum_for_world(recipe, world_size()),
        num_train_epochs=spec.epochs,
        max_steps=spec.max_steps,
        learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay,
        warmup_steps=spec.warmup_ratio,  # transformers 5 takes the ratio here
        lr_scheduler_type=spec.scheduler,
        max_grad_norm=spec.max_grad_norm,
        optim=spec.optim,
        bf16=spec.bf16 and cuda,
        tf32=spec.tf32 and cuda,
        gradient_checkpointing=spec.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=spec.logging_steps,
        save_strategy=spec.save_strategy,
        save_steps=spec.save_steps,
        save_total_limit=spec.save_total_limit,
        dataloader_num_workers=spec.dataloader_num_workers,
        dataloader_drop_last=spec.dataloader_drop_last,
        seed=spec.seed,
        data_seed=spec.seed,
        report_to=reporters,
        remove_unused_columns=False,
        deepspeed=load_deepspeed_config(recipe.deepspeed),
        use_cpu=not cuda,
        ddp_backend="gloo" if accelerator_config else None,
        accelerator_config=accelerator_config or None,
        disable_tqdm=False,
    )


def build_dataset(recipe: Recipe, built: BuiltModel, inputs, run_dir: Path) -> tuple[ConversationDataset, Collator]:
    pipeline = image_pipeline(recipe.model.image_mode, built.processor)
    dataset = ConversationDataset(
        load_records(inputs.data_file), inputs.image_folder, built.tokenizer, pipeline,
        template=recipe.data.template, system_prompt=recipe.data.system_prompt,
        label_mode=recipe.data.label_mode, max_length=recipe.training.model_max_length)
    ledger = SkipLedger(run_dir / "skips.jsonl", len(dataset), recipe.data.max_skip_fraction)
    return dataset, Collator(built.tokenizer.pad_token_id, pipeline.batch_key, ledger)


def train_stage(recipe: Recipe, layout: VolumeLayout | None = None, run_dir: Path | None = None) -> StageResult:
    layout = layout or VolumeLayout.from_env()
    started = time.time()
    inputs = preflight(recipe, layout)
    run_dir = Path(run_dir or layout.runs / recipe.name)
    accelerator_config = prepare_process_group(recipe.deepspeed is not None)
    args = training_arguments(recipe, run_dir, accelerator_config)
    built = build_model(recipe, layout)
    counts = TunableParts(tuple(recipe.tunable_parts)).apply(built.model)
    log.info("trainable %d / frozen %d parameters", counts["trainable"], counts["frozen"])
    dataset, collator = build_dataset(recipe, built, inputs, run_dir)
    megabatch = world_size() * args.gradient_accumulation_steps * args.per_device_train_batch_size
    trainer = LlavaTrainer(
        model=built.model, args=args, train_dataset=dataset, data_collator=collator,
        lengths=dataset.modality_lengths() if recipe.training.group_by_modality_length else None,
        megabatch=megabatch, vision_tower_lr=recipe.training.vision_tower_lr)
    resume = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    result = trainer.train(resume_from_checkpoint=resume)
    output = save_checkpoint(built, layout.resolve(recipe.output), write_weights=trainer.save_model,
                             is_main=trainer.is_world_process_zero())
    skipped = len(collator.ledger.seen_ids())
    if trainer.is_world_process_zero():
        (run_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        write_manifest(output, "checkpoint", inputs=inputs.manifest_hashes(), recipe_hash=recipe.content_hash(),
                       started=started, metrics={"train_loss": result.training_loss,
                                                 "global_steps": result.global_step, "skipped_samples": skipped},
                       extra={"recipe": recipe.model_dump(mode="json"), "world_size": world_size()})
    return StageResult(output, result.training_loss, result.global_step, skipped)
