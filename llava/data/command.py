"""`llava-kit render`: show exactly what one sample becomes (text, ids, labels, image tokens)."""

from __future__ import annotations

import json
from pathlib import Path

from llava.data.record_checks import conversation_fault, image_fault, image_paths, length_fault
from llava.errors import KitError


def register(subparsers) -> None:
    parser = subparsers.add_parser("render", help="render one sample through a recipe's template (debug templates)")
    parser.add_argument("--recipe", required=True, help="recipe YAML path or name")
    parser.add_argument("--sample", required=True, help="JSON file holding one LLaVA record (or a list: the first is used)")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the recipe's LLM or previous checkpoint)")
    parser.add_argument("--image-size", help="WxH of the image when the file is not at hand, e.g. 640x480")
    parser.add_argument("--home", help="root holding models/ datasets/ checkpoints/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a readable view")
    parser.set_defaults(func=run)


def parse_image_size(text: str) -> tuple[int, int]:
    """`640x480` -> (640, 480); anything else names the flag and the expected form."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.strip().isdigit() and height.strip().isdigit()) or not int(width) or not int(height):
        raise KitError(f"--image-size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x480")
    return int(width), int(height)


def read_sample(path: str) -> dict:
    """The one record of `--sample` (a record, or a list whose first record is used), checked like training does."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KitError(f"cannot read sample {path}: {err}") from err
    if isinstance(record, list):
        if not record:
            raise KitError(f"sample {path}: the list holds no record")
        record = record[0]
    fault = conversation_fault(record)
    if fault:
        raise KitError(f"sample {path}: {fault} (a record needs `conversations`: alternating human/gpt turns, each "
                       "with a non-empty `value`, and one <image> tag per entry of `image`; see docs/data.md)")
    return record


def _image_tokens(record: dict, sample: str, recipe, processor, layout, image_size: str | None) -> list[int]:
    """Token count of each image (several images: the original's pad mode), from the files or `--image-size`."""
    from PIL import Image

    from llava.data.dataset import load_sample_images
    from llava.data.images import image_pipeline, process_sample_images

    paths = image_paths(record)
    if not paths:
        return []
    pipeline = image_pipeline(recipe.model.image_mode, processor)
    if image_size:
        size = parse_image_size(image_size)
        return [image.num_tokens for image in process_sample_images(pipeline, [Image.new("RGB", size) for _ in paths])]
    folder = layout.resolve(recipe.data.image_folder)
    for name in paths:
        fault = image_fault(folder / name)
        if fault:
            raise KitError(f"sample {sample}: image {folder / name}: {fault} (data.image_folder of {recipe.source}; "
                           "or pass --image-size WxH to render without the file)")
    return [image.num_tokens for image in load_sample_images(record, folder, pipeline)]


def run(args) -> int:
    from llava.data.processor import recipe_processor
    from llava.data.templates import TemplateError, expand_image_tokens, render_conversation
    from llava.paths import VolumeLayout
    from llava.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    layout = VolumeLayout.from_env(args.home)
    record = read_sample(args.sample)
    if args.image_size:
        parse_image_size(args.image_size)  # before the tokenizer loads
    processor = recipe_processor(recipe, layout, Path(args.tokenizer) if args.tokenizer else None)
    try:
        rendered = render_conversation(record["conversations"], recipe.data.template, processor.tokenizer,
                                       system_prompt=recipe.data.system_prompt, label_mode=recipe.data.label_mode)
        counts = _image_tokens(record, args.sample, recipe, processor, layout, args.image_size)
        ids, labels = expand_image_tokens(rendered.input_ids, rendered.labels, processor.image_token_id, counts)
    except TemplateError as err:
        raise KitError(f"sample {args.sample}: {err} (template {recipe.data.template} of {recipe.source})") from None
    limit = recipe.training.model_max_length
    too_long = length_fault(len(ids), limit)
    out = {"text": rendered.text, "input_ids": ids, "labels": labels, "image_tokens": sum(counts),
           "image_tokens_per_image": counts, "supervised_tokens": sum(1 for label in labels if label >= 0),
           "model_max_length": limit, "over_max_length": too_long is not None}
    if args.json:
        print(json.dumps(out))
    else:
        print(rendered.text)
        print(f"{len(ids)} of model_max_length {limit} tokens, {out['supervised_tokens']} supervised, "
              f"{out['image_tokens']} image tokens")
        if too_long:
            print(f"over the limit: {too_long} (training.model_max_length of {recipe.source}); training skips this "
                  "sample and `prepare verify` quarantines it")
    return 0
