"""The built-in backend: answer MMBench rows with a kit checkpoint the way LLaVA_OneVision_HF does.

Per row (evaluation.md §2.3): user turn = "<image>\\n" + the dataset prompt, rendered by the
checkpoint processor's chat template with the generation prompt, then `generate` with the
checkpoint's own (greedy) generation config and only `max_new_tokens` set, new tokens decoded
with special tokens skipped. CPU-friendly, offline, no VLMEvalKit needed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from llava.errors import KitError
from llava.evaluate.mmbench_tsv import McqFile, McqRow
from llava.evaluate.predictions import PredictionLog
from llava.evaluate.prompt import user_turn_text
from llava.evaluate.suite import PromptSpec

logger = logging.getLogger(__name__)  # each answer; `llava-kit smoke` writes it to eval.log


def chat_messages(user_text: str) -> list[dict]:
    """LLaVA_OneVision_HF's conversation: one user turn, the image token already in the text."""
    return [{"role": "user", "content": [{"type": "text", "text": user_text}]}]


class CheckpointAnswerer:
    """A loaded checkpoint that answers one (image, user text) pair at a time."""

    def __init__(self, checkpoint: Path, max_new_tokens: int, device: str | None = None):
        import torch

        from llava.model.checkpoint import load_for_inference

        # fp16 on a GPU, as LLaVA_OneVision_HF loads it; fp32 on CPU (no fast fp16 kernels there)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if device == "cuda" else None
        self.model, self.processor = load_for_inference(checkpoint, device=device, dtype=dtype)
        self.device = device
        self.max_new_tokens = max_new_tokens
        if getattr(self.model.generation_config, "do_sample", False):
            raise KitError(
                f"{checkpoint}/generation_config.json has do_sample=true: VLMEvalKit's LLaVA_OneVision_HF "
                "would sample and scores would be random; write do_sample=false (greedy)"
            )

    def render(self, user_text: str) -> str:
        return self.processor.apply_chat_template(chat_messages(user_text), add_generation_prompt=True)

    def __call__(self, image, user_text: str, streamer=None) -> str:
        """The decoded answer; `streamer` (transformers' TextStreamer) also gets the tokens as they come."""
        import torch

        inputs = self.processor(images=image, text=self.render(user_text), return_tensors="pt")
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # casts floating tensors (pixels) only
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, streamer=streamer)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0]


def answer_rows(data: McqFile, rows: list[McqRow], log: PredictionLog, answerer, prompt: PromptSpec,
                session: str) -> int:
    """Answer the rows `log` does not hold yet, appending each answer as it comes; returns how many."""
    from tqdm import tqdm

    todo = [row for row in rows if row.index not in log.answers]
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="answering", unit="row", dynamic_ncols=True)
    for row in todo:
        started = time.perf_counter()
        prediction = answerer(data.image(row), user_turn_text(row, prompt.image_prefix))
        seconds = round(time.perf_counter() - started, 4)
        log.append(row.index, prediction, question_index=row.question_index, session=session, seconds=seconds)
        logger.info("row %d (question %d, answer %s): %r in %.2f s", row.index, row.question_index, row.answer,
                    prediction, seconds)
        bar.update(1)
    bar.close()
    return len(todo)
