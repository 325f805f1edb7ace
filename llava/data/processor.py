"""The image+text processor that training and inference share, saved so `AutoProcessor` loads it.

This module owns the processor: building it for a recipe or a model config, saving it with a
checkpoint, loading it back (llava/model uses these; nothing here imports llava/model).

transformers' `LlavaOnevisionProcessor` insists on a video processor, which needs torchvision; the CPU
stack has none. `ImageOnlyOnevisionProcessor` is the same processor minus the video slot (token
counting and prompt expansion are inherited unchanged), and `save_processor` writes files that name
`LlavaOnevisionProcessor`, so machines with torchvision (VLMEvalKit's HF path) load the standard class.

Pixels: training uses the PIL image processor (bit-exact with LLaVA-NeXT's own preprocessing). The saved
`image_processor_type` names that class, and on a machine without torchvision `AutoImageProcessor`
builds it. With torchvision installed, transformers 5.x picks its torchvision backend whatever the
files say (`_resolve_backend` reads the backend from the call's arguments only; `backend="pil"` fails
on the video slot), and that backend resizes differently (up to 10 grey levels on noisy images).
`use_training_image_processor()` registers the PIL class for LlavaOnevision configs through
transformers' public `AutoImageProcessor.register`, so `AutoProcessor.from_pretrained(ckpt)` in that
process builds exactly the training processor; the VLMEvalKit launcher calls it before run.py starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import (AutoConfig, AutoImageProcessor, AutoTokenizer, LlavaOnevisionConfig,
                          LlavaOnevisionProcessor, SiglipVisionConfig)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)
from transformers.processing_utils import ProcessorMixin

from llava.errors import KitError

# Renders the seed's qwen_1_5 conversation: a default system turn, then ChatML turns. Images become
# "<image>\n" before the text, as LLaVA-NeXT's relocation rule leaves them.
QWEN_1_5_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}{{ '<image>\\n' }}{%- endif -%}{%- endfor -%}"
    "{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

IMAGE_MEAN = [0.5, 0.5, 0.5]  # SigLIP's; the class defaults are OpenAI-CLIP's and would be wrong
IMAGE_STD = [0.5, 0.5, 0.5]
MEDIA_TOKENS = ("<image>", "<video>")
# What the saved preprocessor_config.json names: the class training uses (see module docstring).
SAVED_IMAGE_PROCESSOR_TYPE = LlavaOnevisionImageProcessorPil.__name__


class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without the video slot (see module docstring)."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens=None,
        vision_feature_select_strategy=None,
        chat_template=None,
        image_token="<image>",
        video_token="<video>",
        vision_aspect_ratio="anyres_max_9",
        **kwargs,
    ):
        self.num_image_tokens = num_image_tokens
        self.vision_feature_select_strategy = vision_feature_select_strategy
        self.image_token = image_token
        self.video_token = video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(video_token)
        self.vision_aspect_ratio = vision_aspect_ratio
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def image_token_count(self, width: int, height: int) -> int:
        """Tokens one single image of this size becomes in the anyres path (base tile + grid + newlines)."""
        tile = self.image_processor.size["height"]
        return self._get_number_of_features(height, width, tile, tile)


def build_image_processor(tile: int, hf_pinpoints: list[list[int]]) -> LlavaOnevisionImageProcessorPil:
    """PIL backend: bit-exact with the original LLaVA-NeXT pixels (the torchvision one is not)."""
    return LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        image_grid_pinpoints=hf_pinpoints or [[tile, tile]],
        resample=3,
        do_pad=True,
        do_convert_rgb=True,
    )


def build_processor(tokenizer, tile: int, hf_pinpoints: list[list[int]], num_image_tokens: int,
                    vision_aspect_ratio: str = "anyres_max_9",
                    select_strategy: str = "full") -> ImageOnlyOnevisionProcessor:
    """The processor from its settings; `processor_for`/`recipe_processor` derive them from a model."""
    return ImageOnlyOnevisionProcessor(
        image_processor=build_image_processor(tile, hf_pinpoints),
        tokenizer=tokenizer,
        num_image_tokens=num_image_tokens,
        vision_feature_select_strategy=select_strategy,
        chat_template=QWEN_1_5_CHAT_TEMPLATE,
        vision_aspect_ratio=vision_aspect_ratio,
    )


def save_processor(processor: ImageOnlyOnevisionProcessor, out_dir: str | Path) -> None:
    """Write processor files that transformers' AutoProcessor reads as LlavaOnevisionProcessor."""
    out = Path(out_dir)
    processor.save_pretrained(out)
    image_cfg = processor.image_processor.to_dict()
    image_cfg["image_processor_type"] = SAVED_IMAGE_PROCESSOR_TYPE
    image_cfg["processor_class"] = "LlavaOnevisionProcessor"
    (out / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2, sort_keys=True))
    proc_path = out / "processor_config.json"
    proc_cfg = json.loads(proc_path.read_text()) if proc_path.is_file() else {}
    proc_cfg.pop("image_processor", None)
    proc_cfg.update({
        "processor_class": "LlavaOnevisionProcessor",
        "num_image_tokens": processor.num_image_tokens,
        "vision_feature_select_strategy": processor.vision_feature_select_strategy,
        "vision_aspect_ratio": processor.vision_aspect_ratio,
        "image_token": processor.image_token,
        "video_token": processor.video_token,
    })
    proc_path.write_text(json.dumps(proc_cfg, indent=2, sort_keys=True))
    tile = image_cfg["size"]["height"]
    # The video slot LlavaOnevisionProcessor requires; never used by this kit.
    video_cfg = {
        "video_processor_type": "LlavaOnevisionVideoProcessor",
        "processor_class": "LlavaOnevisionProcessor",
        "size": {"height": tile, "width": tile},
        "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD,
        "resample": 3, "rescale_factor": 1 / 255, "do_resize": True, "do_rescale": True,
        "do_normalize": True, "do_convert_rgb": True, "do_sample_frames": False,
    }
    (out / "video_preprocessor_config.json").write_text(json.dumps(video_cfg, indent=2, sort_keys=True))


def load_processor(folder: str | Path) -> ImageOnlyOnevisionProcessor:
    """Load what `save_processor` wrote, with the PIL image backend, no torchvision needed."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    image_processor = LlavaOnevisionImageProcessorPil.from_pretrained(folder)
    cfg = json.loads((folder / "processor_config.json").read_text())
    template_file = folder / "chat_template.jinja"
    chat_template = template_file.read_text() if template_file.is_file() else cfg.get("chat_template")
    return ImageOnlyOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=cfg["num_image_tokens"],
        vision_feature_select_strategy=cfg.get("vision_feature_select_strategy", "full"),
        chat_template=chat_template,
        image_token=cfg.get("image_token", "<image>"),
        video_token=cfg.get("video_token", "<video>"),
        vision_aspect_ratio=cfg.get("vision_aspect_ratio", "anyres_max_9"),
    )


def use_training_image_processor() -> None:
    """Make AutoImageProcessor/AutoProcessor build the PIL class for LlavaOnevision in this process.

    Needed only where torchvision is installed (see module docstring); harmless elsewhere.
    """
    classes = {"torchvision": LlavaOnevisionImageProcessorPil, "pil": LlavaOnevisionImageProcessorPil}
    AutoImageProcessor.register(LlavaOnevisionConfig, image_processor_classes=classes, exist_ok=True)


def add_media_tokens(tokenizer) -> None:
    """<image> and <video> as special tokens (the Qwen tokenizer has neither)."""
    missing = [t for t in MEDIA_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)


def vision_tower_config(folder: Path, keep_layers: int) -> SiglipVisionConfig:
    """The SigLIP config cut to the recipe's layers, without the pooling head LLaVA never uses."""
    config = SiglipVisionConfig.from_pretrained(folder)
    if keep_layers > config.num_hidden_layers:
        raise KitError(f"recipe keeps {keep_layers} vision layers but {folder} has {config.num_hidden_layers}")
    config.num_hidden_layers = keep_layers
    config.vision_use_head = False
    return config


def _from_vision(tokenizer, vision, pinpoints, aspect_ratio: str, strategy: str) -> ImageOnlyOnevisionProcessor:
    per_side = vision.image_size // vision.patch_size
    return build_processor(tokenizer, vision.image_size, pinpoints or [[vision.image_size] * 2],
                           per_side * per_side, aspect_ratio, strategy)


def processor_for(config, tokenizer) -> ImageOnlyOnevisionProcessor:
    """The processor that matches a LlavaOnevision config."""
    return _from_vision(tokenizer, config.vision_config, config.image_grid_pinpoints,
                        config.vision_aspect_ratio, config.vision_feature_select_strategy)


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else the error that says which input of the recipe is missing."""
    if not path.is_dir():
        raise KitError(f"{what} folder {path} does not exist (run `llava-kit prepare` or fix the recipe's init)")
    return path


def recipe_processor(recipe, layout, tokenizer_dir: Path | None = None) -> ImageOnlyOnevisionProcessor:
    """Tokenizer + image processor for a recipe, reading configs only (no weights)."""
    if recipe.init.from_checkpoint:
        source = require_dir(layout.resolve(recipe.init.from_checkpoint), "previous-stage checkpoint")
        vision = AutoConfig.from_pretrained(source).vision_config
    else:
        source = require_dir(layout.resolve(recipe.init.llm), "LLM")
        vision = vision_tower_config(require_dir(layout.resolve(recipe.init.vision_tower), "vision tower"),
                                     recipe.model.vision_layers)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or source)
    add_media_tokens(tokenizer)
    return _from_vision(tokenizer, vision, recipe.hf_grid_pinpoints, recipe.model.vision_aspect_ratio,
                        recipe.model.vision_feature_select_strategy)
