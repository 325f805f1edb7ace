"""`llava-kit render` shows exactly what training feeds the model for one sample."""

from __future__ import annotations

import json
import subprocess
import sys

from llava.recipe import STAGES_DIR


def render(home, recipe: str, sample: dict, tmp_path, *extra: str) -> dict:
    path = tmp_path / "sample.json"
    path.write_text(json.dumps(sample))
    done = subprocess.run([sys.executable, "-m", "llava.cli", "render", "--recipe", str(STAGES_DIR / "smoke" / recipe),
                           "--sample", str(path), "--home", str(home), "--json", *extra],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_render_qwen_sample_with_image_size(stage1_run, tmp_path):
    _, layout, _ = stage1_run
    sample = {"id": "x", "image": "none.png", "conversations": [
        {"from": "human", "value": "What colour?\n<image>"}, {"from": "gpt", "value": "red"}]}
    out = render(layout.checkpoints.parent, "stage1_5.yaml", sample, tmp_path, "--image-size", "100x60")
    assert out["text"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n")
    assert len(out["input_ids"]) == len(out["labels"])
    # assistant_only (the smoke recipe's choice): "red" + <|im_end|> are the only supervised tokens
    assert out["supervised_tokens"] == sum(1 for x in out["labels"] if x >= 0) >= 2
    image_positions = [i for i, label in enumerate(out["labels"]) if label == -100]
    assert out["image_tokens"] > 16 and len(image_positions) >= out["image_tokens"]


def test_render_plain_sample_reads_the_image(stage1_run, tmp_path):
    _, layout, _ = stage1_run
    record = json.loads((layout.datasets / "stage1" / "data.json").read_text())[0]
    out = render(layout.checkpoints.parent, "stage1.yaml", record, tmp_path)
    assert out["image_tokens"] == 16  # 56-px tile, 14-px patches: the square path has no newline
    assert out["text"] == "<image>" + record["conversations"][1]["value"] + "\n"
    assert out["labels"][:16] == [-100] * 16 and all(x >= 0 for x in out["labels"][16:])
