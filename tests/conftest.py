"""Shared fixtures: the tiny tokenizer and the tiny shapes world, built once per session."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The world's BPE with <image>/<video> added, as stage 1 does to the real Qwen tokenizer."""
    from llava.data.processor import add_media_tokens
    from llava.synthetic.tokenizer import build_tiny_tokenizer
    from llava.synthetic.conversations import tokenizer_corpus

    tokenizer = build_tiny_tokenizer(tokenizer_corpus(random.Random(99)), tmp_path_factory.mktemp("tok"))
    add_media_tokens(tokenizer)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small shapes world (models + datasets + TSV) for stage-level tests."""
    from llava.synthetic.world import WorldSize, build_world

    root = tmp_path_factory.mktemp("world")
    return build_world(root, seed=0, size=WorldSize(stage1=48, stage1_5=24, stage2=64, test_questions=8,
                                                        text_only_fraction=0.25))


def smoke_recipe(stage: str, *overrides: str):
    from llava.recipe import STAGES_DIR, load_recipe
    return load_recipe(STAGES_DIR / "smoke" / f"{stage}.yaml", list(overrides))


@pytest.fixture(scope="session")
def stage1_run(tiny_world):
    """Two stage-1 steps: (initial model, layout, result)."""
    from llava.model.build import build_model
    from llava.pipeline import smoke_layout
    from llava.train.run import train_stage
    layout = smoke_layout(tiny_world)
    recipe = smoke_recipe("stage1", "training.max_steps=2", "training.save_strategy=no")
    initial = build_model(recipe, layout).model
    return initial, layout, train_stage(recipe, layout, run_dir=layout.runs / "stage1-test")
