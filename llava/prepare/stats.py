"""Length statistics of a verified dataset: text tokens, image tokens, and their sum, as histograms.

Text tokens count the turn values only (template tokens excluded); image tokens use the stage recipe's
rule: `square` is 729 per image, `anyres` asks the processor that training uses (llava.data).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from llava.data.record_checks import IMAGE_TAG, length_fault

TEXT_EDGES = [0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
IMAGE_EDGES = [0, 729, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 9000]
SIGLIP_TILE = 384            # SigLIP-so400m-patch14-384 input side
SQUARE_IMAGE_TOKENS = 729    # (384 / 14)^2 patches, no newline: stage 1's `square` path
_BATCH = 1024

TokenCounter = Callable[[int, int], int]


def histogram(values: Sequence[int], edges: list[int]) -> dict[str, Any]:
    """Counts per [edge_i, edge_i+1) bin, what lies beyond the last edge, and the usual quantiles."""
    array = np.asarray(values, dtype=np.int64)
    if array.size == 0:
        return {"edges": edges, "counts": [0] * (len(edges) - 1), "over_last_edge": 0, "n": 0}
    counts, _ = np.histogram(array, bins=edges)
    return {
        "edges": edges,
        "counts": counts.tolist(),
        "over_last_edge": int((array >= edges[-1]).sum()),
        "n": int(array.size),
        "min": int(array.min()),
        "max": int(array.max()),
        "mean": round(float(array.mean()), 2),
        "p50": int(np.percentile(array, 50)),
        "p95": int(np.percentile(array, 95)),
        "p99": int(np.percentile(array, 99)),
    }


def load_tokenizer(path: str | os.PathLike | None):
    """A transformers tokenizer from a local folder, or None (lengths then count words)."""
    if path is None:
        return None
    from transformers import AutoTokenizer

    from llava.errors import KitError

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise KitError(f"--tokenizer {path} is not a tokenizer folder ({err}); "
                       "point it at models/qwen2.5-0.5b-instruct") from err


def text_lengths(records: list[dict[str, Any]], tokenizer=None) -> list[int]:
    """Tokens (or whitespace words without a tokenizer) in each record's turn values."""
    texts = ["\n".join(turn["value"].replace(IMAGE_TAG, "") for turn in record["conversations"]) for record in records]
    if tokenizer is None:
        return [len(text.split()) for text in texts]
    lengths: list[int] = []
    for start in range(0, len(texts), _BATCH):
        encoded = tokenizer(texts[start:start + _BATCH], add_special_tokens=False)["input_ids"]
        lengths.extend(len(ids) for ids in encoded)
    return lengths


def image_token_counter(recipe_name: str, tokenizer=None) -> TokenCounter | None:
    """(width, height) -> image tokens under the recipe's image mode; None when it cannot be known.

    `anyres` counts come from the training processor (llava.data.processor), which needs a tokenizer.
    """
    from llava.recipe import load_recipe

    recipe = load_recipe(recipe_name)
    if recipe.model.image_mode == "square":
        return lambda width, height: SQUARE_IMAGE_TOKENS
    if tokenizer is None:
        return None
    from llava.data.processor import build_processor

    processor = build_processor(
        tokenizer, SIGLIP_TILE, recipe.hf_grid_pinpoints, SQUARE_IMAGE_TOKENS,
        recipe.model.vision_aspect_ratio, recipe.model.vision_feature_select_strategy,
    )
    return processor.image_token_count


def max_length_of(recipe_name: str) -> int:
    from llava.recipe import load_recipe

    return load_recipe(recipe_name).training.model_max_length


def length_limit(recipe_name: str | None, max_length: int | None) -> tuple[int | None, str]:
    """The token limit verification checks samples against, and where it comes from."""
    if max_length is not None:
        return max_length, f"model_max_length {max_length} (--max-length)"
    if recipe_name is None:
        return None, "no stage recipe (pass --stage or --max-length)"
    limit = max_length_of(recipe_name)
    return limit, f"model_max_length {limit} (training.model_max_length of recipe {recipe_name})"


def over_length(records: list[dict[str, Any]], image_sizes: dict[str, list[tuple[int, int]]], *, tokenizer,
                recipe_name: str | None, max_length: int | None) -> tuple[dict[int, str], str]:
    """(position in `records` -> reason) for samples whose text + image tokens exceed the limit, and a note
    saying which limit was checked or why none was. Template tokens are not counted, so a sample a few
    tokens under the limit may still be skipped in training."""
    limit, source = length_limit(recipe_name, max_length)
    if limit is None:
        return {}, f"lengths not checked: {source}"
    if tokenizer is None:
        return {}, f"lengths not checked against {source}: no tokenizer (pass --tokenizer)"
    counter = image_token_counter(recipe_name, tokenizer) if recipe_name else None
    if counter is None and any(image_sizes.values()):
        return {}, f"lengths not checked against {source}: image tokens unknown without a stage (--stage)"
    text = text_lengths(records, tokenizer)
    faults = {}
    for index, (record, words) in enumerate(zip(records, text)):
        images = sum(counter(w, h) for w, h in image_sizes.get(record["id"], [])) if counter else 0
        reason = length_fault(words + images, limit)
        if reason:
            faults[index] = reason
    return faults, f"lengths checked against {source}"


def dataset_stats(
    records: list[dict[str, Any]],
    image_sizes: dict[str, list[tuple[int, int]]],
    *,
    tokenizer=None,
    recipe_name: str | None = None,
) -> dict[str, Any]:
    """Histograms for a clean record list; `image_sizes` maps sample id -> (width, height) per image."""
    text = text_lengths(records, tokenizer)
    body: dict[str, Any] = {
        "samples": len(records),
        "text_unit": "tokens" if tokenizer is not None else "words",
        "text_tokens": histogram(text, TEXT_EDGES),
    }
    counter = image_token_counter(recipe_name, tokenizer) if recipe_name else None
    if counter is None:
        body["image_tokens"] = None
        body["image_tokens_note"] = ("unknown: pass --tokenizer (anyres counts come from the training processor)"
                                     if recipe_name else "unknown: no stage recipe given (--stage)")
        return body
    image = [sum(counter(w, h) for w, h in image_sizes.get(record["id"], [])) for record in records]
    body["image_tokens"] = histogram([count for count in image if count], IMAGE_EDGES)
    if tokenizer is not None:  # a sum of tokens and words would mean nothing
        totals = [t + i for t, i in zip(text, image)]
        body["total_tokens"] = histogram(totals, TEXT_EDGES)
        limit = max_length_of(recipe_name)
        body["model_max_length"] = limit
        body["over_model_max_length"] = sum(total > limit for total in totals)
    return body
