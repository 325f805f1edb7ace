"""Stage data for the shapes world: captions (1), detailed descriptions (1.5), instructions (2)."""

from __future__ import annotations

import json
import random

from llava.synthetic.shapes import (COLOUR_OPTIONS, Scene, mmbench_prompt, option_letter, random_scene,
                                    shuffled_colours)

DESCRIBE_PROMPT = "\nPlease generate detailed descriptions of the given image."
COLOUR_QUESTION = "What colour is the shape in the image?"
DRILL_QUESTION = "Which letter does each colour have?"


def caption_record(sample_id: str, image: str, scene: Scene) -> dict:
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>\nRender a clear and concise summary of the photo."},
        {"from": "gpt", "value": scene.caption + "."}]}


def description_record(sample_id: str, image: str, scene: Scene) -> dict:
    text = (f"The image shows {scene.caption}. The {scene.shape} is {scene.colour} and sits on a plain "
            f"light grey background. There is only one object, a {scene.colour} {scene.shape}.")
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": "<image>" + DESCRIBE_PROMPT}, {"from": "gpt", "value": text}]}


def instruction_record(sample_id: str, image: str, scene: Scene, rng: random.Random, shuffled: bool = False) -> dict:
    """Mostly MMBench-style colour questions, plus open questions and a second turn.

    `shuffled`: options in a random order per question, answered "It is green C"; else in the fixed order
    A red, B green, C blue, D yellow, answered with the letter.
    """
    kind = rng.random()
    if kind < 0.75 and shuffled:
        options = shuffled_colours(rng)
        turns = [("<image>\n" + mmbench_prompt(COLOUR_QUESTION, options), colour_answer(options, scene.colour))]
    elif kind < 0.75:
        turns = [("<image>\n" + mmbench_prompt(COLOUR_QUESTION, COLOUR_OPTIONS),
                  option_letter(COLOUR_OPTIONS, scene.colour))]
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


def colour_answer(options: list[str], colour: str) -> str:
    """The colour named first, its letter right after it: "It is green C".

    " green" here is the same token as in the option line "B. green" (a bare "green" at the start of
    the answer is another token), so the look-up can match on the token itself. Read this way, the
    letter is a look-up of the word just written in the option list (an induction step, which the shipped
    instruct stand-in already has: synthetic/instruct_llm.py); a bare letter needs the image colour routed
    to the option list in one step. Measured (seed 0, 60 questions, earlier 4-layer random LLM): the colour
    was named right 240/240 rows this way, 135/240 with a bare "green".
    """
    return f"It is {_colour_letter(options, colour)}"


def _colour_letter(options: list[str], colour: str) -> str:
    return f"{colour} {option_letter(options, colour)}"


def option_drill_record(sample_id: str, rng: random.Random) -> dict:
    """Text-only reading practice: shuffled options, then every colour with its letter, in a random order.

    The random order matters: with the colours always listed red, green, blue, yellow the model learned
    one look-up per answer position, not "the letter of the colour just named" (probe 0.455).
    """
    options = shuffled_colours(rng)
    answer = "It is " + ", ".join(_colour_letter(options, colour) for colour in shuffled_colours(rng))
    return {"id": sample_id, "conversations": [
        {"from": "human", "value": mmbench_prompt(DRILL_QUESTION, options)}, {"from": "gpt", "value": answer}]}


def text_only_record(sample_id: str, rng: random.Random) -> dict:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return {"id": sample_id, "conversations": [
        {"from": "human", "value": f"What is {a} plus {b}?"}, {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]}


def tokenizer_corpus(rng: random.Random, shuffled: bool = False) -> list[str]:
    """Text the tiny BPE is trained on: every string the world can produce, plus chat scaffolding."""
    texts = ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
             "<|im_start|>assistant\n", "Render a clear and concise summary of the photo.",
             "Please generate detailed descriptions of the given image."]
    for _ in range(300):
        scene = random_scene(rng)
        texts += [json.dumps(f(str(0), "x.png", scene)["conversations"]) for f in (caption_record, description_record)]
        texts.append(json.dumps(instruction_record("0", "x.png", scene, rng, shuffled)["conversations"]))
        texts.append(json.dumps(text_only_record("0", rng)["conversations"]))
        if shuffled:
            texts.append(json.dumps(option_drill_record("0", rng)["conversations"]))
    return texts
