"""Speed profiles are recipe data: seed is the seed's DeepSpeed config, fast keeps every global batch."""

from __future__ import annotations

import json

import pytest

from llava.profiles import apply_profile, load_profile
from llava.errors import KitError
from llava.recipe import STAGES_DIR, load_recipe
from llava.train.deepspeed_profiles import load_deepspeed_config

STAGES = ("stage1", "stage1_5", "stage2")
RECIPES = [STAGES_DIR / f"{s}.yaml" for s in STAGES] + [STAGES_DIR / "smoke" / f"{s}.yaml" for s in STAGES]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_profiles_keep_the_global_batch(path):
    recipe = load_recipe(path)
    for name in ("seed", "fast"):
        profiled = apply_profile(recipe, name)
        assert profiled.training.global_batch == recipe.training.global_batch
        assert profiled.profile == name and profiled.name == recipe.name


@pytest.mark.parametrize("stage", STAGES)
def test_seed_profile_is_the_seed_zero3_offload_config(stage):
    recipe = apply_profile(load_recipe(stage), "seed")
    seed_file = json.loads((STAGES_DIR / "deepspeed" / "seed.json").read_text())
    assert load_deepspeed_config(recipe.deepspeed) == seed_file
    zero = seed_file["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "cpu"
    spec = recipe.training
    assert (spec.optim, spec.loss_impl, spec.loss_average, spec.packing) == ("adamw_torch", "model", "micro_batch", False)
    assert recipe.model_dump(exclude={"profile"}) == load_recipe(stage).model_dump(exclude={"profile"})


def test_fast_profile_settings():
    fast = {s: apply_profile(load_recipe(s), "fast") for s in STAGES}
    zero = load_deepspeed_config("fast")["zero_optimization"]
    assert zero["stage"] == 2 and "offload_optimizer" not in zero and "offload_param" not in zero
    for recipe in fast.values():
        assert recipe.deepspeed == "fast" and recipe.training.optim == "adamw_torch_fused"
        assert recipe.model.attn_implementation == "flash_attention_2" and recipe.training.loss_impl == "liger"
    assert fast["stage1"].training.per_device_batch == 8 and fast["stage1"].training.loss_average == "micro_batch"
    for stage in ("stage1_5", "stage2"):  # the seed's micro-batch is one sample: per-sample mean keeps its loss
        spec = fast[stage].training
        assert (spec.per_device_batch, spec.packing, spec.loss_average) == (4, True, "per_sample")
    assert fast["stage2"].training.grad_accum == 4 and fast["stage1_5"].training.grad_accum == 4


def test_profile_applies_after_set_overrides():
    recipe = apply_profile(load_recipe("stage2", ["training.grad_accum=8", "training.num_gpus=1"]), "fast")
    assert (recipe.training.per_device_batch, recipe.training.grad_accum) == (4, 2)


def test_profile_batch_that_does_not_divide_is_refused(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text("all: {training.per_device_batch: 3}\n")
    with pytest.raises(KitError) as err:
        apply_profile(load_recipe("stage2"), path)
    assert "odd.yaml" in str(err.value) and "does not divide the 16 samples" in str(err.value)


def test_profile_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(KitError, match=r"known profiles: \['fast', 'seed'\]"):
        load_profile("turbo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("al: {deepspeed: fast}\n")
    with pytest.raises(KitError, match="bad.yaml.*\n.*al: unknown key"):
        load_profile(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("all: {training.loss_impl: fused}\n")
    with pytest.raises(KitError, match=r"typo.yaml on .*stage1.yaml(.|\n)*training.loss_impl"):
        apply_profile(load_recipe("stage1"), typo)


def test_per_sample_loss_needs_our_loss():
    with pytest.raises(KitError, match="loss_average per_sample needs loss_impl selected or liger"):
        load_recipe("stage2", ["training.loss_average=per_sample"])


def test_train_command_takes_a_profile():
    from llava.cli import build_parser
    args = build_parser().parse_args(["train", "stage2", "--profile", "fast", "--set", "training.max_steps=3"])
    assert args.profile == "fast" and args.overrides == ["training.max_steps=3"]
    bench = build_parser().parse_args(["bench", "stage1", "--size", "tiny", "--profile", "seed", "--steps", "2", "--json"])
    assert (bench.stage, bench.size, bench.profile, bench.steps, bench.json) == ("stage1", "tiny", "seed", 2, True)
