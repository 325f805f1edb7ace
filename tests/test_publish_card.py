"""publish --dry-run: the card's metadata and body, the folder's contents, and the refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from llava.errors import KitError
from llava.manifest import weights_sha256, write_manifest
from llava.paths import VolumeLayout
from llava.publish.service import PublishRequest, publish
from llava.recipe import load_recipe
from publish_world import LOSSES, VLMEVALKIT_COMMIT, build_world, write_results

REPO_ID = "acme/llava-kit-0.5b"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def _layout(root, runs=None) -> VolumeLayout:
    return VolumeLayout(models=root / "models", datasets=root / "datasets", checkpoints=root / "checkpoints",
                        runs=runs or root / "runs", hf_cache=root / "hf-cache")


@pytest.fixture(scope="module")
def dry_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "repo"
    report = publish(PublishRequest(checkpoint=world.checkpoint, repo_id=REPO_ID, dry_run=out), _layout(world.root))
    return report


def test_card_metadata_parses_with_huggingface_hub(world, dry_run):
    from huggingface_hub import ModelCard

    card = ModelCard.load(dry_run.folder / "README.md", ignore_metadata_errors=False)
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "transformers", "image-text-to-text")
    assert data.base_model == ["Qwen/Qwen2.5-0.5B-Instruct", "google/siglip-so400m-patch14-384"]
    assert data.to_dict()["base_model_relation"] == "finetune"
    assert sorted(data.datasets) == ["liuhaotian/LLaVA-Instruct-150K", "liuhaotian/LLaVA-Pretrain",
                                     "lmms-lab/LLaVA-ReCap-118K"]
    results = json.loads(world.results.read_text())
    by_name = {r.metric_name: r for r in data.eval_results}
    assert {name: r.metric_value for name, r in by_name.items()} == \
        {f"{row['name']} accuracy": row["value"] for row in results["rows"]}
    overall = by_name["Overall accuracy"]
    assert (overall.dataset_name, overall.dataset_split, overall.metric_type) == ("MMBench_DEV_EN", "dev", "accuracy")
    assert overall.metric_config == "exact_matching"
    assert overall.metric_args["judge"] == "exact_matching"
    assert overall.metric_args["vlmevalkit_commit"] == VLMEVALKIT_COMMIT
    assert overall.source_url.endswith(VLMEVALKIT_COMMIT)


def test_builtin_eval_results_publish_without_a_source_url(world, tmp_path):
    """huggingface_hub's EvalResult refuses a source name without a URL: built-in rows carry no source."""
    from huggingface_hub import ModelCard

    results = write_results(tmp_path / "builtin" / "results.json", world.weights_sha, backend="builtin")
    report = publish(PublishRequest(checkpoint=world.checkpoint, repo_id=REPO_ID, dry_run=tmp_path / "out",
                                    eval_results=results), _layout(world.root))
    card = ModelCard.load(report.folder / "README.md", ignore_metadata_errors=False)
    overall = next(r for r in card.data.eval_results if r.metric_name == "Overall accuracy")
    assert overall.metric_value == 0.5 and overall.metric_args["backend"] == "builtin"
    assert overall.metric_args.get("vlmevalkit_commit") is None
    assert (overall.source_name, overall.source_url) == (None, None)
    text = (report.folder / "README.md").read_text()
    assert "llava-kit's built-in scorer (VLMEvalKit's rules)" in text and "VLMEvalKit commit" not in text


def test_card_body_carries_results_losses_hyperparameters_and_data(dry_run):
    text = (dry_run.folder / "README.md").read_text()
    # eval table: value, seed, delta, official, delta (percent / percentage points)
    assert "| Overall | 50.00 | 54.21 | -4.21 | 55.07 | -5.07 |" in text
    assert "| CP | 37.50 | 65.54 | -28.04 | 69.59 | -32.09 |" in text
    assert "![MMBench_DEV_EN accuracy" in text and "(chart.png)" in text
    # final losses beside the seed's 2.944 / 0.900 / 0.704
    assert f"| stage1 | 12 | {LOSSES['stage1']:.3f} | 2.944 | +0.181 |" in text
    assert f"| stage1_5 | 12 | {LOSSES['stage1_5']:.3f} | 0.900 | +0.350 |" in text
    assert "| stage2 | 12 | 0.812 | 0.704 | +0.108 |" in text
    # per-stage hyperparameters, from the manifest or (stage1) the stages/ recipe whose hash matches
    recipes = [load_recipe(stage).training for stage in ("stage1", "stage1_5", "stage2")]
    assert "| `training.learning_rate` | " + " | ".join(f"{r.learning_rate:g}" for r in recipes) + " |" in text
    assert "| `training.grad_accum` | " + " | ".join(str(r.grad_accum) for r in recipes) + " |" in text
    assert "stage1: stages/stage1.yaml (hash matches the manifest)" in text
    # data: sources, subset lists, licence notes; usage snippet; the run
    assert "[`subsets/stage2_subset_index.json`](subsets/stage2_subset_index.json)" in text
    assert "OpenAI's terms of use" in text
    assert "LlavaOnevisionForConditionalGeneration.from_pretrained(repo" in text and "AutoProcessor" in text
    assert f"| weights sha256 | `{dry_run.weights_sha256}` |" in text


def test_dry_run_folder_holds_the_checkpoint_and_the_evidence(world, dry_run):
    folder = dry_run.folder
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "chat_template.jinja", "processor_config.json", "preprocessor_config.json", "manifest.json"):
        assert (folder / name).read_bytes() == (world.checkpoint / name).read_bytes(), name
    assert (folder / "chart.png").read_bytes() == (world.results.parent / "chart.png").read_bytes()
    assert (folder / "eval" / "results.json").read_bytes() == world.results.read_bytes()
    subset = world.root / "datasets" / "stage1_5" / "subset_index.json"
    assert (folder / "subsets" / "stage1_5_subset_index.json").read_bytes() == subset.read_bytes()
    assert not (folder / "subsets" / "stage1_subset_index.json").exists()  # stage 1 kept every record
    assert weights_sha256(folder) == world.weights_sha


def test_dry_run_folder_loads_with_from_pretrained_and_generates(world, dry_run):
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    from llava.data.processor import load_processor
    from llava.publish.load_check import QUESTION, probe_image

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(dry_run.folder).eval()
    original = LlavaOnevisionForConditionalGeneration.from_pretrained(world.checkpoint)
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name
    processor = load_processor(dry_run.folder)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "<image>\n" + QUESTION}]}], add_generation_prompt=True)
    inputs = processor(images=probe_image(), text=prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4)
    new = output[:, inputs["input_ids"].shape[1]:]
    assert new.shape[1] >= 1
    assert processor.batch_decode(new, skip_special_tokens=True)[0] == dry_run.sample_answer


def test_no_eval_for_these_weights_is_refused(world, tmp_path):
    with pytest.raises(KitError, match=rf"no eval result for .*{world.weights_sha[:12]}.*llava-kit eval"):
        publish(PublishRequest(checkpoint=world.checkpoint, repo_id=REPO_ID, dry_run=tmp_path / "out"),
                _layout(world.root, runs=tmp_path / "empty-runs"))
    other = write_results(tmp_path / "other" / "results.json", "0" * 64)
    with pytest.raises(KitError, match=r"evaluated weights 000000000000.*evaluate this checkpoint"):
        publish(PublishRequest(checkpoint=world.checkpoint, repo_id=REPO_ID, dry_run=tmp_path / "out",
                               eval_results=other), _layout(world.root))
    assert not (tmp_path / "out").exists()


def _broken_copy(world, tmp_path):
    """A copy of the stage2 checkpoint, damaged by the caller, with a manifest and eval for its weights."""
    copy = tmp_path / "checkpoints" / "stage2"
    shutil.copytree(world.checkpoint, copy)
    return copy


def _finish(copy):
    write_manifest(copy, "checkpoint", metrics={"train_loss": 1.0}, extra={"stage": "stage2"})
    write_results(copy / "eval" / "results.json", weights_sha256(copy))


def test_checkpoint_with_nan_weights_fails_the_generate_check(world, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = _broken_copy(world, tmp_path)
    tensors = load_file(copy / "model.safetensors")
    name = next(key for key in tensors if "multi_modal_projector" in key and key.endswith("weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    _finish(copy)
    with pytest.raises(KitError, match="failed the load-and-generate check: the model's logits contain NaN"):
        publish(PublishRequest(checkpoint=copy, repo_id=REPO_ID, dry_run=tmp_path / "out"), _layout(world.root))


def test_checkpoint_that_does_not_load_is_refused(world, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = _broken_copy(world, tmp_path)
    tensors = load_file(copy / "model.safetensors")
    first = next(key for key in tensors if "multi_modal_projector" in key)
    tensors[first] = tensors[first][:1]  # wrong shape: from_pretrained must fail
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    _finish(copy)
    with pytest.raises(KitError, match="failed the load-and-generate check"):
        publish(PublishRequest(checkpoint=copy, repo_id=REPO_ID, dry_run=tmp_path / "out"), _layout(world.root))


def test_missing_token_is_refused_naming_where_it_is_read(world, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(world.env(), HF_TOKEN_PATH=str(tmp_path / "no-such-secret"), HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-m", "llava.cli", "publish", str(world.checkpoint), "--repo-id", REPO_ID],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: no Hugging Face token" in done.stderr
    assert f"HF_TOKEN_PATH is {tmp_path / 'no-such-secret'}, but that file is missing" in done.stderr
    assert "HF_TOKEN environment variable" in done.stderr
    assert "Traceback" not in done.stderr
