"""Build the whole tiny world on disk: tokenizer, tiny models, three stage datasets, an MMBench TSV.

Laid out exactly like the real volumes (models/, datasets/, with manifests), so the smoke run goes
through the same code paths as a GPU run.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from llava.data.image_digests import DIGESTS_NAME, write_image_digests
from llava.data.image_files import stamp_of
from llava.evaluate.mmbench_tsv import write_mmbench_tsv
from llava.manifest import write_manifest
from llava.synthetic.conversations import (COLOUR_QUESTION, caption_record, description_record,
                                           instruction_record, option_drill_record, text_only_record,
                                           tokenizer_corpus)
from llava.synthetic.instruct_llm import copy_instruct_llm
from llava.synthetic.shapes import COLOUR_OPTIONS, draw_scene, option_letter, random_scene, shuffled_colours
from llava.synthetic.tiny_models import write_tiny_llm, write_tiny_vision
from llava.synthetic.tokenizer import build_tiny_tokenizer

log = logging.getLogger(__name__)  # `llava-kit smoke` writes it to world.log
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
    # Shuffled options (circular test set, the smoke's default): the LLM is the shipped instruct stand-in
    # (synthetic/instruct_llm.py), instructions answer "It is green C", and drills keep its option reading.
    shuffle_options: bool = False
    stage1_5_drills: int = 200
    shuffled_text_only_fraction: float = 0.25
    drill_share: float = 0.8

    @classmethod
    def circular(cls, **changes) -> "WorldSize":
        """The smoke's world: shuffled options and 4x the captions, 3x the descriptions of the fixed world.

        The letter is then read right (236-240/240 rotated rows on seeds 0-3); the colour needed the extra
        image samples: at 400/200 it was named right 169/240 on seed 1, at 1600/600 236-240/240.
        """
        return cls(**{"shuffle_options": True, "stage1": 1600, "stage1_5": 600, **changes})


def _write_stage(root: Path, name: str, count: int, make, rng: random.Random, blank: bool,
                 text_fraction: float = 0.0, text_make=text_only_record, extra_text: int = 0,
                 world: dict | None = None) -> Path:
    """`count` samples (a `text_fraction` of them text-only), then `extra_text` more text-only ones, shuffled."""
    folder = root / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        sample_id = f"{name}-{i:05d}"
        if rng.random() < text_fraction:
            records.append(text_make(sample_id, rng))
            continue
        scene = random_scene(rng)
        draw_scene(scene, rng, blank).save(folder / "images" / f"{sample_id}.png")
        records.append(make(sample_id, f"{sample_id}.png", scene))
    if extra_text:
        records += [text_make(f"{name}-{i:05d}", rng) for i in range(count, count + extra_text)]
        rng.shuffle(records)
    (folder / "data.json").write_text(json.dumps(records))
    # the world is its own verifier: training checks its images as it does a verified folder's
    write_image_digests(folder, {r["image"]: stamp_of((folder / "images" / r["image"]).read_bytes())
                                 for r in records if "image" in r})
    write_manifest(folder, "dataset", file_patterns=("data.json", DIGESTS_NAME),
                   extra={"source": "synthetic shapes world", "samples": len(records), "world": world})
    with_image = sum(1 for record in records if "image" in record)
    log.info("dataset %s: %d samples (%d with an image, %d text-only) -> %s", name, len(records), with_image,
             len(records) - with_image, folder)
    return folder


def build_world(root: str | Path, *, seed: int = 0, blank_images: bool = False,
                size: WorldSize = WorldSize()) -> Path:
    """Write models/, datasets/ and eval/ under `root`; `blank_images` is the negative control."""
    root = Path(root)
    rng = random.Random(seed)
    shuffled = size.shuffle_options
    llm = root / "models" / LLM_DIR
    if shuffled:  # reading shuffled options is the LLM's skill, as with the real instruct LLM
        copy_instruct_llm(llm)
        write_manifest(llm, "model", extra={"source": "shipped tiny instruct stand-in (synthetic/instruct_llm.py)"})
    else:
        write_tiny_llm(llm, build_tiny_tokenizer(tokenizer_corpus(random.Random(seed + 99)), llm), seed)
        write_manifest(llm, "model", extra={"source": "random init (tiny)", "seed": seed})
    vision = write_tiny_vision(root / "models" / VISION_DIR, seed)
    write_manifest(vision, "model", extra={"source": "random init (tiny)", "seed": seed})
    log.info("world seed %d%s; LLM %s (%s); vision tower %s (random init)", seed,
             ", blank images" if blank_images else "", llm,
             "shipped tiny instruct stand-in" if shuffled else "random init", vision)
    datasets = root / "datasets"
    # what rebuilds this world byte for byte (`llava-kit reproduce` reads it from the dataset manifests)
    world = {"seed": seed, "blank_images": blank_images, "size": asdict(size)}
    _write_stage(datasets, "stage1", size.stage1, caption_record, rng, blank_images, world=world)
    _write_stage(datasets, "stage1_5", size.stage1_5, description_record, rng, blank_images,
                 text_make=option_drill_record, extra_text=size.stage1_5_drills if shuffled else 0, world=world)
    stage2_text = (lambda i, r: (option_drill_record if r.random() < size.drill_share else text_only_record)(i, r)) \
        if shuffled else text_only_record
    _write_stage(datasets, "stage2", size.stage2, lambda i, p, s: instruction_record(i, p, s, rng, shuffled), rng,
                 blank_images, size.shuffled_text_only_fraction if shuffled else size.text_only_fraction,
                 text_make=stage2_text, world=world)
    write_test_set(held_out_tsv(root), random.Random(seed + 1), size.test_questions, blank_images, shuffled)
    log.info("held-out test set: %d questions%s -> %s", size.test_questions,
             ", options shuffled, 4 rotated passes each" if shuffled else ", options in one fixed order",
             held_out_tsv(root))
    return root


def write_test_set(path: Path, rng: random.Random, count: int, blank: bool, shuffled: bool = False) -> Path:
    """Held-out colour questions.

    `shuffled`: options in a random order per question, written with VLMEvalKit's rotated passes, so
    a question counts only if the letter is right in all four orders (the model must read the
    options). Otherwise the options keep one fixed order and there is one pass per question.
    """
    questions = []
    for i in range(count):
        scene = random_scene(rng)
        options = shuffled_colours(rng) if shuffled else list(COLOUR_OPTIONS)
        questions.append({
            "index": i, "question": COLOUR_QUESTION, "options": options,
            "answer": option_letter(options, scene.colour), "category": "attribute_recognition",
            "l2_category": "finegrained_perception (instance-level)", "image": draw_scene(scene, rng, blank),
            "split": "dev",
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mmbench_tsv(questions, path, circular=shuffled)
