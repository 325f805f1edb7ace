"""HF-native stage outputs: one folder that `from_pretrained`, AutoProcessor and VLMEvalKit load as is."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

from llava.data.processor import QWEN_1_5_CHAT_TEMPLATE, load_processor, save_processor
from llava.durable import recover_folder, replace_folder, staging_folder, staging_path
from llava.errors import KitError

CHECKPOINT_KIND = "checkpoint"  # the llava.owned kind of a stage output folder


def greedy_generation_config(tokenizer, repetition_penalty: float = 1.0) -> GenerationConfig:
    """Greedy, stopping on <|im_end|> or <|endoftext|>: never inherit Qwen-Instruct's sampling defaults."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return GenerationConfig(
        do_sample=False, num_beams=1, eos_token_id=[im_end, end], pad_token_id=end, bos_token_id=end,
        repetition_penalty=repetition_penalty,
    )


def write_support_files(folder: Path, built, repetition_penalty: float = 1.0) -> None:
    """Everything but the weights: config, tokenizer + chat template, processor, generation config."""
    built.tokenizer.chat_template = QWEN_1_5_CHAT_TEMPLATE
    built.model.config.save_pretrained(folder)
    save_processor(built.processor, folder)
    greedy_generation_config(built.tokenizer, repetition_penalty).save_pretrained(folder)


def save_checkpoint(built, out_dir: str | Path, write_weights: Callable[[Path], None] | None = None,
                    is_main: bool = True, repetition_penalty: float = 1.0) -> Path:
    """Write the folder under a temporary name and rename it into place when complete.

    `write_weights(folder)` lets DeepSpeed gather ZeRO-3 shards (every rank must call it); by default
    the in-memory model is saved as safetensors.
    """
    final = Path(out_dir)
    tmp = staging_folder(final) if is_main else staging_path(final)
    (write_weights or (lambda folder: built.model.save_pretrained(folder)))(tmp)
    if is_main:
        write_support_files(tmp, built, repetition_penalty)
        replace_folder(tmp, final, kind=CHECKPOINT_KIND)
    return final


def load_for_inference(path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, processor) for evaluation and checks; the processor needs no torchvision."""
    path = recover_folder(path)
    if not (path / "config.json").is_file():
        raise KitError(f"{path} is not a checkpoint folder (no config.json)")
    check_weight_files(path)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, dtype=dtype or torch.float32)
    return model.to(device).eval(), load_processor(path)


def check_weight_files(path: Path) -> None:
    """Each *.safetensors file's header must describe the whole file: a truncated or foreign file is named
    here instead of failing inside `from_pretrained` (safetensors reads the header only)."""
    from safetensors import SafetensorError, safe_open

    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise KitError(f"{path} holds no *.safetensors weights")
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise KitError(f"{shard} is not a complete safetensors file ({err}): copy or download it again") from None
