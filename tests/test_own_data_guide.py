"""docs/own-data.md, walked as a user would: every bash block of the guide runs, in order, in one shell.

Own images -> records -> verify -> stage 2 from a stage-1.5 checkpoint -> builtin eval on an own TSV
with an own suite name -> publish --dry-run; then the dry-run folder loads with from_pretrained and
generates. The "own" images are 40 shapes pictures with their own labels; the stage-1.5 checkpoint is a
two-step one from the tiny world (any checkpoint will do: the guide starts from whatever it is given).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, smoke_recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the guide subprocess may take 1500 s
GUIDE = REPO / "docs" / "own-data.md"


def guide_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S)


def _photos(folder: Path) -> Path:
    from llava.synthetic.shapes import COLOUR_OPTIONS, draw_scene, random_scene

    folder.mkdir(parents=True)
    rng = random.Random(5)
    labels, questions = [], []
    for i in range(48):
        scene = random_scene(rng)
        name = f"photo-{i:02d}.png"
        draw_scene(scene, rng).save(folder / name)
        if i < 40:
            labels.append({"file": name, "question": "What colour is the shape?", "answer": scene.colour})
        else:
            options = {letter: colour for letter, colour in zip("ABCD", COLOUR_OPTIONS)}
            answer = next(letter for letter, colour in options.items() if colour == scene.colour)
            questions.append({"file": name, "question": "What colour is the shape in the image?", **options,
                              "answer": answer})
    for file_name, rows in (("labels.csv", labels), ("questions.csv", questions)):
        with open(folder / file_name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def stage1_5_checkpoint(tiny_world):
    """Stages 1 and 1.5, two steps each, on the shipped tiny instruct LLM: it answers in words, which the
    publish gate requires (the tiny world's random LLM ends its turn at once, an empty answer)."""
    from llava.manifest import write_manifest
    from llava.pipeline import smoke_layout
    from llava.synthetic.instruct_llm import copy_instruct_llm
    from llava.train.run import train_stage

    layout = smoke_layout(tiny_world)
    llm = copy_instruct_llm(layout.models / "guide-instruct-llm")
    write_manifest(llm, "model", extra={"source": "shipped tiny instruct stand-in"})
    stage1 = smoke_recipe("stage1", "name=guide-stage1", f"init.llm={llm}", "training.max_steps=2",
                          "training.save_strategy=no", "output={checkpoints}/guide-stage1")
    train_stage(stage1, layout)
    recipe = smoke_recipe("stage1_5", "name=guide-stage1_5", "init.from_checkpoint={checkpoints}/guide-stage1",
                          "training.max_steps=2", "training.save_strategy=no", "output={checkpoints}/guide-stage1_5")
    return train_stage(recipe, layout).output


def test_the_own_data_guide_runs_end_to_end(stage1_5_checkpoint, tmp_path):
    blocks = guide_blocks()
    assert len(blocks) == 8  # layout, records, verify, train, TSV, suite + eval, publish, generate
    home = tmp_path / "home"
    env = {**os.environ, "LLAVA_KIT_HOME": str(home), "PHOTOS": str(_photos(tmp_path / "photos")),
           "STAGE1_5": str(stage1_5_checkpoint), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + "\n".join(blocks)
    done = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    assert "40 records" in done.stdout and "40 of 40 samples kept" in done.stdout

    checkpoint = home / "checkpoints" / "mine-stage2"
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert manifest["extra"]["stage"] == "mine-stage2" and manifest["metrics"]["global_steps"] == 5  # 40 / 8
    results = json.loads((home / "runs" / "mine-stage2" / "eval" / "results.json").read_text())
    assert (results["suite"], results["dataset"], results["n_questions"]) == ("my_colours", "My_MMBench_Colours", 8)
    assert results["chance"] == pytest.approx(0.25 ** 4)
    table = (home / "runs" / "mine-stage2" / "eval" / "table.md").read_text()
    assert f"`{(home / 'runs' / 'mine-stage2' / 'eval' / 'loss.png').resolve()}`" in table

    preview = home / "publish-preview"
    card = (preview / "README.md").read_text()
    assert "My_MMBench_Colours" in card and "built-in scorer" in card
    assert "llava-kit generate model --image photo.jpg" in card  # the card's snippet for the kit's own install
    _loads_and_generates(preview)


def _loads_and_generates(folder: Path) -> None:
    from PIL import Image
    from transformers import LlavaOnevisionForConditionalGeneration

    from llava.data.processor import load_processor

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(folder).eval()
    processor = load_processor(folder)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "<image>\nWhat colour is the shape?"}]}],
        add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (80, 60), (220, 30, 30)), text=prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4)
    assert output.shape[1] > inputs["input_ids"].shape[1]
