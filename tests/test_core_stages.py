"""Stage mechanics on the tiny world: freezing, optimizer groups, save/load, preflight refusals."""

from __future__ import annotations

import shutil

import pytest
import torch

from llava.errors import KitError
from llava.recipe import load_recipe

from conftest import smoke_recipe


def test_stage1_step_changes_only_the_projector(stage1_run):
    from llava.model.checkpoint import load_for_inference
    initial, layout, result = stage1_run
    trained, _ = load_for_inference(result.output)
    before = dict(initial.named_parameters())
    changed = {name for name, p in trained.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {f"model.multi_modal_projector.linear_{i}.{k}" for i in (1, 2) for k in ("weight", "bias")}
    assert result.global_steps == 2


def test_save_load_gives_identical_logits_and_tied_head(stage1_run, tiny_world):
    from PIL import Image

    from llava.model.build import build_model
    from llava.model.checkpoint import load_for_inference, save_checkpoint
    _, layout, _ = stage1_run
    built = build_model(smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1"), layout)
    out = save_checkpoint(built, tiny_world / "saved")
    loaded, processor = load_for_inference(out)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "<image>\nWhat colour?"}]}], add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (90, 70), (200, 20, 20)), text=prompt, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(built.model.eval()(**inputs).logits, loaded(**inputs).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    generation = loaded.generation_config
    assert generation.do_sample is False and generation.num_beams == 1
    assert generation.eos_token_id == [processor.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    import json
    assert json.loads((out / "processor_config.json").read_text())["processor_class"] == "LlavaOnevisionProcessor"
    assert (out / "video_preprocessor_config.json").is_file()


def test_optimizer_groups_carry_vision_and_base_lr(stage1_run):
    from transformers import TrainingArguments

    from llava.model.build import build_model
    from llava.model.tunable import TunableParts
    from llava.train.trainer import LlavaTrainer
    _, layout, _ = stage1_run
    recipe = load_recipe("stage2")  # the seed's lr values, on the tiny model
    built = build_model(smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1"), layout)
    TunableParts(tuple(recipe.tunable_parts)).apply(built.model)
    args = TrainingArguments(output_dir=str(layout.runs / "opt"), learning_rate=recipe.training.learning_rate,
                             use_cpu=True, report_to=[])
    trainer = LlavaTrainer(model=built.model, args=args, vision_tower_lr=recipe.training.vision_tower_lr)
    optimizer = trainer.create_optimizer()
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    vision = {id(p) for n, p in built.model.named_parameters() if "vision_tower" in n}
    rest = {id(p) for n, p in built.model.named_parameters() if "vision_tower" not in n}
    assert set(by_lr) == {2e-6, 1e-5}
    assert by_lr[2e-6] == vision and by_lr[1e-5] == rest


def test_preflight_refuses_short_max_length(stage1_run):
    from llava.train.preflight import preflight
    _, layout, _ = stage1_run
    recipe = smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1", "training.model_max_length=200")
    with pytest.raises(KitError) as err:
        preflight(recipe, layout)
    assert "model_max_length is 200" in str(err.value) and "raise training.model_max_length" in str(err.value)


def test_preflight_refuses_input_without_manifest(stage1_run, tmp_path):
    from llava.train.preflight import preflight
    _, layout, _ = stage1_run
    data = tmp_path / "stage2"
    shutil.copytree(layout.datasets / "stage2", data)
    (data / "manifest.json").unlink()
    recipe = smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1", f"data.path={data}/data.json")
    with pytest.raises(KitError, match=f"{data} has no manifest.json"):
        preflight(recipe, layout)
