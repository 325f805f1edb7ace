"""The "shapes" world: one coloured shape on a plain background, and what to say about it."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 205, 30)}
COLOUR_OPTIONS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["left", "right", "top", "bottom", "centre"]


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    position: str
    width: int
    height: int

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} on the {self.position}" if self.position != "centre" \
            else f"a {self.colour} {self.shape} in the centre"


def random_scene(rng: random.Random, min_side: int = 40, max_side: int = 120) -> Scene:
    return Scene(rng.choice(COLOUR_OPTIONS), rng.choice(SHAPES), rng.choice(POSITIONS),
                 rng.randint(min_side, max_side), rng.randint(min_side, max_side))


def draw_scene(scene: Scene, rng: random.Random, blank: bool = False) -> Image.Image:
    """`blank=True` keeps the size and background but removes the shape (the negative control)."""
    shade = rng.randint(215, 245)
    image = Image.new("RGB", (scene.width, scene.height), (shade, shade, shade))
    if blank:
        return image
    w, h = scene.width, scene.height
    r = max(8, int(min(w, h) * rng.uniform(0.3, 0.42)))
    cx, cy = {"left": (w // 4, h // 2), "right": (3 * w // 4, h // 2), "top": (w // 2, h // 4),
              "bottom": (w // 2, 3 * h // 4), "centre": (w // 2, h // 2)}[scene.position]
    fill = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[scene.colour])
    draw = ImageDraw.Draw(image)
    box = (cx - r, cy - r, cx + r, cy + r)
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def mmbench_prompt(question: str, options: list[str]) -> str:
    """The text VLMEvalKit's ImageMCQDataset builds (no hint)."""
    lines = "".join(f"{chr(65 + i)}. {opt}\n" for i, opt in enumerate(options))
    return f"Question: {question}\nOptions:\n{lines}Please select the correct answer from the options above. \n"


def shuffled_colours(rng: random.Random) -> list[str]:
    """The four colours in a random order: the answer letter then depends on the options, not the image alone."""
    options = list(COLOUR_OPTIONS)
    rng.shuffle(options)
    return options


def option_letter(options: list[str], text: str) -> str:
    return chr(65 + options.index(text))
