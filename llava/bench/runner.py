"""`llava-kit bench`: N training steps of one stage on synthetic data, through the training code.

The model (random weights), the data (stage_data.yaml) and the step timing are the bench's; the
recipe, profile, TrainingArguments, LlavaTrainer, collator and forward are the ones `llava-kit train`
uses. The first step is not timed (allocation, DeepSpeed and kernel warm-up).
"""

from __future__ import annotations

import datetime
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llava.bench.flops import BatchCounts, FlopModel, device_peak
from llava.bench.loader import anyres_rates, loader_rates
from llava.profiles import apply_profile
from llava.bench.samples import StageDataset, draw_specs
from llava.bench.shapes import BenchModel, build_bench_model
from llava.errors import KitError
from llava.recipe import STAGES_DIR, Recipe, load_recipe

STAGES = ("stage1", "stage1_5", "stage2")
log = logging.getLogger(__name__)
BENCH_OVERRIDES = ["training.save_strategy=no", "training.report_to=[]", "training.logging_steps=1"]


def bench_recipe(stage: str, size: str, profile: str | None, overrides: list[str], steps: int) -> Recipe:
    """stages/<stage>.yaml (real) or stages/smoke/<stage>.yaml (tiny), `--set` overrides, then the profile."""
    if stage not in STAGES:
        raise KitError(f"unknown stage {stage!r}: use one of {list(STAGES)}")
    folder = STAGES_DIR if size == "real" else STAGES_DIR / "smoke"
    recipe = load_recipe(folder / f"{stage}.yaml", [*overrides, f"training.max_steps={max(steps, 1)}", *BENCH_OVERRIDES])
    return apply_profile(recipe, profile)


class StepClock(TrainerCallback):
    """Wall time at the end of every optimizer step (after a CUDA sync), and the process RSS."""

    def __init__(self):
        import psutil
        self.process = psutil.Process()
        self.begin: float | None = None
        self.ends: list[float] = []
        self.rss: list[int] = [self.process.memory_info().rss]

    def on_step_begin(self, args, state, control, **kwargs):
        if self.begin is None:
            self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        self.rss.append(self.process.memory_info().rss)


def batch_counts(batch: dict, image_id: int, pinpoints: list, tile: int, packed: bool) -> BatchCounts:
    """Tokens, tiles and padding of one collated micro-batch, as the model computes it."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(dim=1)
    images = int(((batch["input_ids"] == image_id) & mask).sum())
    if "square_pixel_values" in batch:
        tiles = batch["square_pixel_values"].shape[0]
    elif "image_sizes" in batch:
        tiles = sum(image_size_to_num_patches(size, pinpoints, tile) for size in batch["image_sizes"].tolist())
    else:
        tiles = 0
    return BatchCounts(samples=mask.shape[0], text_tokens=int(lengths.sum()) - images, image_tokens=images,
                       squared_lengths=int((lengths ** 2).sum()), supervised=int((batch["labels"][:, 1:] != -100).sum()),
                       tiles=tiles, padded_positions=0 if packed else int(mask.numel() - lengths.sum()))


def make_trainer_class():
    from llava.train.trainer import LlavaTrainer

    class BenchTrainer(LlavaTrainer):
        """LlavaTrainer that records what each micro-batch fed the model, tagged with its step."""

        def __init__(self, *args, count_batch=None, **kwargs):
            self.count_batch = count_batch
            self.counted: list[tuple[int, BatchCounts]] = []
            super().__init__(*args, **kwargs)

        def training_step(self, model, inputs, *args, **kwargs):
            self.counted.append((self.state.global_step, self.count_batch(inputs)))
            return super().training_step(model, inputs, *args, **kwargs)

    return BenchTrainer


def build_data(recipe: Recipe, bench: BenchModel, count: int) -> StageDataset:
    from llava.data.images import image_pipeline
    pipeline = image_pipeline(recipe.model.image_mode, bench.processor)
    tile = bench.model.config.vision_config.image_size
    return StageDataset(draw_specs(recipe.name, count, recipe.training.seed, tile), bench.tokens, pipeline,
                        template=recipe.data.template, label_mode=recipe.data.label_mode,
                        image_mode=recipe.model.image_mode, max_length=recipe.training.model_max_length,
                        seed=recipe.training.seed)


def train_steps(recipe: Recipe, bench: BenchModel, dataset: StageDataset, accelerator_config: dict, run_dir: Path):
    """The `llava-kit train` wiring (run.py) around the bench model and data; returns (trainer, clock)."""
    from llava.data.collator import Collator
    from llava.train.distributed import world_size
    from llava.train.forward import forward_options
    from llava.train.run import training_arguments
    args = training_arguments(recipe, run_dir, accelerator_config)
    megabatch = world_size() * args.gradient_accumulation_steps * args.per_device_train_batch_size
    options = forward_options(recipe, bench.model)
    config = bench.model.config
    clock = StepClock()
    trainer = make_trainer_class()(
        model=bench.model, args=args, train_dataset=dataset,
        data_collator=Collator(bench.tokens.pad, dataset.pipeline.batch_key),
        lengths=dataset.modality_lengths() if recipe.training.group_by_modality_length else None,
        megabatch=megabatch, vision_tower_lr=recipe.training.vision_tower_lr, callbacks=[clock],
        count_batch=lambda b: batch_counts(b, config.image_token_index, config.image_grid_pinpoints,
                                           config.vision_config.image_size, options.packing))
    trainer.forward_options = options
    trainer.train()
    return trainer, clock


def run_bench(stage: str, *, size: str = "tiny", profile: str | None = "fast", steps: int = 5,
              overrides: list[str] | None = None, loader_seconds: float = 2.0) -> dict:
    """Build, measure the data pipeline, train `steps` steps (0: build and describe only), summarise."""
    from llava.model.tunable import TunableParts
    from llava.train.distributed import prepare_process_group, world_size
    recipe = bench_recipe(stage, size, profile, list(overrides or []), steps)
    if size == "real" and steps and not torch.cuda.is_available():
        log.warning("real-size training steps on CPU take minutes each; --steps 0 only builds and describes")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    accelerator_config = prepare_process_group(recipe.deepspeed is not None)
    bench = build_bench_model(recipe, size)  # before TrainingArguments: no ZeRO-3 init, equal weights per profile
    TunableParts(tuple(recipe.tunable_parts)).apply(bench.model)
    from llava.train.run import grad_accum_for_world
    global_batch = recipe.training.per_device_batch * grad_accum_for_world(recipe, world_size()) * world_size()
    dataset = build_data(recipe, bench, max(steps, 1) * global_batch)
    loader = loader_rates(dataset, loader_seconds)
    if recipe.model.image_mode == "anyres":
        loader["anyres"] = anyres_rates(dataset, loader_seconds)
    summary = {**describe(recipe, bench, size, global_batch, loader), "data": dataset.summary()}
    if steps == 0:
        return summary
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-{stage}-"))
    try:
        trainer, clock = train_steps(recipe, bench, dataset, accelerator_config, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {**summary, **measurements(trainer, clock, FlopModel.from_model(bench.model, recipe.tunable_parts), summary)}


def describe(recipe: Recipe, bench: BenchModel, size: str, global_batch: int, loader: dict) -> dict:
    import importlib.util

    from llava.train.forward import packs_varlen
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name, peak = device_peak(device)
    liger = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    return {
        "stage": recipe.name, "size": size, "profile": recipe.profile, "device": name, "peak_flops": peak,
        "date": datetime.date.today().isoformat(), "parameters": bench.parameter_counts(),
        "deepspeed": recipe.deepspeed, "optim": recipe.training.optim,
        "attn_implementation": bench.model.config._attn_implementation,
        "loss_impl": recipe.training.loss_impl, "loss_average": recipe.training.loss_average,
        "liger_kernel": liger,
        "loss_impl_effective": "selected" if recipe.training.loss_impl == "liger" and not liger else recipe.training.loss_impl,
        "packing": recipe.training.packing and packs_varlen(bench.model),
        "gradient_checkpointing": recipe.training.gradient_checkpointing,
        "per_device_batch": recipe.training.per_device_batch, "global_batch": global_batch,
        "dataloader_workers": recipe.training.dataloader_num_workers, "dataloader": loader,
    }


def measurements(trainer, clock: StepClock, flop_model: FlopModel, summary: dict) -> dict:
    steps = len(clock.ends)
    first = 1 if steps >= 2 else 0  # step index whose micro-batches are the first timed ones
    start = clock.ends[0] if steps >= 2 else clock.begin
    seconds = clock.ends[-1] - start
    counts = sum((c for step, c in trainer.counted if first <= step < steps), BatchCounts())
    flops = flop_model.flops(counts)
    cuda = torch.cuda.is_available()
    peak_memory = torch.cuda.max_memory_allocated() if cuda else max(clock.rss)
    per_core = summary["dataloader"]["samples_per_s_per_core"]
    samples_per_s = counts.samples / seconds
    workers = max(1, summary["dataloader_workers"])
    return {
        "steps": steps, "timed_steps": steps - first, "seconds": seconds, "samples": counts.samples,
        "samples_per_s": samples_per_s, "text_tokens": counts.text_tokens, "image_tokens": counts.image_tokens,
        "tokens": counts.tokens, "tokens_per_s": counts.tokens / seconds,
        "padding_fraction": counts.padded_positions / max(1, counts.padded_positions + counts.tokens),
        "flops_per_sample": flops / max(1, counts.samples), "model_flops_per_s": flops / seconds,
        "mfu": flops / seconds / summary["peak_flops"] if summary["peak_flops"] else None,
        "peak_memory_bytes": int(peak_memory),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "max RSS (psutil)",
        "loader_headroom": per_core * workers / samples_per_s if per_core else None,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        **optimizer_facts(trainer),
    }


def optimizer_facts(trainer) -> dict:
    """Which optimizer really stepped, and where DeepSpeed kept its state (accelerate may swap the class)."""
    engine = trainer.model_wrapped
    basic = getattr(engine, "basic_optimizer", None) or getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    zero = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
    offload = bool(engine.zero_cpu_offload()) if hasattr(engine, "zero_cpu_offload") else False
    return {"optimizer_class": type(basic).__name__, "zero_stage": zero, "optimizer_offload": offload}
