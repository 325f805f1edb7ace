"""A saved checkpoint's AutoProcessor gives the training processor's pixels, bit for bit.

Training builds `LlavaOnevisionImageProcessorPil` (llava/data/processor.py). Here the processor files are
written by the kit's own `save_processor`, then loaded back the way outside code loads them
(`AutoImageProcessor` / `AutoProcessor`): without torchvision in the kit's environment, and with
torchvision in the VLMEvalKit test venv (tests/vlmevalkit_env.py), where the kit's
`use_training_image_processor()` is what makes transformers pick the same class.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor

from llava.data.processor import build_processor, load_processor, save_processor
from llava.recipe import STAGES_DIR, load_recipe

# sizes that exercise every anyres path of the smoke grid: upscale, downscale, tall, wide, exact tile
SIZES = [(40, 70), (120, 33), (56, 56), (200, 150), (17, 300), (168, 112)]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in SIZES]
    smooth = [Image.linear_gradient("L").resize((w, h)).convert("RGB") for w, h in SIZES]
    return noise + smooth


@pytest.fixture(scope="module")
def saved_processor(tiny_tokenizer, tmp_path_factory) -> Path:
    """The smoke stage-2 processor (anyres_max_9 on a 3x3 grid of 56-px tiles), saved as a checkpoint saves it."""
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", [])
    processor = build_processor(tiny_tokenizer, 56, recipe.hf_grid_pinpoints, 16, recipe.model.vision_aspect_ratio)
    folder = tmp_path_factory.mktemp("ckpt")
    save_processor(processor, folder)
    return folder


def test_saved_files_name_the_training_image_processor(saved_processor: Path) -> None:
    config = json.loads((saved_processor / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "LlavaOnevisionImageProcessorPil"
    assert json.loads((saved_processor / "processor_config.json").read_text())["processor_class"] == \
        "LlavaOnevisionProcessor"


def test_auto_image_processor_without_torchvision_gives_training_pixels(saved_processor: Path) -> None:
    training = load_processor(saved_processor).image_processor
    auto = AutoImageProcessor.from_pretrained(saved_processor)
    assert type(auto) is type(training)
    for image in images():
        want = training(image, return_tensors="pt")["pixel_values"]
        got = auto(image, return_tensors="pt")["pixel_values"]
        assert torch.equal(got, want), image.size


def test_auto_processor_without_torchvision_names_what_to_install(saved_processor: Path) -> None:
    """transformers' LlavaOnevisionProcessor has a video slot that needs torchvision (docs/evaluation.md)."""
    if _has_torchvision():
        pytest.fail("the kit's environment is meant to have no torchvision (docs/environment.md)")
    with pytest.raises(ImportError, match="Torchvision"):
        AutoProcessor.from_pretrained(saved_processor)


def _has_torchvision() -> bool:
    import importlib.util
    return importlib.util.find_spec("torchvision") is not None


# Runs in the VLMEvalKit venv (torchvision installed): pixels of AutoProcessor before and after the kit's
# registration, against the training processor, per image.
COMPARE = textwrap.dedent('''
    import json, sys
    import numpy as np, torch, transformers.utils.import_utils as iu
    from PIL import Image
    from transformers import AutoProcessor
    from llava.data.processor import load_processor, use_training_image_processor
    folder, sizes = sys.argv[1], json.loads(sys.argv[2])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    images += [Image.linear_gradient("L").resize((w, h)).convert("RGB") for w, h in sizes]
    training = load_processor(folder).image_processor
    def diffs(processor):
        out = []
        for image in images:
            a = processor.image_processor(image, return_tensors="pt")["pixel_values"]
            b = training(image, return_tensors="pt")["pixel_values"]
            out.append(float((a - b).abs().max()) if a.shape == b.shape else None)
        return type(processor.image_processor).__name__, out
    before = diffs(AutoProcessor.from_pretrained(folder))
    use_training_image_processor()
    after = diffs(AutoProcessor.from_pretrained(folder))
    print(json.dumps({"torchvision": iu.is_torchvision_available(), "before": before, "after": after}))
''')


@pytest.mark.timeout(1800)
def test_auto_processor_with_torchvision_gives_training_pixels(saved_processor: Path) -> None:
    from vlmevalkit_env import vlmevalkit_python
    out = subprocess.run([str(vlmevalkit_python()), "-c", COMPARE, str(saved_processor), json.dumps(SIZES)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torchvision"] is True
    # negative control: transformers alone picks its torchvision backend, and its pixels differ
    name, before = result["before"]
    assert name == "LlavaOnevisionImageProcessor" and max(before) > 1 / 255
    name, after = result["after"]
    assert name == "LlavaOnevisionImageProcessorPil" and after == [0.0] * len(after)
