"""Conversation templates -> input_ids + labels, reproducing LLaVA-NeXT's `plain` and `qwen_1_5`.

Hand-written: the label rule (recipe-semantics §2.2) is the original's own quirk, which no chat
template or `return_assistant_tokens_mask` reproduces. Each turn is tokenised on its own, as the
original does, so the ids equal the original's exactly. The image stays one placeholder id here;
`expand_image_tokens` widens it once the image's token count is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100
IMAGE_TAG = "<image>"


class TemplateError(ValueError):
    """A conversation the template cannot render; the dataset records it as a skipped sample."""


@dataclass
class Rendered:
    text: str
    input_ids: list[int]
    labels: list[int]
    num_images: int = 0
    segments: list[tuple[str, bool]] = field(default_factory=list)


def relocate_image_tag(value: str) -> str:
    """LLaVA's rule: one `<image>` not at the start moves to the front as "<image>\\n" + stripped text."""
    if value.count(IMAGE_TAG) == 1 and not value.startswith(IMAGE_TAG):
        return IMAGE_TAG + "\n" + value.replace(IMAGE_TAG, "").strip()
    return value


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_plain(conversations: list[dict], tokenizer, **_) -> Rendered:
    """Stage 1: "<image>" + caption + "\\n"; the instruction is discarded, only the caption is learned."""
    if len(conversations) != 2 or IMAGE_TAG not in conversations[0]["value"]:
        raise TemplateError("plain template needs exactly one human turn with <image> and one gpt turn")
    if conversations[0]["value"].count(IMAGE_TAG) > 1:
        raise TemplateError("plain template (stage 1) takes one image per sample, as the original does (it "
                            "replaces the whole human turn by one <image>); train multi-image samples in a "
                            "qwen_1_5 stage (1.5 or 2)")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    caption = conversations[1]["value"] + "\n"
    caption_ids = _encode(tokenizer, caption)
    return Rendered(
        text=IMAGE_TAG + caption,
        input_ids=[image_id] + caption_ids,
        labels=[IGNORE_INDEX] + caption_ids,
        num_images=1,
        segments=[(IMAGE_TAG, False), (caption, True)],
    )


def _chatml_turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def render_qwen_1_5(conversations: list[dict], tokenizer, *, system_prompt: str,
                    label_mode: str = "original", **_) -> Rendered:
    """Stages 1.5/2: ChatML with a system turn; labels by the original rule or assistant-only."""
    turns = list(conversations)
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]  # the original drops a leading non-human turn
    roles = {"human": "user", "gpt": "assistant"}
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    structural = {
        tokenizer.convert_tokens_to_ids("<|im_start|>"),
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        *_encode(tokenizer, "\n"),
    }
    ids, labels, segments = [], [], []
    for role, content in [("system", system_prompt)] + [(roles[t["from"]], t["value"]) for t in turns]:
        text = _chatml_turn(role, content)
        turn_ids = _encode(tokenizer, text)
        ids += turn_ids
        labels += _turn_labels(tokenizer, role, content, turn_ids, label_mode)
        segments.append((text, role == "assistant"))
    if label_mode == "original":
        labels = [tok if tok in structural else lab for tok, lab in zip(ids, labels)]
    labels = [IGNORE_INDEX if tok == image_id else lab for tok, lab in zip(ids, labels)]
    return Rendered(text="".join(s for s, _ in segments), input_ids=ids, labels=labels,
                    num_images=ids.count(image_id), segments=segments)


def _turn_labels(tokenizer, role: str, content: str, turn_ids: list[int], label_mode: str) -> list[int]:
    if role != "assistant":
        return [IGNORE_INDEX] * len(turn_ids)
    if label_mode == "original":
        return list(turn_ids)  # the whole turn, header and trailing "\n" included
    header = len(_encode(tokenizer, "<|im_start|>assistant\n"))
    body = len(_encode(tokenizer, content + "<|im_end|>"))
    return [IGNORE_INDEX] * header + turn_ids[header:header + body] + [IGNORE_INDEX] * (len(turn_ids) - header - body)


TEMPLATES = {"plain": render_plain, "qwen_1_5": render_qwen_1_5}


def render_conversation(conversations: list[dict], template: str, tokenizer, *,
                        system_prompt: str = "You are a helpful assistant.",
                        label_mode: str = "original") -> Rendered:
    """Render a LLaVA-JSON conversation (after the `<image>` relocation rule) with its labels."""
    relocated = [{**turn, "value": relocate_image_tag(turn["value"])} for turn in conversations]
    return TEMPLATES[template](relocated, tokenizer, system_prompt=system_prompt, label_mode=label_mode)


def expand_image_tokens(ids: list[int], labels: list[int], image_id: int, counts: list[int]) -> tuple[list[int], list[int]]:
    """Widen each image placeholder to its feature count; image positions are never supervised."""
    if ids.count(image_id) != len(counts):
        raise TemplateError(f"{ids.count(image_id)} <image> tags for {len(counts)} images")
    out_ids, out_labels, k = [], [], 0
    for tok, lab in zip(ids, labels):
        if tok == image_id:
            out_ids += [image_id] * counts[k]
            out_labels += [IGNORE_INDEX] * counts[k]
            k += 1
        else:
            out_ids.append(tok)
            out_labels.append(lab)
    return out_ids, out_labels
