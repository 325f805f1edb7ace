"""Random-initialised tiny Qwen2 and SigLIP folders, laid out like the real ones in models/."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, max_position_embeddings=4096, rope_theta=10000.0)
# 3 layers of which the recipe keeps 2: exercises the "drop SigLIP's last layer" path.
TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                   image_size=56, patch_size=14)


def write_tiny_llm(folder: str | Path, tokenizer, seed: int = 0, overrides: dict | None = None) -> Path:
    """`overrides` change TINY_TEXT's shape (the instruct stand-in is wider: synthetic/instruct_llm.py)."""
    torch.manual_seed(seed)
    vocab = ((len(tokenizer) + 2 + 63) // 64) * 64  # room for <image>/<video>, as Qwen's padded vocab has
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(vocab_size=vocab, tie_word_embeddings=True, bos_token_id=end,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         **{**TINY_TEXT, **(overrides or {})})
    folder = Path(folder)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_vision(folder: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed + 1)
    folder = Path(folder)
    SiglipVisionModel(SiglipVisionConfig(**TINY_VISION)).save_pretrained(folder)
    return folder
