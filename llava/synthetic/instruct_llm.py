"""The tiny world's stand-in for Qwen2.5-0.5B-*Instruct*: a small Qwen2 that already reads MMBench options.

The real recipe starts from an instruction-tuned LLM that can answer a multiple-choice question once it
knows the answer; LLaVA training only teaches it to see. A randomly initialised tiny LLM cannot read
the options in the smoke's CPU budget (the look-up "which letter stands before the colour I just named"
is an induction circuit that forms only after hundreds of steps, and not on every seed), so the smoke
starts from this model instead: pretrained text-only on option drills, once, by this module, and
shipped in the package (llava/resources/tiny-instruct-qwen2, ~2.7 MB). The world copies it; nothing
here runs during a smoke. Rebuild with `python -m llava.synthetic.instruct_llm OUT`.

The training loop is hand-written: it is 10 lines, text-only, and stops on a behavioural probe (the
letter after the named colour), which Trainer would need a custom callback and a dataset class for.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from llava.durable import replace_folder, staging_folder
from llava.owned import require_replaceable
from llava.packaged import RESOURCES
from llava.synthetic.conversations import COLOUR_QUESTION, colour_answer, option_drill_record, text_only_record
from llava.synthetic.shapes import COLOUR_OPTIONS, mmbench_prompt, shuffled_colours

SHIPPED = RESOURCES / "tiny-instruct-qwen2"
# Wider than the 2-layer tiny LLM: at 64 wide the look-up formed on some seeds only; 128 wide, 8 heads,
# it formed by step 500-750 on each of 3 seeds.
INSTRUCT_TEXT = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                     intermediate_size=256)
PROBE_TARGET = 0.99


def copy_instruct_llm(folder: Path) -> Path:
    """Put the shipped model and its tokenizer where the world keeps its LLM: a missing folder, an empty
    one or the kit's own model folder (anything else is refused by llava.owned, nothing removed)."""
    folder = require_replaceable(folder, "model")
    staged = staging_folder(folder)
    shutil.copytree(SHIPPED, staged, ignore=shutil.ignore_patterns("provenance.json"), dirs_exist_ok=True)
    return replace_folder(staged, folder, kind="model")


def _drill_conversation(rng: random.Random) -> list[dict]:
    record = option_drill_record("drill", rng) if rng.random() < 0.9 else text_only_record("text", rng)
    return record["conversations"]


def _probe_conversations(count: int = 200) -> list[list[dict]]:
    """Held-out MMBench-style questions answered "It is <colour> <letter>" with random colours."""
    rng = random.Random(1234)
    out = []
    for _ in range(count):
        options = shuffled_colours(rng)
        out.append([{"from": "human", "value": mmbench_prompt(COLOUR_QUESTION, options)},
                    {"from": "gpt", "value": colour_answer(options, rng.choice(COLOUR_OPTIONS))}])
    return out


def _batch(conversations: list[list[dict]], tokenizer):
    import torch

    from llava.data.templates import IGNORE_INDEX, render_conversation

    rendered = [render_conversation(c, "qwen_1_5", tokenizer, label_mode="assistant_only") for c in conversations]
    width = max(len(r.input_ids) for r in rendered)
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return (torch.tensor([pad(r.input_ids, tokenizer.pad_token_id) for r in rendered]),
            torch.tensor([pad(r.labels, IGNORE_INDEX) for r in rendered]),
            torch.tensor([pad([1] * len(r.input_ids), 0) for r in rendered]))


def letter_accuracy(model, tokenizer, conversations: list[list[dict]] | None = None) -> float:
    """Teacher-forced: is the letter after the named colour (the answer's last token) predicted right?"""
    import torch

    ids, labels, mask = _batch(conversations or _probe_conversations(), tokenizer)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
    model.train(was_training)
    targets = labels[:, 1:]
    # the answer's supervised tokens end "... <letter> <|im_end|>": the letter is the second to last
    letter_at = [(row != -100).nonzero().flatten()[-2] for row in targets]
    return sum(int(predicted[i, at] == targets[i, at]) for i, at in enumerate(letter_at)) / len(letter_at)


def build_instruct_llm(out: Path, *, seed: int = 0, batch: int = 16, lr: float = 1e-3,
                       max_steps: int = 6000) -> dict:
    """Tokenizer + random tiny Qwen2 -> drills until the probe holds >= PROBE_TARGET three checks running."""
    import torch
    from transformers import Qwen2ForCausalLM

    from llava.synthetic.tiny_models import write_tiny_llm
    from llava.synthetic.tokenizer import build_tiny_tokenizer
    from llava.synthetic.conversations import tokenizer_corpus

    final = require_replaceable(out, "model")  # built aside, then replaces `final` only if it is the kit's
    out = staging_folder(final)
    tokenizer = build_tiny_tokenizer(tokenizer_corpus(random.Random(seed + 99), shuffled=True), out)
    write_tiny_llm(out, tokenizer, seed, overrides=INSTRUCT_TEXT)
    model = Qwen2ForCausalLM.from_pretrained(out)
    rng, started, held, history = random.Random(seed + 7), time.time(), 0, []
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 30))
    for step in range(1, max_steps + 1):
        ids, labels, mask = _batch([_drill_conversation(rng) for _ in range(batch)], tokenizer)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            accuracy = letter_accuracy(model, tokenizer)
            history.append({"step": step, "loss": round(loss.item(), 4), "letter_accuracy": accuracy})
            print(f"step {step}  loss {loss.item():.4f}  letter accuracy {accuracy:.3f}", flush=True)
            held = held + 1 if accuracy >= PROBE_TARGET else 0
            if held == 3:
                break
    if held < 3:
        raise RuntimeError(f"the option look-up did not form in {max_steps} steps (seed {seed}); try another seed")
    model.save_pretrained(out)
    provenance = {"built_by": "python -m llava.synthetic.instruct_llm", "seed": seed, "batch": batch, "lr": lr,
                  "steps": step, "seconds": round(time.time() - started, 1), "config": INSTRUCT_TEXT,
                  "letter_accuracy": history[-1]["letter_accuracy"], "history": history}
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    replace_folder(out, final, kind="model")
    return provenance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help=f"folder to write (the shipped one: {SHIPPED})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    provenance = build_instruct_llm(args.out, seed=args.seed)
    print(f"{args.out}: letter accuracy {provenance['letter_accuracy']:.3f} after {provenance['steps']} steps "
          f"({provenance['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
