"""A tiny byte-level BPE with Qwen2's pre-tokenisation and special tokens, trained in well under a second.

Hand-written because no library ships a small Qwen-shaped tokenizer; training itself is `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

# Qwen2's pre-tokenizer split pattern (public behaviour of the Qwen2 tokenizer).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BASE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MEDIA_TOKENS = ("<image>", "<video>")


def build_tiny_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 512):
    """Train, wrap as a transformers tokenizer, save to `out_dir`, and return it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BASE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[BASE_SPECIALS[1], BASE_SPECIALS[2]],
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return tokenizer


# Qwen2.5's 22 special tokens, in id order from 151643 (its tokenizer_config.json added_tokens_decoder).
QWEN2_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN2_REGULAR_TOKENS = 151643  # ordinary BPE entries before the first special id


def build_qwen2_sized_tokenizer(corpus: Iterable[str], out_dir: str | Path, regular: int = QWEN2_REGULAR_TOKENS):
    """A byte-level BPE with Qwen2.5's vocabulary size and special-token ids, so <image> lands at 151665.

    The merges are learnt from `corpus`; the rest of the `regular` entries are unreachable fillers. Ids
    of the specials, and so of the media tokens added after them, are those of the real tokenizer.
    """
    import json

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(list(corpus), trainer=trainer)
    body = json.loads(core.to_str())
    vocab = body["model"]["vocab"]
    for filler in range(len(vocab), regular):
        vocab[f"<|filler_{filler}|>"] = filler
    core = Tokenizer.from_str(json.dumps(body))
    core.add_special_tokens(list(QWEN2_SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=131072,
        padding_side="right", clean_up_tokenization_spaces=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return tokenizer
