"""The kit at the real model's size on CPU (the `realsize` tier: `python -m pytest -m realsize`, not part of CI): stand-ins of Qwen2.5-0.5B-Instruct and
SigLIP-so400m fetched by `prepare models` from the loopback Hub, then stage 1 (the real recipe, `seed`
profile: ZeRO-3 + CPU offload, DeepSpeedCPUAdam) for 2 steps, killed with SIGKILL at the end of step 2
and resumed, evaluated on 2 rows, published with --dry-run and loaded with from_pretrained.

The 151,936 x 896 embedding and lm_head are one tensor in Qwen2.5; a save, resume or publish that
writes them apart, or a load that unties them, is caught here at the size where it would cost a user.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from llava.fault_injection import KILL_AT_STEP
from real_size_world import evaluate_two_rows, prepare_models, publish_preview, stand_in_hub, train, write_stage_data

pytestmark = [pytest.mark.realsize, pytest.mark.timeout(3600)]

QWEN, SIGLIP = "Qwen/Qwen2.5-0.5B-Instruct", "google/siglip-so400m-patch14-384"
EMBED = "language_model.model.embed_tokens.weight"  # its name in the saved files (transformers' layout)
PROJECTOR = "multi_modal_projector.linear_1.weight"


@pytest.fixture(scope="module")
def real_home(tmp_path_factory):
    """models/ as `prepare models` leaves it after fetching both stand-ins from the loopback Hub."""
    from llava.bench.stand_ins import write_stand_ins

    root = tmp_path_factory.mktemp("real-size")
    stand_ins = write_stand_ins(root / "stand-ins")
    with stand_in_hub(stand_ins, root / "hub") as hub:
        fetched = prepare_models(root / "home", hub.url)
    assert fetched.returncode == 0, fetched.output[-3000:]
    return root / "home", stand_ins


def test_prepare_models_fetches_the_stand_ins_in_the_real_layout(real_home):
    from llava.bench.stand_ins import repo_files
    from llava.manifest import require_manifest

    home, stand_ins = real_home
    for repo_id, name in ((QWEN, "qwen2.5-0.5b-instruct"), (SIGLIP, "siglip-so400m-patch14-384")):
        folder = home / "models" / name
        assert require_manifest(folder, "model")["extra"]["repo_id"] == repo_id
        for file_name, data in repo_files(stand_ins[repo_id]).items():
            assert (folder / file_name).read_bytes() == data, file_name
    with safe_open(home / "models" / "qwen2.5-0.5b-instruct" / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # tied: stored once, as in the original file
        assert weights.get_slice("model.embed_tokens.weight").get_shape() == [151936, 896]
        assert weights.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"
    assert (home / "models" / "qwen2.5-0.5b-instruct" / "model.safetensors").stat().st_size == 988_097_824


def _tensor_names(path):
    with safe_open(path, "pt") as weights:
        return set(weights.keys())


def test_tie_survives_save_resume_publish_load(real_home):
    from transformers import LlavaOnevisionForConditionalGeneration

    home, stand_ins = real_home
    write_stage_data(home, "stage1")
    killed = train(home, "stage1", "seed", env={KILL_AT_STEP: "2"}, log_name="stage1-killed")
    assert killed.returncode == -9 and sorted(killed.step_times) == [1, 2], killed.output[-3000:]  # SIGKILL at step 2
    resumed = train(home, "stage1", "seed", log_name="stage1-resumed")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "resuming from" in resumed.output and "checkpoint-1" in resumed.output

    trained = home / "checkpoints" / "stage1" / "model.safetensors"
    resumable = home / "runs" / "stage1" / "trainer" / "checkpoint-2" / "model.safetensors"
    for stored in (trained, resumable):
        assert EMBED in _tensor_names(stored) and "lm_head.weight" not in _tensor_names(stored), stored

    evaluated = evaluate_two_rows(home, trained.parent)
    assert evaluated.returncode == 0, evaluated.output[-3000:]
    published, preview = publish_preview(home, trained.parent)
    assert published.returncode == 0, published.output[-3000:]

    [published_file] = sorted(preview.glob("*.safetensors"))
    with safe_open(trained, "pt") as weights, safe_open(published_file, "pt") as published:
        assert set(published.keys()) == set(weights.keys())
        for name in weights.keys():
            assert torch.equal(published.get_tensor(name), weights.get_tensor(name)), name
        embed, projector = weights.get_tensor(EMBED), weights.get_tensor(PROJECTOR)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(preview, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert torch.equal(model.lm_head.weight, embed)
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight, projector)
    with safe_open(stand_ins[QWEN] / "model.safetensors", "pt") as original:
        # stage 1 trains only the projector: the tied matrix is the downloaded one, upcast
        assert torch.equal(embed, original.get_tensor("model.embed_tokens.weight").float())
    results = json.loads((home / "runs" / "stage1" / "eval" / "results.json").read_text())
    assert results
