"""Build the whole tiny world on disk: tokenizer, tiny models, three stage datasets, an MMBench TSV.

Laid out exactly like the real volumes (models/, datasets/, with manifests), so the smoke run goes
through the same code paths as a GPU run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from llava.evaluate.mmbench_tsv import write_mmbench_tsv
from llava.manifest import write_manifest
from llava.synthetic.conversations import (caption_record, description_record, instruction_record,
                                           text_only_record)
from llava.synthetic.shapes import COLOUR_OPTIONS, colour_letter, draw_scene, random_scene
from llava.synthetic.tiny_models import write_tiny_llm, write_tiny_vision
from llava.synthetic.tokenizer import build_tiny_tokenizer

LLM_DIR = "tiny-qwen2"
VISION_DIR = "tiny-siglip"


def held_out_tsv(root: Path) -> Path:
    """The held-out MMBench-format TSV: a dataset, next to the training sets."""
    return Path(root) / "datasets" / "eval" / "shapes_colour.tsv"


@dataclass(frozen=True)
class WorldSize:
    stage1: int = 400
    stage1_5: int = 200
    stage2: int = 1600
    test_questions: int = 60
    text_only_fraction: float = 0.05


def _corpus(rng: random.Random) -> list[str]:
    """Text the tiny BPE is trained on: every string the world can produce, plus chat scaffolding."""
    texts = ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
             "<|im_start|>assistant\n", "Render a clear and concise summary of the photo.",
             "Please generate detailed descriptions of the given image."]
    for _ in range(300):
        scene = random_scene(rng)
        texts += [json.dumps(f(str(0), "x.png", scene)["conversations"]) for f in (caption_record, description_record)]
        texts.append(json.dumps(instruction_record("0", "x.png", scene, rng)["conversations"]))
        texts.append(json.dumps(text_only_record("0", rng)["conversations"]))
    return texts


def _write_stage(root: Path, name: str, count: int, make, rng: random.Random, blank: bool,
                 text_fraction: float = 0.0) -> Path:
    folder = root / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        sample_id = f"{name}-{i:05d}"
        if rng.random() < text_fraction:
            records.append(text_only_record(sample_id, rng))
            continue
        scene = random_scene(rng)
        draw_scene(scene, rng, blank).save(folder / "images" / f"{sample_id}.png")
        records.append(make(sample_id, f"{sample_id}.png", scene))
    (folder / "data.json").write_text(json.dumps(records))
    write_manifest(folder, "dataset", file_patterns=("data.json",),
                   extra={"source": "synthetic shapes world", "samples": len(records)})
    return folder


def build_world(root: str | Path, *, seed: int = 0, blank_images: bool = False,
                size: WorldSize = WorldSize()) -> Path:
    """Write models/, datasets/ and eval/ under `root`; `blank_images` is the negative control."""
    root = Path(root)
    rng = random.Random(seed)
    tokenizer = build_tiny_tokenizer(_corpus(random.Random(seed + 99)), root / "models" / LLM_DIR)
    for folder in (write_tiny_llm(root / "models" / LLM_DIR, tokenizer, seed),
                   write_tiny_vision(root / "models" / VISION_DIR, seed)):
        write_manifest(folder, "model", extra={"source": "random init (tiny)", "seed": seed})
    datasets = root / "datasets"
    _write_stage(datasets, "stage1", size.stage1, caption_record, rng, blank_images)
    _write_stage(datasets, "stage1_5", size.stage1_5, description_record, rng, blank_images)
    _write_stage(datasets, "stage2", size.stage2, lambda i, p, s: instruction_record(i, p, s, rng), rng,
                 blank_images, size.text_only_fraction)
    write_test_set(held_out_tsv(root), random.Random(seed + 1), size.test_questions, blank_images)
    return root


def write_test_set(path: Path, rng: random.Random, count: int, blank: bool) -> Path:
    """Held-out colour questions, options always in the same order (so not circular)."""
    questions = []
    for i in range(count):
        scene = random_scene(rng)
        questions.append({
            "index": i, "question": "What colour is the shape in the image?", "options": list(COLOUR_OPTIONS),
            "answer": colour_letter(scene), "category": "attribute_recognition",
            "l2_category": "finegrained_perception (instance-level)", "image": draw_scene(scene, rng, blank),
            "split": "dev",
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mmbench_tsv(questions, path, circular=False)
