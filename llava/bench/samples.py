"""Synthetic training samples shaped like a stage's data (stage_data.yaml), written as token ids.

Items have the training dataset's format ({input_ids, labels, pixel_values, image_size}) and go
through the real image pipeline (JPEG decode + SquareImages/AnyresImages), so the dataloader does the
work it does in training. Labels follow the original's rule for the recipe's template: `plain`
supervises the caption; `qwen_1_5` (label_mode original) supervises assistant turns plus every
<|im_start|>, <|im_end|> and newline of the other turns.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from llava.bench.shapes import TokenIds
from llava.data.templates import IGNORE_INDEX, expand_image_tokens
from llava.errors import KitError
from llava.typed_config import read_packaged

STAGE_DATA_FILE = Path(__file__).with_name("stage_data.yaml")
REAL_TILE = 384  # stage_data.yaml sizes are real pixels; tiny tiles scale them down
SYSTEM_TOKENS = 6  # "You are a helpful assistant."


@dataclass(frozen=True)
class SampleSpec:
    component: str
    image: tuple[int, int] | None      # (width, height), already scaled to the model's tile
    turns: tuple[tuple[int, int], ...]  # (user tokens, assistant tokens) per exchange


def load_stage_data(stage: str) -> tuple[dict, dict]:
    body = read_packaged(STAGE_DATA_FILE)
    if stage not in body["stages"]:
        raise KitError(f"{STAGE_DATA_FILE}: no data shapes for stage {stage!r}; known: {sorted(body['stages'])}")
    return body["stages"][stage], body["image_sets"]


def _length(rng: np.random.Generator, dist: dict) -> int:
    value = dist["median"] * float(np.exp(rng.normal(0.0, dist["sigma"])))
    return int(np.clip(round(value), dist["min"], dist["max"]))


def _image(rng: np.random.Generator, sizes: list, scale: float) -> tuple[int, int]:
    weights = np.array([s[2] for s in sizes], dtype=float)
    w, h, _ = sizes[rng.choice(len(sizes), p=weights / weights.sum())]
    return max(8, round(w * scale)), max(8, round(h * scale))


def draw_specs(stage: str, count: int, seed: int, tile: int = REAL_TILE) -> list[SampleSpec]:
    """`count` samples from the stage's mixture, deterministic for a seed."""
    data, image_sets = load_stage_data(stage)
    components = data["components"]
    weights = np.array([c["weight"] for c in components], dtype=float)
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(count):
        comp = components[rng.choice(len(components), p=weights / weights.sum())]
        image = _image(rng, image_sets[comp["images"]], tile / REAL_TILE) if comp["images"] else None
        n_turns = int(rng.integers(comp["turns"][0], comp["turns"][1] + 1))
        turns = tuple((_length(rng, comp["user"]), _length(rng, comp["assistant"])) for _ in range(n_turns))
        specs.append(SampleSpec(comp["name"], image, turns))
    return specs


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    """A photo-like JPEG (smooth colour bands + mild noise): decodes like a real photo, unlike noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 37 + seed), 128 + 100 * np.cos(y / 53), 128 + 60 * np.sin((x + y) / 91)], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


class StageDataset(Dataset):
    """Samples from specs; text ids are drawn per index, so every run sees identical data."""

    def __init__(self, specs: list[SampleSpec], tokens: TokenIds, pipeline, *, template: str,
                 label_mode: str, image_mode: str, max_length: int, seed: int):
        self.tokens, self.pipeline, self.template, self.label_mode = tokens, pipeline, template, label_mode
        self.image_mode, self.seed = image_mode, seed
        self.specs = [self._fit(spec, max_length) for spec in specs]
        self.jpegs = {size: photo_jpeg(*size, seed=i) for i, size in enumerate(sorted({s.image for s in self.specs if s.image}))}

    def __len__(self) -> int:
        return len(self.specs)

    def image_tokens(self, size: tuple[int, int] | None) -> int:
        if size is None:
            return 0
        if self.image_mode == "square":
            return self.pipeline.max_tokens()
        return self.pipeline.processor.image_token_count(*size)

    def sample_tokens(self, spec: SampleSpec) -> int:
        """Length of the sample's input_ids once its image is expanded."""
        ids, _ = self._render(spec, np.random.default_rng(0))
        return len(ids) - (1 if spec.image else 0) + self.image_tokens(spec.image)

    def _fit(self, spec: SampleSpec, max_length: int) -> SampleSpec:
        """Drop trailing exchanges, then shorten the answer, until the sample fits model_max_length."""
        while self.sample_tokens(spec) > max_length:
            if len(spec.turns) > 1:
                spec = SampleSpec(spec.component, spec.image, spec.turns[:-1])
                continue
            (user, answer), = spec.turns
            excess = self.sample_tokens(spec) - max_length
            if answer - excess < 1:
                raise KitError(f"a {spec.component} sample cannot fit model_max_length {max_length}")
            spec = SampleSpec(spec.component, spec.image, ((user, answer - excess),))
        return spec

    def summary(self) -> dict:
        """What the synthetic set holds: mix, image-token counts per size, sequence lengths."""
        lengths = [self.sample_tokens(spec) for spec in self.specs]
        sizes = sorted({spec.image for spec in self.specs if spec.image})
        return {"samples": len(self.specs), "text_only": sum(1 for s in self.specs if not s.image),
                "components": dict(Counter(spec.component for spec in self.specs)),
                "image_tokens_by_size": {f"{w}x{h}": self.image_tokens((w, h)) for w, h in sizes},
                "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths)}

    def modality_lengths(self) -> list[int]:
        """Text length, negative for text-only samples: the sampler's convention."""
        return [max(1, sum(u + a for u, a in s.turns)) * (1 if s.image else -1) for s in self.specs]

    def _text(self, rng: np.random.Generator, n: int) -> list[int]:
        low, high = self.tokens.text
        return rng.integers(low, high, size=n).tolist()

    def _render(self, spec: SampleSpec, rng: np.random.Generator) -> tuple[list[int], list[int]]:
        t = self.tokens
        if self.template == "plain":
            caption = self._text(rng, spec.turns[0][1]) + [t.newline]
            return [t.image] + caption, [IGNORE_INDEX] + caption
        ids, labels = [], []
        system = [t.im_start, *t.system, t.newline, *self._text(rng, SYSTEM_TOKENS), t.im_end, t.newline]
        self._append(ids, labels, system, supervised=False)
        for k, (user, answer) in enumerate(spec.turns):
            media = [t.image, t.newline] if (k == 0 and spec.image) else []
            self._append(ids, labels, [t.im_start, *t.user, t.newline, *media, *self._text(rng, user), t.im_end, t.newline],
                         supervised=False)
            body = self._text(rng, answer)
            turn = [t.im_start, *t.assistant, t.newline, *body, t.im_end, t.newline]
            if self.label_mode == "original":
                self._append(ids, labels, turn, supervised=True)
            else:
                ids += turn
                head = 1 + len(t.assistant) + 1
                labels += [IGNORE_INDEX] * head + body + [t.im_end, IGNORE_INDEX]
        return ids, labels

    def _append(self, ids: list[int], labels: list[int], turn: list[int], *, supervised: bool) -> None:
        """Non-assistant turns: the original supervises only <|im_start|>, <|im_end|> and newlines."""
        structural = {self.tokens.im_start, self.tokens.im_end, self.tokens.newline}
        ids += turn
        if supervised:
            labels += turn
        elif self.label_mode == "original":
            labels += [tok if tok in structural else IGNORE_INDEX for tok in turn]
        else:
            labels += [IGNORE_INDEX] * len(turn)

    def __getitem__(self, index: int) -> dict:
        spec = self.specs[index]
        ids, labels = self._render(spec, np.random.default_rng([self.seed, index]))
        if spec.image is None:
            return {"input_ids": ids, "labels": labels}
        with Image.open(io.BytesIO(self.jpegs[spec.image])) as image:
            image.load()
            processed = self.pipeline.process(image)
        ids, labels = expand_image_tokens(ids, labels, self.tokens.image, [processed.num_tokens])
        return {"pixel_values": processed.pixel_values, "image_size": processed.image_size,
                "input_ids": ids, "labels": labels}
