"""The shipped tiny instruct stand-in reads MMBench options; a random model of its shape does not.

The smoke's circular score depends on it, so it is checked on its own: the letter after the named
colour on 200 held-out shuffled questions, and (extended tier) a rebuild from scratch by the module.
"""

from __future__ import annotations

import json

import pytest

from llava.synthetic.instruct_llm import INSTRUCT_TEXT, PROBE_TARGET, SHIPPED, build_instruct_llm, letter_accuracy


def _load(folder):
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def test_the_shipped_model_reads_the_letter_of_the_named_colour():
    model, tokenizer = _load(SHIPPED)
    assert {k: getattr(model.config, k) for k in INSTRUCT_TEXT} == INSTRUCT_TEXT
    assert letter_accuracy(model, tokenizer) >= PROBE_TARGET
    provenance = json.loads((SHIPPED / "provenance.json").read_text())
    assert provenance["letter_accuracy"] >= PROBE_TARGET and provenance["config"] == INSTRUCT_TEXT


def test_a_random_model_of_the_same_shape_is_at_chance(tmp_path):
    from transformers import Qwen2ForCausalLM

    model, tokenizer = _load(SHIPPED)
    random_model = Qwen2ForCausalLM(model.config)
    assert letter_accuracy(random_model, tokenizer) <= 0.45  # 4 letters: chance 0.25


def test_the_world_copies_it_for_shuffled_options(tmp_path):
    from llava.synthetic.world import LLM_DIR, WorldSize, build_world

    root = build_world(tmp_path, size=WorldSize.circular(stage1=4, stage1_5=4, stage1_5_drills=4, stage2=8,
                                                          test_questions=2))
    copied = root / "models" / LLM_DIR
    assert (copied / "model.safetensors").read_bytes() == (SHIPPED / "model.safetensors").read_bytes()
    assert not (copied / "provenance.json").exists() and (copied / "manifest.json").is_file()


@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_the_module_rebuilds_a_model_that_reads_the_options(tmp_path):
    provenance = build_instruct_llm(tmp_path / "llm", seed=0)
    assert provenance["letter_accuracy"] >= PROBE_TARGET
    model, tokenizer = _load(tmp_path / "llm")
    assert letter_accuracy(model, tokenizer) >= PROBE_TARGET
