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


def _image_tokens(record: dict, recipe, processor, layout, image_size: str | None) -> int | None:
    from PIL import Image

    from llava.data.images import image_pipeline

    if not record.get("image"):
        return None
    pipeline = image_pipeline(recipe.model.image_mode, processor)
    if image_size:
        width, height = (int(v) for v in image_size.lower().split("x"))
        return pipeline.process(Image.new("RGB", (width, height))).num_tokens
    with Image.open(layout.resolve(recipe.data.image_folder) / record["image"]) as image:
        return pipeline.process(image).num_tokens


def run(args) -> int:
    from llava.data.templates import expand_image_tokens, render_conversation
    from llava.errors import KitError
    from llava.data.processor import recipe_processor
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
    rendered = render_conversation(record["conversations"], recipe.data.template, processor.tokenizer,
                                   system_prompt=recipe.data.system_prompt, label_mode=recipe.data.label_mode)
    count = _image_tokens(record, recipe, processor, layout, args.image_size)
    ids, labels = expand_image_tokens(rendered.input_ids, rendered.labels, processor.image_token_id,
                                      [count] if count is not None else [])
    out = {"text": rendered.text, "input_ids": ids, "labels": labels, "image_tokens": count or 0,
           "supervised_tokens": sum(1 for label in labels if label >= 0)}
    if args.json:
        print(json.dumps(out))
    else:
        print(rendered.text)
        print(f"{len(ids)} tokens, {out['supervised_tokens']} supervised, {out['image_tokens']} image tokens")
    return 0
