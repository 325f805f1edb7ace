"""Golden renders and labels for `plain` and `qwen_1_5`, written from recipe-semantics §2."""

from __future__ import annotations

import pytest

from llava.data.templates import IGNORE_INDEX, TemplateError, expand_image_tokens, render_conversation

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def supervised_text(tokenizer, rendered) -> str:
    """Concatenate the supervised tokens (the text the loss sees)."""
    return tokenizer.decode([t for t, lab in zip(rendered.input_ids, rendered.labels) if lab != IGNORE_INDEX])


def test_plain_keeps_only_image_and_caption(tiny_tokenizer):
    conv = [{"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "a red circle on the left."}]
    r = render_conversation(conv, "plain", tiny_tokenizer)
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    assert r.text == "<image>a red circle on the left.\n"
    assert r.input_ids[0] == image_id and r.labels[0] == IGNORE_INDEX
    assert r.labels[1:] == r.input_ids[1:]  # caption and the trailing "\n" are supervised
    assert supervised_text(tiny_tokenizer, r) == "a red circle on the left.\n"


def test_plain_rejects_text_only(tiny_tokenizer):
    with pytest.raises(TemplateError):
        render_conversation([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "plain", tiny_tokenizer)


def test_qwen_single_turn_relocates_image_and_unmasks_structure(tiny_tokenizer):
    conv = [{"from": "human", "value": "What colour is it?\n<image>"}, {"from": "gpt", "value": "red"}]
    r = render_conversation(conv, "qwen_1_5", tiny_tokenizer)
    assert r.text == (SYSTEM + "<|im_start|>user\n<image>\nWhat colour is it?<|im_end|>\n"
                      "<|im_start|>assistant\nred<|im_end|>\n")
    # original rule: the whole assistant turn + every <|im_start|>, <|im_end|> and standalone "\n"
    expected = ("<|im_start|>\n<|im_end|>\n"                   # system: start, "\n" after role, end, "\n"
                "<|im_start|>\n\n<|im_end|>\n"                  # user: start, "\n", "\n" after image, end, "\n"
                "<|im_start|>assistant\nred<|im_end|>\n")       # assistant turn in full
    assert supervised_text(tiny_tokenizer, r) == expected
    image_pos = r.input_ids.index(tiny_tokenizer.convert_tokens_to_ids("<image>"))
    assert r.labels[image_pos] == IGNORE_INDEX


def test_qwen_multi_turn_assistant_only_option(tiny_tokenizer):
    conv = [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "Shape?"}, {"from": "gpt", "value": "a square"}]
    original = render_conversation(conv, "qwen_1_5", tiny_tokenizer)
    strict = render_conversation(conv, "qwen_1_5", tiny_tokenizer, label_mode="assistant_only")
    assert original.input_ids == strict.input_ids
    assert supervised_text(tiny_tokenizer, strict) == "blue<|im_end|>a square<|im_end|>"
    assert supervised_text(tiny_tokenizer, original).count("<|im_start|>") == 5  # system + 2 user + 2 assistant
    assert original.text.count("<|im_start|>assistant\n") == 2


def test_qwen_text_only_has_no_image(tiny_tokenizer):
    conv = [{"from": "human", "value": "What is 2 plus 3?"}, {"from": "gpt", "value": "5"}]
    r = render_conversation(conv, "qwen_1_5", tiny_tokenizer)
    assert r.num_images == 0 and "<image>" not in r.text
    assert r.text == SYSTEM + "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"


def test_leading_gpt_turn_is_dropped(tiny_tokenizer):
    conv = [{"from": "gpt", "value": "stray"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    assert "stray" not in render_conversation(conv, "qwen_1_5", tiny_tokenizer).text


def test_turns_tokenised_separately_match_whole_string(tiny_tokenizer):
    conv = [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "green."}]
    r = render_conversation(conv, "qwen_1_5", tiny_tokenizer)
    assert tiny_tokenizer.decode(r.input_ids) == r.text


def test_expand_image_tokens_masks_features(tiny_tokenizer):
    image_id = tiny_tokenizer.convert_tokens_to_ids("<image>")
    ids, labels = expand_image_tokens([5, image_id, 6], [5, IGNORE_INDEX, 6], image_id, [4])
    assert ids == [5] + [image_id] * 4 + [6] and labels == [5] + [IGNORE_INDEX] * 4 + [6]
    with pytest.raises(TemplateError):
        expand_image_tokens([image_id, image_id], [0, 0], image_id, [3])
