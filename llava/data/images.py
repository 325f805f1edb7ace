"""Image -> pixels + token count, for the two feature paths a recipe can name.

`square` (stage 1): one squash-resized tile, 729 tokens, no newline — LLaVA's default path, which
transformers' pixel path cannot express, so the model gets its features through `mm_encoder_outputs`.
`anyres` (stages 1.5/2): transformers' own processor, configured to match the original.

A sample with several images takes the original's pad mode instead (recipe-semantics §i): each image
padded to a square with the mean colour, then resized to one tile; 729 tokens each, plus the image
newline where the features are spatially merged (anyres: 730, as transformers' processor counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from llava.data.image_files import to_rgb
from llava.data.processor import IMAGE_MEAN, IMAGE_STD, ImageOnlyOnevisionProcessor


@dataclass
class ProcessedImage:
    pixel_values: torch.Tensor      # square: (3, S, S); anyres: (tiles, 3, S, S)
    image_size: tuple[int, int]     # (height, width) of the original
    num_tokens: int


def pad_to_square(image: Image.Image, image_processor) -> Image.Image:
    """The original's expand2square: centred on a square of the mean colour (transformers' own padding)."""
    rgb = np.asarray(to_rgb(image)).transpose(2, 0, 1)
    background = tuple(int(x * 255) for x in image_processor.image_mean)
    return Image.fromarray(image_processor.pad_to_square(rgb, background_color=background).transpose(1, 2, 0))


class SquareImages:
    """Squash to the tile size (bicubic), rescale, normalise: tile 0 of the anyres output."""
    batch_key = "square_pixel_values"

    def __init__(self, processor: ImageOnlyOnevisionProcessor):
        self.image_processor = processor.image_processor
        self.tile = processor.image_processor.size["height"]
        self.num_tokens = processor.num_image_tokens

    def process(self, image: Image.Image) -> ProcessedImage:
        rgb = to_rgb(image)
        resized = np.asarray(rgb.resize((self.tile, self.tile), Image.BICUBIC), dtype=np.float32) / 255.0
        pixels = (resized - np.array(IMAGE_MEAN, dtype=np.float32)) / np.array(IMAGE_STD, dtype=np.float32)
        return ProcessedImage(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(),
                              (rgb.height, rgb.width), self.num_tokens)

    def process_padded(self, images: list[Image.Image]) -> list[ProcessedImage]:
        """Pad mode: flat merge adds no newline, so each image is 729 tokens, as in the original."""
        return [ProcessedImage(self.process(pad_to_square(image, self.image_processor)).pixel_values,
                               (image.height, image.width), self.num_tokens) for image in images]

    def max_tokens(self) -> int:
        return self.num_tokens


class AnyresImages:
    """transformers' LlavaOnevision image processor (PIL backend) and its own token count."""
    batch_key = "pixel_values"

    def __init__(self, processor: ImageOnlyOnevisionProcessor):
        self.processor = processor

    def process(self, image: Image.Image) -> ProcessedImage:
        rgb = to_rgb(image)
        out = self.processor.image_processor(images=[rgb], return_tensors="pt")
        return ProcessedImage(out["pixel_values"][0], (rgb.height, rgb.width),
                              self.processor.image_token_count(rgb.width, rgb.height))

    def process_padded(self, images: list[Image.Image]) -> list[ProcessedImage]:
        """Pad mode, by transformers' processor (a nested image list): one tile + the image newline each."""
        rgb = [to_rgb(image) for image in images]
        out = self.processor.image_processor(images=[rgb], return_tensors="pt")
        tokens = self.processor.num_image_tokens + 1  # + image_newline (the processor's own rule)
        if self.processor.vision_feature_select_strategy == "default":
            tokens -= 1
        return [ProcessedImage(pixels, (image.height, image.width), tokens)
                for pixels, image in zip(out["pixel_values"], rgb)]

    def max_tokens(self) -> int:
        """Largest count over image sizes up to twice the largest grid side, in tile/24-px steps.

        A sweep, because the largest unpadded grid depends on which pinpoint wins for which aspect
        ratio; the tests check it against the reference maxima 3699 (stage 1.5) and 8765 (stage 2).
        """
        tile = self.processor.image_processor.size["height"]
        step = max(1, tile // 24)
        top = 2 * max(max(p) for p in self.processor.image_processor.image_grid_pinpoints)
        sizes = range(step, top + 1, step)
        return max(self.processor.image_token_count(w, h) for w in sizes for h in sizes)


PIPELINES = {"square": SquareImages, "anyres": AnyresImages}


def image_pipeline(image_mode: str, processor: ImageOnlyOnevisionProcessor):
    return PIPELINES[image_mode](processor)


def process_sample_images(pipeline, images: list[Image.Image]) -> list[ProcessedImage]:
    """One image: the recipe's path; several: the original's pad mode for each."""
    if len(images) == 1:
        return [pipeline.process(images[0])]
    return pipeline.process_padded(images)
