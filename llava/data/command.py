"""`llava-kit render`: show exactly what one sample becomes (text, ids, labels, image tokens)."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("render", help="render one sample through a recipe's template (debug templates)")
    parser.add_argument("--recipe", required=True, help="recipe YAML path or name")
    parser.add_argument("--sample", required=True, help="JSON file holding one LLaVA record (or a list: the first is used)")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the recipe's LLM or previous checkpoint)")
    parser.add_argument("--image-size", help="WxH of the image when the file is not at hand, e.g. 640x480")
    parser.add_argument("--home", help="root holding models/ datasets/ checkpoints/")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a readable view")
    parser.set_defaults(func=run)


def _image_tokens(record: dict, recipe, processor, layout, image_size: str | None) -> list[int]:
    """Token count of each image (several images: the original's pad mode), from the files or `image_size`."""
    from PIL import Image

    from llava.data.dataset import load_sample_images
    from llava.data.images import image_pipeline, process_sample_images
    from llava.data.record_checks import image_paths

    pipeline = image_pipeline(recipe.model.image_mode, processor)
    if image_size and image_paths(record):
        width, height = (int(v) for v in image_size.lower().split("x"))
        blanks = [Image.new("RGB", (width, height)) for _ in image_paths(record)]
        return [image.num_tokens for image in process_sample_images(pipeline, blanks)]
    folder = layout.resolve(recipe.data.image_folder)
    return [image.num_tokens for image in load_sample_images(record, folder, pipeline)]


def run(args) -> int:
    from llava.data.templates import TemplateError, expand_image_tokens, render_conversation
    from llava.errors import KitError
    from llava.model.build import recipe_processor
    from llava.paths import VolumeLayout
    from llava.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    layout = VolumeLayout.from_env(args.home)
    try:
        record = json.loads(Path(args.sample).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KitError(f"cannot read sample {args.sample}: {err}") from err
    record = record[0] if isinstance(record, list) else record
    processor = recipe_processor(recipe, layout, Path(args.tokenizer) if args.tokenizer else None)
    try:
        rendered = render_conversation(record["conversations"], recipe.data.template, processor.tokenizer,
                                       system_prompt=recipe.data.system_prompt, label_mode=recipe.data.label_mode)
        counts = _image_tokens(record, recipe, processor, layout, args.image_size)
        ids, labels = expand_image_tokens(rendered.input_ids, rendered.labels, processor.image_token_id, counts)
    except TemplateError as err:
        raise KitError(f"{args.sample}: {err}") from err
    out = {"text": rendered.text, "input_ids": ids, "labels": labels, "image_tokens": sum(counts),
           "image_tokens_per_image": counts, "supervised_tokens": sum(1 for label in labels if label >= 0)}
    if args.json:
        print(json.dumps(out))
    else:
        print(rendered.text)
        print(f"{len(ids)} tokens, {out['supervised_tokens']} supervised, {out['image_tokens']} image tokens")
    return 0
