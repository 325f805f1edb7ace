"""The gate before a push: the folder must load and answer a question about an image."""

from __future__ import annotations

from pathlib import Path

from llava.errors import KitError

QUESTION = "What colour is the shape?"


def probe_image():
    """A generated picture (no file needed): a red disc on a grey background."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((24, 24, 72, 72), fill=(220, 30, 30))
    return image


def check_loads_and_generates(folder: str | Path, max_new_tokens: int = 4) -> str:
    """Load `folder` as contracts.md's inference API does, generate a few tokens; return the text.

    Refuses (KitError) when loading fails, the logits are not finite (broken weights), or the answer is
    empty (nothing new, or only end-of-turn/special tokens).
    """
    import torch

    from llava.model.checkpoint import load_for_inference

    folder = Path(folder)
    try:
        model, processor = load_for_inference(folder)
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": "<image>\n" + QUESTION}]}],
            add_generation_prompt=True,
        )
        inputs = processor(images=probe_image(), text=prompt, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
            output = model.generate(**inputs, max_new_tokens=max_new_tokens)
    except KitError:
        raise
    except Exception as err:  # any failure here means the checkpoint cannot serve: refuse, say why
        raise KitError(f"{folder} failed the load-and-generate check: {type(err).__name__}: {err}") from err
    if not torch.isfinite(logits).all():
        raise KitError(f"{folder} failed the load-and-generate check: the model's logits contain NaN or inf")
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    if new_tokens.numel() == 0:
        raise KitError(f"{folder} failed the load-and-generate check: generate() returned no new token")
    answer = processor.batch_decode(new_tokens, skip_special_tokens=True)[0]
    if not answer.strip():
        raise KitError(f"{folder} failed the load-and-generate check: the answer to {QUESTION!r} is empty "
                       f"(generated token ids {new_tokens[0].tolist()}: only end-of-turn or special tokens)")
    return answer
