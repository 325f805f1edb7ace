"""`llava-kit generate CKPT --image FILE --prompt TEXT`: ask a checkpoint one question and stream its answer.

The same path as the built-in eval backend (`CheckpointAnswerer`): the checkpoint's saved processor (the
training image processor, no torchvision needed), its chat template (the recipe's qwen_1_5
conversation), "<image>\\n" before the text, greedy generation. The image goes through the kit's one
image loader (llava.data.image_files), as in training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.errors import KitError

IMAGE_PREFIX = "<image>\n"  # where LLaVA_OneVision_HF and the builtin backend put the image


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="answer one prompt about one image with a checkpoint (streamed)",
        description="Load CHECKPOINT (a stage output, a publish dry-run folder, any LLaVA-OneVision HF "
                    "folder) and stream its answer to --prompt about --image, on the GPU when there is one.",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    parser.add_argument("--image", type=Path, help="the picture to ask about (leave out for a text-only prompt)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")
    parser.set_defaults(func=run)


def user_text(prompt: str, has_image: bool) -> str:
    if not prompt.strip():
        raise KitError("--prompt is empty: give the question to ask")
    if "<image>" in prompt:
        raise KitError("--prompt contains <image>: leave it out, the image is placed before the text by itself")
    return IMAGE_PREFIX + prompt if has_image else prompt


def open_image(path: Path):
    """The picture as training sees it, or a message naming the file and what is wrong with it."""
    from llava.data.image_files import UnusableImage, load_rgb
    from llava.data.record_checks import image_fault

    fault = image_fault(path)
    if fault:
        raise KitError(f"--image {path}: {fault}")
    try:
        return load_rgb(path)
    except (OSError, UnusableImage) as err:
        raise KitError(f"--image {path}: {err}") from None


def pick_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda: no CUDA device is visible here (use --device cpu or auto)")
    return ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice


def run(args: argparse.Namespace) -> int:
    from transformers import TextStreamer
    from transformers.utils import logging as hf_logging

    from llava.evaluate.builtin import CheckpointAnswerer

    hf_logging.disable_progress_bar()  # "Loading weights" would sit above the answer

    if args.max_new_tokens < 1:
        raise KitError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    text = user_text(args.prompt, args.image is not None)
    image = open_image(args.image) if args.image is not None else None
    if not args.checkpoint.is_dir():
        raise KitError(f"checkpoint {args.checkpoint} is not a folder")
    answerer = CheckpointAnswerer(args.checkpoint, args.max_new_tokens, device=pick_device(args.device))
    streamer = TextStreamer(answerer.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    answerer(image, text, streamer=streamer)
    return 0
