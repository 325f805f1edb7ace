"""Multi-image samples in the original's pad mode, end to end: render at real size, verify, train."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from PIL import Image

from conftest import smoke_recipe
from llava.data.dataset import load_records

PAIR = {"id": "pair", "image": ["a.png", "b.png"], "conversations": [
    {"from": "human", "value": "<image>\n<image>\nWhich picture is wider?"}, {"from": "gpt", "value": "The first."}]}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llava.cli", *args], capture_output=True, text=True, timeout=600)


def _save_pair(folder, sizes=((640, 480), (300, 2000))):
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in zip(PAIR["image"], sizes):
        Image.effect_mandelbrot(size, (-2, -1.2, 1, 1.2), 40).convert("RGB").save(folder / name)


def test_render_counts_730_plus_730_at_real_size(tiny_tokenizer, tmp_path):
    """The seed's stage-2 recipe with SigLIP's real tile (384 px, patch 14): render reads configs, not weights."""
    from transformers import LlavaOnevisionConfig

    home = tmp_path / "home"
    LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "intermediate_size": 32, "vocab_size": 640},
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 8, "intermediate_size": 16,
                       "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 384, "patch_size": 14},
    ).save_pretrained(home / "checkpoints" / "stage1_5")
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    _save_pair(home / "datasets" / "stage2" / "images")
    (tmp_path / "pair.json").write_text(json.dumps(PAIR))
    done = _cli("render", "--recipe", "stage2", "--sample", str(tmp_path / "pair.json"), "--home", str(home),
                "--tokenizer", str(tmp_path / "tok"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert out["image_tokens_per_image"] == [730, 730] and out["image_tokens"] == 1460
    assert out["input_ids"].count(image_id) == 1460
    assert all(label == -100 for tok, label in zip(out["input_ids"], out["labels"]) if tok == image_id)
    # the text keeps both tags where the record has them (the relocation rule moves a single tag only)
    assert "<|im_start|>user\n<image>\n<image>\nWhich picture is wider?<|im_end|>" in out["text"]


def test_plain_template_refuses_two_images_with_a_message(stage1_run, tmp_path):
    _, layout, _ = stage1_run
    _save_pair(layout.datasets / "stage1" / "images")
    (tmp_path / "pair.json").write_text(json.dumps(PAIR))
    done = _cli("render", "--recipe", "stages/smoke/stage1.yaml", "--sample", str(tmp_path / "pair.json"),
                "--home", str(layout.checkpoints.parent), "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{tmp_path / 'pair.json'}: plain template (stage 1) takes one image per sample" in done.stderr


def test_verify_keeps_and_training_takes_multi_image_samples(stage1_run, tmp_path):
    """prepare verify keeps the pair; stage 2 on the tiny model trains on pairs (17 + 17 tokens each) with no skip."""
    from llava.prepare.verify import verify_dataset
    from llava.train.run import build_dataset, train_stage
    from llava.model.build import build_model

    _, layout, _ = stage1_run
    data = tmp_path / "pairs"
    _save_pair(data / "images", sizes=((90, 60), (50, 110)))
    single = {"id": "one", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A picture."}]}
    records = [{**PAIR, "id": f"pair-{i}"} for i in range(6)] + [{**single, "id": f"one-{i}"} for i in range(2)]
    (data / "data.json").write_text(json.dumps(records))
    report = verify_dataset(data, expects_image=None, workers=1)
    assert report.faults == [] and report.kept == 8

    recipe = smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1", f"data.path={data}/data.json",
                          f"data.image_folder={data}/images", "training.max_steps=2", "training.save_strategy=no",
                          "training.group_by_modality_length=false", "data.require_manifest=false",
                          f"output={tmp_path}/out")
    built = build_model(recipe, layout)
    inputs = type("Inputs", (), {"data_file": data / "data.json", "image_folder": data / "images",
                                 "records": load_records(data / "data.json")})
    dataset, collator = build_dataset(recipe, built, inputs, tmp_path / "run")
    item = dataset[0]
    assert [row["pixel_values"].shape[0] for row in item["images"]] == [1, 1]  # one padded tile each
    assert item["input_ids"].count(built.processor.image_token_id) == 2 * (16 + 1)
    batch = collator([dataset[0], dataset[6]])  # a pair and a single image in one micro-batch
    assert batch["batch_num_images"].tolist() == [2, 1] and batch["pixel_values"].shape[0] == 3
    with torch.no_grad():
        assert torch.isfinite(built.model(**batch).loss)  # the model's own feature/token count check passes

    result = train_stage(recipe, layout, run_dir=tmp_path / "run")
    assert result.global_steps == 2 and result.skipped == 0 and result.train_loss > 0
