"""Preflight's disk and RAM figures: the model is sized from its safetensors headers, the per-parameter
figures measured at real size (host_needs.yaml) turn that into bytes, and a disk too small is refused."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file
import torch

from llava.errors import KitError
from llava.model.tunable import TunableParts
from llava.pipeline import smoke_layout
from llava.recipe import load_recipe
from llava.train import host_needs
from llava.train.host_needs import HostNeeds, ParameterCount, check_host, count_parameters
from llava.typed_config import read_packaged


def _folders(tmp_path):
    llm, vision = tmp_path / "llm", tmp_path / "vision"
    llm.mkdir()
    vision.mkdir()
    save_file({"model.embed_tokens.weight": torch.zeros(10, 4), "model.norm.weight": torch.zeros(4)},
              llm / "model.safetensors")
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(3, 5)}, vision / "model.safetensors")
    return {"llm": llm, "vision_tower": vision}


def test_parameters_are_counted_from_headers_with_the_recipes_parts(tmp_path):
    folders = _folders(tmp_path)
    assert count_parameters(folders, TunableParts(("mm_mlp_adapter",))) == ParameterCount(59, 0)
    assert count_parameters(folders, TunableParts(("mm_language_model",))) == ParameterCount(59, 44)
    assert count_parameters(folders, TunableParts(("mm_vision_tower", "mm_language_model"))) == ParameterCount(59, 59)


def test_needs_follow_the_measured_figures():
    table = read_packaged(host_needs.NEEDS_FILE)
    seed = table["profiles"]["seed"]
    recipe = load_recipe("stage2", ["checkpointing.keep_last=1"])
    needs = host_needs.host_needs(recipe, ParameterCount(total=1000, trainable=400))
    assert needs.ram == int(seed["peak_rss_bytes_per_parameter"] * 1000 + table["trainable_bytes_per_parameter"]["ram"] * 400)
    assert needs.model_folder == int(table["model_folder_bytes_per_parameter"] * 1000)
    assert needs.kept == 2 and needs.disk == needs.model_folder + 2 * needs.resumable
    # the real model trained whole holds at least AdamW's 16 bytes a parameter (docs/performance.md)
    real = host_needs.host_needs(recipe, ParameterCount(table["real_parameters"], table["real_parameters"]))
    assert real.ram > 16 * table["real_parameters"]


def test_a_disk_too_small_for_the_checkpoints_is_refused(tmp_path, monkeypatch):
    folders = _folders(tmp_path)
    recipe = load_recipe("stage1", ["output={checkpoints}/stage1"])
    layout = smoke_layout(tmp_path)
    needs = check_host(recipe, layout, folders)
    assert isinstance(needs, HostNeeds) and needs.disk > 0
    monkeypatch.setattr(host_needs, "_free_disk", lambda path: needs.disk - 1)  # a full disk, not fillable here
    with pytest.raises(KitError, match=r"stage1\.yaml: this stage writes about .* GiB under .*only .* GiB are free"):
        check_host(recipe, layout, folders)
