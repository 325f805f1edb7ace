"""The MMBench question text VLMEvalKit sends to LLaVA-OneVision (evaluation.md §2.1).

Neither OneVision class overrides `use_custom_prompt`, so the dataset's own builder applies:
an optional `Hint:` line, `Question:`, an `Options:` block with one `X. text` line per present
letter, and a closing instruction that ends in a space before the newline.
"""

from __future__ import annotations

from llava.evaluate.mmbench_tsv import McqRow

CLOSING_INSTRUCTION = "Please select the correct answer from the options above. \n"


def build_mcq_prompt(row: McqRow) -> str:
    text = f"Hint: {row.hint}\n" if row.hint is not None else ""
    text += f"Question: {row.question}\n"
    if row.options:
        text += "Options:\n" + "".join(f"{letter}. {option}\n" for letter, option in row.options.items())
        text += CLOSING_INSTRUCTION
    return text


def user_turn_text(row: McqRow, image_prefix: str = "<image>\n") -> str:
    """What LLaVA_OneVision_HF puts in the user turn: the image token written into the text."""
    return image_prefix + build_mcq_prompt(row)
