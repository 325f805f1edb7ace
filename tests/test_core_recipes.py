"""The recipe files hold the seed's values (recipe-seed.md), and bad recipes fail before any model is built."""

from __future__ import annotations

import pytest

from llava.errors import KitError
from llava.recipe import load_recipe

SEED_1_5_PINPOINTS_WH = [(384, 768), (768, 384), (768, 768), (1152, 384), (384, 1152)]


def seed_grid(first: tuple[int, int], last: tuple[int, int], side: int = 384) -> list[tuple[int, int]]:
    """LLaVA's "(1x1),...,(6x6)" expansion: i outer, j inner, times the tile side."""
    return [(i * side, j * side) for i in range(first[0], last[0] + 1) for j in range(first[1], last[1] + 1)]


# (stage, dotted attribute, seed value) straight from the seed's three scripts and zero3.json
SEED_VALUES = [
    ("stage1", "data.template", "plain"),
    ("stage1", "tunable_parts", ["mm_mlp_adapter"]),
    ("stage1", "training.learning_rate", 1e-3),
    ("stage1", "training.per_device_batch", 8),
    ("stage1", "training.grad_accum", 4),
    ("stage1", "training.num_gpus", 2),
    ("stage1", "training.model_max_length", 8192),
    ("stage1", "training.save_strategy", "no"),
    ("stage1", "training.logging_steps", 10),
    ("stage1", "training.group_by_modality_length", False),
    ("stage1", "training.dataloader_num_workers", 16),
    ("stage1", "model.image_mode", "square"),
    ("stage1", "model.patch_merge", "flat"),
    ("stage1", "model.attn_implementation", "sdpa"),
    ("stage1_5", "data.template", "qwen_1_5"),
    ("stage1_5", "tunable_parts", ["mm_vision_tower", "mm_mlp_adapter", "mm_language_model"]),
    ("stage1_5", "training.learning_rate", 1e-5),
    ("stage1_5", "training.vision_tower_lr", 2e-6),
    ("stage1_5", "training.per_device_batch", 1),
    ("stage1_5", "training.grad_accum", 16),
    ("stage1_5", "training.num_gpus", 2),
    ("stage1_5", "training.model_max_length", 32768),
    ("stage1_5", "training.save_steps", 1000),
    ("stage1_5", "training.logging_steps", 2),
    ("stage1_5", "training.dataloader_drop_last", True),
    ("stage1_5", "training.group_by_modality_length", True),
    ("stage1_5", "model.image_mode", "anyres"),
    ("stage1_5", "model.patch_merge", "spatial_unpad"),
    ("stage1_5", "model.grid_pinpoints_wh", SEED_1_5_PINPOINTS_WH),
    ("stage1_5", "model.attn_implementation", "flash_attention_2"),
    ("stage2", "training.learning_rate", 1e-5),
    ("stage2", "training.vision_tower_lr", 2e-6),
    ("stage2", "training.grad_accum", 16),
    ("stage2", "training.num_gpus", 4),
    ("stage2", "training.save_steps", 500),
    ("stage2", "training.dataloader_num_workers", 4),
    ("stage2", "model.vision_aspect_ratio", "anyres_max_9"),
    ("stage2", "model.grid_pinpoints_wh", seed_grid((1, 1), (6, 6))),
]
COMMON = [("training.epochs", 1), ("training.weight_decay", 0.0), ("training.warmup_ratio", 0.03),
          ("training.scheduler", "cosine"), ("training.bf16", True), ("training.tf32", True),
          ("training.gradient_checkpointing", True), ("training.save_total_limit", 1),
          ("model.vision_layers", 26), ("model.vision_feature_layer", -1),
          ("model.vision_feature_select_strategy", "full"), ("model.image_token_index", 151665),
          ("deepspeed", "seed")]
SEED_VALUES += [(stage, key, value) for stage in ("stage1", "stage1_5", "stage2") for key, value in COMMON]


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("stage,key,expected", SEED_VALUES)
def test_recipe_holds_seed_value(stage, key, expected):
    value = _get(load_recipe(stage), key)
    if isinstance(expected, list):
        assert [tuple(v) if isinstance(v, (list, tuple)) else v for v in value] == expected
    else:
        assert value == expected


def test_global_batches_match_seed_logs():
    # 558k/64 = 8720 steps, 30000/32 and 60000/64 = 937 steps, as the seed's logs show
    assert [load_recipe(s).training.global_batch for s in ("stage1", "stage1_5", "stage2")] == [64, 32, 64]
    assert 558128 // 64 == 8720 and 30000 // 32 == 937 and 60000 // 64 == 937


def test_stage2_pinpoints_in_transformers_order():
    pins = load_recipe("stage2").hf_grid_pinpoints
    assert len(pins) == 36 and pins[:3] == [[384, 384], [768, 384], [1152, 384]] and pins[-1] == [2304, 2304]
    assert load_recipe("stage1_5").hf_grid_pinpoints[:2] == [[768, 384], [384, 768]]


def test_seed_deepspeed_profile_is_the_seed_config():
    from llava.train.deepspeed_profiles import load_deepspeed_config
    zero = load_deepspeed_config("seed")["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == "cpu"
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True and zero["sub_group_size"] == 1e9
    cpu = load_deepspeed_config("cpu-test")["zero_optimization"]
    assert cpu["stage"] == 3 and cpu["stage3_param_persistence_threshold"] == 0 and "offload_param" not in cpu


def _write(tmp_path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    body = (load_recipe("stage1").source and open(load_recipe("stage1").source).read()) + "\ntraining_typo: 3\n"
    with pytest.raises(KitError) as err:
        load_recipe(_write(tmp_path, body))
    assert "bad.yaml" in str(err.value) and "training_typo" in str(err.value) and "unknown key" in str(err.value)


def test_nested_unknown_key_and_wrong_type(tmp_path):
    body = open(load_recipe("stage1").source).read().replace("  grad_accum: 4", "  grad_accum: four\n  lr_typo: 1")
    with pytest.raises(KitError) as err:
        load_recipe(_write(tmp_path, body))
    message = str(err.value)
    assert "training.grad_accum" in message and "four" in message and "training.lr_typo" in message


def test_missing_recipe_file():
    with pytest.raises(KitError, match="does not exist"):
        load_recipe("/nonexistent/stage9.yaml")


def test_missing_input_fails_before_model_is_built(tmp_path):
    from llava.paths import VolumeLayout
    from llava.train.preflight import preflight
    layout = VolumeLayout(tmp_path / "m", tmp_path / "d", tmp_path / "c", tmp_path / "r", tmp_path / "h")
    with pytest.raises(KitError) as err:
        preflight(load_recipe("stage2"), layout)
    assert "stage2.yaml" in str(err.value) and "data.path" in str(err.value)
