"""`llava-kit generate`: the streamed answer is what the checkpoint generates for the qwen_1_5 prompt built by
hand, through the training processor; nothing the user gave is changed."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # one CLI process loading torch and a tiny model (about 15 s on 2 cores)
QWEN_1_5 = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{PROMPT}"
            "<|im_end|>\n<|im_start|>assistant\n")
PROMPT = "What colour is the shape?"


def hashes(*paths: Path) -> dict[str, str]:
    files = [p for path in paths for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def expected_answer(checkpoint: Path, image_path: Path, max_new_tokens: int) -> str:
    """Greedy generation written out with transformers directly: the prompt string by hand."""
    import torch
    from PIL import Image
    from transformers import LlavaOnevisionForConditionalGeneration

    from llava.data.processor import load_processor

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(checkpoint).eval()
    processor = load_processor(checkpoint)
    with Image.open(image_path) as image:
        inputs = processor(images=image.convert("RGB"), text=QWEN_1_5.replace("{PROMPT}", PROMPT),
                           return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


def test_generate_streams_the_checkpoints_answer(stage1_run, tiny_world):
    _, _, result = stage1_run
    image = tiny_world / "datasets" / "stage1" / "images" / "stage1-00000.png"
    before = hashes(result.output, image)

    done = subprocess.run([sys.executable, "-m", "llava.cli", "generate", str(result.output), "--image", str(image),
                           "--prompt", PROMPT, "--max-new-tokens", "6", "--device", "auto"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    answer = expected_answer(result.output, image, 6)
    assert answer and done.stdout == answer + "\n"  # TextStreamer ends the stream with a newline
    assert hashes(result.output, image) == before
