"""Stage data for the shapes world: captions (1), detailed descriptions (1.5), instructions (2)."""

from __future__ import annotations

import random

from llava.synthetic.shapes import COLOUR_OPTIONS, Scene, colour_letter, mmbench_prompt

DESCRIBE_PROMPT = "\nPlease generate detailed descriptions of the given image."


def caption_record(sample_id: str, image: str, scene: Scene) -> dict:
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nRender a clear and concise summary of the photo."},
        {"from": "gpt", "value": scene.caption + "."}]}


def description_record(sample_id: str, image: str, scene: Scene) -> dict:
    text = (f"The image shows {scene.caption}. The {scene.shape} is {scene.colour} and sits on a plain "
            f"light grey background. There is only one object, a {scene.colour} {scene.shape}.")
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>" + DESCRIBE_PROMPT}, {"from": "gpt", "value": text}]}


def instruction_record(sample_id: str, image: str, scene: Scene, rng: random.Random) -> dict:
    """Mostly MMBench-style colour questions, plus open questions and a second turn."""
    kind = rng.random()
    if kind < 0.75:
        turns = [("<image>\n" + mmbench_prompt("What colour is the shape in the image?", COLOUR_OPTIONS),
                  colour_letter(scene))]
    elif kind < 0.9:
        turns = [("What colour is the shape?\n<image>", scene.colour),
                 ("And what shape is it?", f"It is a {scene.shape}.")]
    else:
        turns = [("<image>\nWhere is the shape?", f"The {scene.shape} is on the {scene.position}."
                  if scene.position != "centre" else f"The {scene.shape} is in the centre.")]
    conversations = []
    for question, answer in turns:
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": sample_id, "image": image, "conversations": conversations}


def text_only_record(sample_id: str, rng: random.Random) -> dict:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return {"id": sample_id, "conversations": [
        {"from": "human", "value": f"What is {a} plus {b}?"}, {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]}
