"""The three stages at the real models' widths (the `realwidth` tier: `python -m pytest -q -m realwidth`,
about 15 minutes alone on 2 cores; stage 2's seed profile peaks at 19 GiB of host RAM on CPU, so run it
alone): stand-ins of Qwen2.5-0.5B-Instruct and SigLIP-so400m cut to 2 transformer layers and nothing else cut (the tied 151,936 x 896 embedding, the
896 / 1152 widths, the real tokenizer, 384 px tiles), fetched by `prepare models` from the loopback Hub.

stage1 -> stage1_5 -> stage2 run with the real recipes and the `seed` profile (ZeRO-3 + CPU offload,
DeepSpeedCPUAdam) at batch 1 for 2 optimizer steps each; stage 2's second sample is 2304 x 2304, the
6x6 grid (37 SigLIP tiles, then anyres_max_9 pools them). Stage 2 is killed with SIGKILL inside its second
step and resumed, and must end bit-identical (CPU, fp32) to an uninterrupted run; the stage-2 model is
evaluated on 2 rows, published with --dry-run and loaded with from_pretrained (lm_head still the
embedding, which stages 1.5 and 2 trained). The `fast` profile runs stage 2 the same way.

Full depth (24 + 27 layers) is `python tests/real_size_world.py WORK` on a host with 48 GB of RAM;
docs/performance.md has both sets of figures. This module writes its own to build/real-width-figures.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from llava.fault_injection import KILL_IN_STEP
from real_size_world import (checkpoint_sizes, depth_overrides, evaluate_two_rows, prepare_models, publish_preview,
                             stand_in_hub, train, write_stage_data)

pytestmark = [pytest.mark.realwidth, pytest.mark.timeout(3600)]

LAYERS = 2
QWEN = "Qwen/Qwen2.5-0.5B-Instruct"
EMBED = "language_model.model.embed_tokens.weight"  # its name in the saved files (transformers' layout)
FIGURES = Path(__file__).resolve().parents[1] / "build" / "real-width-figures.json"


def _run(home: Path, stage: str, profile: str, name: str, figures: dict, **kwargs):
    # one resumable checkpoint kept per run: five stage-2 runs would otherwise hold 10 of them on the disk
    done = train(home, stage, profile, extra=[f"name={name}", f"output={home / 'checkpoints' / name}",
                                              "checkpointing.keep_last=1", *depth_overrides(LAYERS)],
                 log_name=f"train-{name}-{kwargs.pop('tag', 'run')}", **kwargs)
    figures.setdefault(name, []).append({"stage": stage, "profile": profile, "rc": done.returncode,
                                         "seconds": round(done.seconds, 1), "peak_rss_bytes": done.peak_rss,
                                         "step_seconds": [round(s, 1) for s in done.step_seconds()]})
    if done.returncode == 0:  # finished: measure, then keep only the trainer states the tests read (disk)
        figures[name][-1].update(checkpoint_sizes(home, name))
        for state in (home / "runs" / name / "trainer").glob("checkpoint-*/*"):
            if state.name != "trainer_state.json":
                shutil.rmtree(state) if state.is_dir() else state.unlink()
    return done


def _losses(home: Path, name: str) -> dict[int, float]:
    """step -> loss, full precision, from the last resumable checkpoint's trainer state (a resumed run's
    history holds the steps before the kill too)."""
    state = json.loads((home / "runs" / name / "trainer" / "checkpoint-2" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The whole chain once; each test below checks one part of what it left."""
    from llava.bench.stand_ins import write_stand_ins

    root = tmp_path_factory.mktemp("real-width")
    home, figures = root / "home", {}
    stand_ins = write_stand_ins(root / "stand-ins", layers=LAYERS)
    with stand_in_hub(stand_ins, root / "hub") as hub:
        fetched = prepare_models(home, hub.url)
    assert fetched.returncode == 0, fetched.output[-3000:]
    for stage in ("stage1", "stage1_5", "stage2"):
        write_stage_data(home, stage)
    for stage in ("stage1", "stage1_5"):
        done = _run(home, stage, "seed", stage, figures)
        assert done.returncode == 0, done.output[-3000:]
    runs = {"reference": _run(home, "stage2", "seed", "stage2-reference", figures),
            "killed": _run(home, "stage2", "seed", "stage2", figures, env={KILL_IN_STEP: "2"}, tag="killed"),
            "resumed": _run(home, "stage2", "seed", "stage2", figures, tag="resumed"),
            "fast-killed": _run(home, "stage2", "fast", "stage2-fast", figures, env={KILL_IN_STEP: "2"}, tag="killed"),
            "fast-resumed": _run(home, "stage2", "fast", "stage2-fast", figures, tag="resumed")}
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    return home, stand_ins, runs


def test_stage2_killed_inside_step_2_resumes_bit_identically(rehearsal):
    home, _, runs = rehearsal
    assert runs["reference"].returncode == 0, runs["reference"].output[-3000:]
    killed, resumed = runs["killed"], runs["resumed"]
    assert killed.returncode == -9 and sorted(killed.step_times) == [1], killed.output[-3000:]
    assert resumed.returncode == 0 and "checkpoint-1" in resumed.output, resumed.output[-3000:]
    assert sorted(resumed.step_times) == [2]
    assert sorted(_losses(home, "stage2")) == [1, 2]
    assert _losses(home, "stage2") == _losses(home, "stage2-reference")
    ours, reference = (home / "checkpoints" / name / "model.safetensors" for name in ("stage2", "stage2-reference"))
    with safe_open(ours, "pt") as a, safe_open(reference, "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for name in a.keys():
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name


@pytest.mark.parametrize("name", ["stage2", "stage2-fast"])
def test_the_trained_tie_survives_save_resume_eval_publish_load(rehearsal, name):
    """The embedding trains in stages 1.5 and 2; lm_head must still be that tensor after the whole chain:
    the resumed run's save, the builtin eval on 2 rows, `publish --dry-run` and from_pretrained."""
    home, stand_ins, runs = rehearsal
    assert runs["fast-resumed"].returncode == 0, runs["fast-resumed"].output[-3000:]
    check_published_tie(home, home / "checkpoints" / name, stand_ins[QWEN])


def check_published_tie(home: Path, checkpoint: Path, downloaded: Path) -> None:
    from transformers import LlavaOnevisionForConditionalGeneration

    with safe_open(checkpoint / "model.safetensors", "pt") as weights:
        assert EMBED in weights.keys() and "lm_head.weight" not in weights.keys()
        assert weights.get_slice(EMBED).get_shape() == [151936, 896]
        embed = weights.get_tensor(EMBED)
    with safe_open(downloaded / "model.safetensors", "pt") as original:
        assert not torch.equal(embed, original.get_tensor("model.embed_tokens.weight").float())  # it trained
    evaluated = evaluate_two_rows(home, checkpoint)
    assert evaluated.returncode == 0, evaluated.output[-3000:]
    predictions = home / "runs" / checkpoint.name / "eval" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == 2
    published, preview = publish_preview(home, checkpoint)
    assert published.returncode == 0, published.output[-3000:]
    [published_file] = sorted(preview.glob("*.safetensors"))
    with safe_open(published_file, "pt") as stored:
        assert torch.equal(stored.get_tensor(EMBED), embed) and "lm_head.weight" not in stored.keys()
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(preview, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, embed)
