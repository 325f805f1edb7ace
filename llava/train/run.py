"""Train one stage from a recipe: preflight, build, Trainer with resumable state, atomic HF-native output + manifest."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import TrainOutput

from llava.data.collator import Collator, SkipLedger, placeholder_image_row
from llava.data.dataset import ConversationDataset
from llava.data.image_digests import DIGESTS_NAME, read_image_digests
from llava.data.images import image_pipeline
from llava.durable import write_text
from llava.errors import KitError
from llava.manifest import read_manifest, sha256_file, write_manifest
from llava.model.build import BuiltModel, build_model
from llava.model.checkpoint import save_checkpoint, write_support_files
from llava.model.tunable import TunableParts
from llava.paths import VolumeLayout
from llava.recipe import Recipe
from llava.train.deepspeed_profiles import load_deepspeed_config
from llava.train.distributed import prepare_process_group, require_shared_folder, world_size
from llava.train.preflight import preflight
from llava.train.reporting import announce_reporters, choose_reporters, reporter_callbacks
from llava.train.console import StageProgress, log_file, print_header, stage_console
from llava.train.checkpointing import Checkpoint, ResumableCheckpoints, latest_checkpoint, remove_incomplete
from llava.train.events import EventLog
from llava.train.forward import forward_options
from llava.train.resize import grad_accum_for
from llava.train.run_folder import claim_run_folder
from llava.train.universal_resume import convert_to_universal, converted_folder, saved_tag
from llava.train.signals import StopRequests, TrainingStopped
from llava.train.step_control import AlreadyFinished, StepControl, StopAtMaxSteps, agree_on_stop
from llava.train.trainer import LlavaTrainer
from llava.train.watchdog import StepWatchdog, step_samples

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    output: Path
    train_loss: float
    global_steps: int
    skipped: int


def grad_accum_for_world(recipe: Recipe, world: int) -> int:
    """Keep the recipe's global batch on another number of GPUs by rescaling accumulation."""
    return grad_accum_for(recipe.training, world, str(recipe.source))


def training_arguments(recipe: Recipe, run_dir: Path, accelerator_config: dict) -> TrainingArguments:
    spec = recipe.training
    cuda = torch.cuda.is_available()
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
        # Plain DDP must accept parameters without a gradient: the vision tower's post_layernorm is never
        # on the loss path (features come from a hidden layer before it). transformers turns the search
        # off under gradient checkpointing and DDP then fails at the second step; with use_reentrant=False
        # the two work together.
        ddp_find_unused_parameters=True,
        logging_steps=spec.logging_steps,
        save_strategy=spec.save_strategy,
        save_steps=spec.save_steps,
        save_total_limit=spec.save_total_limit,
        dataloader_num_workers=spec.dataloader_num_workers,
        dataloader_drop_last=spec.dataloader_drop_last,
        seed=spec.seed,
        data_seed=spec.seed,
        report_to=choose_reporters(spec.report_to, run_dir).report_to,  # TensorBoard: reporter_callbacks
        remove_unused_columns=False,
        deepspeed=load_deepspeed_config(recipe.deepspeed),
        use_cpu=not cuda,
        ddp_backend="gloo" if accelerator_config else None,
        ddp_timeout=recipe.watchdog.collective_timeout_s,
        accelerator_config=accelerator_config or None,
        disable_tqdm=False,
    )


def build_dataset(recipe: Recipe, built: BuiltModel, inputs, run_dir: Path) -> tuple[ConversationDataset, Collator]:
    pipeline = image_pipeline(recipe.model.image_mode, built.processor)
    dataset = ConversationDataset(
        inputs.records, inputs.image_folder, built.tokenizer, pipeline,
        template=recipe.data.template, system_prompt=recipe.data.system_prompt,
        label_mode=recipe.data.label_mode, max_length=recipe.training.model_max_length,
        verified_images=verified_images(recipe, inputs))
    ledger = SkipLedger(run_dir / "skips.jsonl", len(dataset), recipe.data.max_skip_fraction)
    placeholder = placeholder_image_row(pipeline, built.processor.image_token_id)
    return dataset, Collator(built.tokenizer.pad_token_id, pipeline.batch_key, ledger, placeholder)


def verified_images(recipe: Recipe, inputs):
    """The image digests `prepare verify` wrote (training skips a sample whose image changed since), or None."""
    if not recipe.data.require_manifest:
        return None
    folder = inputs.data_file.parent  # only digests the manifest lists (and preflight re-hashed) count
    stamps = read_image_digests(folder) if DIGESTS_NAME in read_manifest(folder).get("files", {}) else None
    if stamps is None:
        log.warning("%s/manifest.json lists no image digests (verified by an older kit): images changed since "
                    "are not noticed; run `llava-kit prepare verify %s` again", folder, folder)
    return stamps


def fingerprint(recipe: Recipe, inputs) -> dict:
    """What a resumable checkpoint must match to be resumed by this run (stored in its marker)."""
    data = inputs.manifest_hashes().get("data") or sha256_file(inputs.data_file)  # data.require_manifest=false
    ds_config = load_deepspeed_config(recipe.deepspeed) or {}
    return {"recipe_hash": recipe.content_hash(), "data": data, "world_size": world_size(),
            "grad_accum": grad_accum_for_world(recipe, world_size()), "deepspeed": recipe.deepspeed,
            "zero_stage": ds_config.get("zero_optimization", {}).get("stage") if ds_config else None}


def _resume_point(trainer: LlavaTrainer, store: ResumableCheckpoints, ledger: SkipLedger,
                  events: EventLog) -> Checkpoint | None:
    """Main process drops unmarked leftovers (and a stale skip ledger on a fresh start); all ranks then agree."""
    require_shared_folder(store.trainer_dir, trainer.is_world_process_zero(), trainer.args.device)
    if trainer.is_world_process_zero():
        removed = remove_incomplete(store.trainer_dir)
        if removed:
            events.emit("cleanup", f"removed incomplete checkpoint folders {removed} in {store.trainer_dir}",
                        removed=removed)
        if latest_checkpoint(store.trainer_dir) is None:
            ledger.reset()
    trainer.accelerator.wait_for_everyone()
    resume = store.resume_point()
    if resume is not None:
        events.emit("resume", f"resuming from {resume.path} (step {resume.step}, saved {resume.marker.get('created')})",
                    step=resume.step, path=str(resume.path))
    return resume


def _load_path(trainer: LlavaTrainer, store: ResumableCheckpoints, resume: Checkpoint | None,
               events: EventLog) -> str | None:
    """The folder transformers resumes from: the checkpoint, or its universal copy when ZeRO shards
    were saved by another number of processes (llava.train.universal_resume)."""
    if resume is None:
        return None
    saved_world = resume.marker.get("fingerprint", {}).get("world_size")
    if not trainer.is_deepspeed_enabled or saved_world in (None, world_size()) or saved_tag(resume.path) is None:
        return str(resume.path)
    folder = converted_folder(store.trainer_dir, resume.path)
    if trainer.is_world_process_zero():
        started = time.monotonic()
        convert_to_universal(resume.path, store.trainer_dir, saved_world)
        events.emit("convert", f"converted {resume.name} ({saved_world} processes) to DeepSpeed's universal "
                    f"checkpoint in {folder} ({time.monotonic() - started:.1f} s)", step=resume.step, path=str(folder))
    trainer.accelerator.wait_for_everyone()
    # the engine is built inside train(): from this config it loads the per-parameter files for this world size
    trainer.accelerator.state.deepspeed_plugin.deepspeed_config.setdefault("checkpoint", {})["load_universal"] = True
    trainer.universal_resume = True
    return str(folder)


def _train(trainer: LlavaTrainer, load_path: str | None, ledger: SkipLedger, events: EventLog,
           watchdog: StepWatchdog):
    try:
        return trainer.train(resume_from_checkpoint=load_path)
    except AlreadyFinished:  # resumed at max_steps: the checkpoint's weights are loaded, nothing to train
        return TrainOutput(trainer.state.global_step, 0.0, {})
    except KitError:
        if ledger.over_budget():  # raised in a dataloader worker, the message arrives wrapped in its traceback
            events.emit("abort", f"too many unusable samples: see {ledger.path}", skipped=len(ledger.seen_ids()))
            raise KitError(ledger.budget_message()) from None
        raise
    finally:
        watchdog.stop()
        _close_progress_bars(trainer)


def _close_progress_bars(trainer: LlavaTrainer) -> None:
    """transformers closes its bar only at a normal train end; an abort would leave it to redraw later."""
    for callback in trainer.callback_handler.callbacks:
        bar = getattr(callback, "training_bar", None)
        if bar is not None:
            bar.close()
            callback.training_bar = None


def _stage_loss(store: ResumableCheckpoints, result, global_step: int) -> float:
    """Mean per-step loss of the whole stage, also when this run resumed half way."""
    if global_step <= 0:
        return result.training_loss
    trained_now = global_step - store.base_step
    return (store.base_loss_sum + result.training_loss * trained_now) / global_step


def _stopped_message(recipe: Recipe, stop: StopRequests, store: ResumableCheckpoints, step: int) -> str:
    saved = f"resumable state is in {store.latest.path}" if store.latest else "no resumable state exists yet"
    return (f"{recipe.name} stopped by {stop.signal_name or 'a stop request'} after step {step}; {saved}. "
            "Run the same command again to resume.")


def train_stage(recipe: Recipe, layout: VolumeLayout | None = None, run_dir: Path | None = None, *,
                allow_recipe_change: bool = False) -> StageResult:
    """Train one stage, resuming from the newest complete checkpoint in run_dir/trainer when there is one.

    A checkpoint saved under other recipe values is resumed only with `allow_recipe_change`
    (llava.train.recipe_change says why and what it does to the LR schedule). Library chatter goes to
    run_dir/train.log (llava.train.console).
    """
    layout = layout or VolumeLayout.from_env()
    run_dir = claim_run_folder(Path(run_dir or layout.runs / recipe.name))
    with stage_console(log_file(run_dir)) as log_path:
        print_header(f"{recipe.name} ({recipe.source})", layout.resolve(recipe.output), log_path)
        return _train_stage(recipe, layout, run_dir, allow_recipe_change)


def _train_stage(recipe: Recipe, layout: VolumeLayout, run_dir: Path, allow_recipe_change: bool) -> StageResult:
    started = time.time()
    inputs = preflight(recipe, layout)
    accelerator_config = prepare_process_group(recipe.deepspeed is not None)
    with StopRequests(run_dir) as stop:
        # Built before TrainingArguments: with a ZeRO-3 config active, from_pretrained would load
        # partitioned (empty) tensors that cannot be copied into the assembled model.
        built = build_model(recipe, layout)
        args = training_arguments(recipe, run_dir, accelerator_config)
        reporters = choose_reporters(recipe.training.report_to, run_dir)
        counts = TunableParts(tuple(recipe.tunable_parts)).apply(built.model)
        log.info("trainable %d / frozen %d parameters", counts["trainable"], counts["frozen"])
        dataset, collator = build_dataset(recipe, built, inputs, run_dir)
        megabatch = world_size() * args.gradient_accumulation_steps * args.per_device_train_batch_size
        trainer = LlavaTrainer(
            model=built.model, args=args, train_dataset=dataset, data_collator=collator,
            lengths=dataset.modality_lengths() if recipe.training.group_by_modality_length else None,
            megabatch=megabatch, vision_tower_lr=recipe.training.vision_tower_lr,
            callbacks=reporter_callbacks(reporters))
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StageProgress)
        trainer.forward_options = forward_options(recipe, built.model)
        events = EventLog(run_dir / "events.jsonl", trainer.is_world_process_zero())
        announce_reporters(reporters, events, recipe.source)
        store = ResumableCheckpoints(args.output_dir, recipe.checkpointing.keep_last, fingerprint(recipe, inputs),
                                     events, stop, support_files=lambda folder: write_support_files(folder, built),
                                     recipe=recipe.model_dump(mode="json"), allow_recipe_change=allow_recipe_change)
        trainer.checkpoints = store
        trainer.add_callback(StepControl(recipe.checkpointing.resume_every_steps, store, stop, events))
        watchdog = StepWatchdog(recipe.watchdog, run_dir, args.process_index, step_samples(trainer, dataset))
        trainer.add_callback(watchdog)
        trainer.add_callback(StopAtMaxSteps())
        resume = _resume_point(trainer, store, collator.ledger, events)
        if agree_on_stop(stop, args.device):  # signalled while the model loaded: nothing new to save
            raise TrainingStopped(_stopped_message(recipe, stop, store, resume.step if resume else 0))
        result = _train(trainer, _load_path(trainer, store, resume, events), collator.ledger, events, watchdog)
        step = trainer.state.global_step
        if agree_on_stop(stop, args.device) and step < trainer.state.max_steps:
            events.emit("stop", f"stopped by {stop.signal_name} after step {step}", step=step, signal=stop.signal_name)
            raise TrainingStopped(_stopped_message(recipe, stop, store, step))
        output = save_checkpoint(built, layout.resolve(recipe.output), write_weights=trainer.save_model,
                                 is_main=trainer.is_world_process_zero())
    train_loss = _stage_loss(store, result, step)
    skipped = len(collator.ledger.seen_ids())
    if resume is not None and resume.step == step:
        events.emit("already_finished", f"{recipe.name} had already finished: {step} steps, mean loss {train_loss:.4f} "
                    f"(recorded in {resume.path}); nothing was trained again", step=step, train_loss=train_loss)
    if trainer.is_world_process_zero():
        write_text(run_dir / "log_history.json", json.dumps(trainer.state.log_history, indent=1))
        write_manifest(output, "checkpoint", inputs=inputs.manifest_hashes(), recipe_hash=recipe.content_hash(),
                       started=started, metrics={"train_loss": train_loss, "global_steps": step,
                                                 "skipped_samples": skipped},
                       extra={"stage": recipe.name, "recipe": recipe.model_dump(mode="json"),
                              "loss_history": [[e["step"], e["loss"]] for e in trainer.state.log_history
                                               if "loss" in e and "step" in e],
                               "world_size": world_size(), "device": args.device.type,
                               "resumed_from": resume.name if resume else None,
                               "resizes": store.resizes,
                              "skips_file": str(collator.ledger.path) if skipped else None})
        events.emit("done", f"{recipe.name} finished at step {step} -> {output}", step=step, output=str(output))
    return StageResult(output, train_loss, step, skipped)
