"""Resume a stage on another number of processes with the recipe's global batch.

Three things make a resumed run on M processes continue the one saved by N:
- the sample order is global (llava.data.sampler, accelerate's BatchSamplerShard deals each optimizer
  step's window of `global batch` positions to the ranks), so the same samples form each step;
- gradient accumulation is rescaled so per_device_batch x accumulation x world stays the recipe's
  global batch; a world size that cannot keep it is refused, naming the nearest sizes that can;
- ZeRO shards are re-partitioned by DeepSpeed's universal checkpoint: `ds_to_universal` turns the
  saved shards into per-parameter files, and `checkpoint.load_universal` makes the engine load them
  on any world size (llava.train.universal_resume).
Plain DDP keeps full optimizer state on every rank: nothing to convert.
"""

from __future__ import annotations

from llava.errors import KitError


def world_sizes_for(total: int) -> list[int]:
    """World sizes that keep `total` = grad_accum x num_gpus micro-batches per optimizer step."""
    return [n for n in range(1, total + 1) if total % n == 0]


def nearest_world_sizes(total: int, world: int) -> list[int]:
    """The largest working size below `world` and the smallest above it (those that exist)."""
    fits = world_sizes_for(total)
    below = [n for n in fits if n < world]
    above = [n for n in fits if n > world]
    return ([below[-1]] if below else []) + ([above[0]] if above else [])


def grad_accum_for(spec, world: int, source: str) -> int:
    """Accumulation steps on `world` processes that keep the recipe's global batch (training spec)."""
    if not spec.keep_global_batch or world == spec.num_gpus:
        return spec.grad_accum
    total = spec.grad_accum * spec.num_gpus
    if total % world:
        near = " or ".join(str(n) for n in nearest_world_sizes(total, world))
        raise KitError(f"{source}: global batch {spec.global_batch} (per_device_batch {spec.per_device_batch} x "
                       f"grad_accum {spec.grad_accum} x num_gpus {spec.num_gpus}) cannot be kept on {world} "
                       f"processes: {total} micro-batches per step do not split evenly. Run on {near} processes "
                       f"(any of {world_sizes_for(total)} works), or set training.keep_global_batch=false to "
                       "train another global batch")
    return total // world


def resize_conversions(saved_world: int, world: int, saved_accum: int | None, accum: int,
                       zero_stage: int | None) -> list[str]:
    """What a resume from `saved_world` to `world` processes changes, one line each (for the marker)."""
    if saved_world == world:
        return []
    done = [f"world size {saved_world} -> {world}"]
    if saved_accum is not None and saved_accum != accum:
        done.append(f"gradient accumulation {saved_accum} -> {accum} (same global batch)")
    if zero_stage:
        done.append(f"ZeRO-{zero_stage} optimizer and parameter shards re-partitioned {saved_world} -> {world} "
                    "(DeepSpeed universal checkpoint: ds_to_universal, checkpoint.load_universal)")
    done.append("per-rank RNG state not restored (saved for other ranks); the sample order does not use it")
    return done
