"""A stage refuses inputs whose manifest is missing or no longer matches the files, naming the folder and file;
manifests never carry secrets, and the training code never runs remote code or unpickles freely."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO, smoke_recipe
from llava.errors import KitError


def test_data_file_changed_after_its_manifest_is_refused(stage1_run, tmp_path):
    from llava.train.preflight import preflight
    _, layout, _ = stage1_run
    data = tmp_path / "stage2"
    shutil.copytree(layout.datasets / "stage2", data)
    records = json.loads((data / "data.json").read_text())
    records[3]["conversations"][1]["value"] = "an edited answer"
    (data / "data.json").write_text(json.dumps(records))
    recipe = smoke_recipe("stage2", "init.from_checkpoint={checkpoints}/stage1", f"data.path={data}/data.json")
    with pytest.raises(KitError) as err:
        preflight(recipe, layout)
    assert str(err.value) == f"{data}: data.json changed since manifest.json was written (sha256 differs)"


def test_checkpoint_weights_changed_after_its_manifest_are_refused(stage1_run, tmp_path):
    from llava.train.preflight import preflight
    _, layout, _ = stage1_run
    previous = tmp_path / "stage1"
    shutil.copytree(layout.checkpoints / "stage1", previous)
    weights = previous / "model.safetensors"
    body = bytearray(weights.read_bytes())
    body[-1] ^= 0xFF  # one flipped bit in the last tensor
    weights.write_bytes(bytes(body))
    with pytest.raises(KitError, match=f"{previous}: model.safetensors changed since manifest.json was written"):
        preflight(smoke_recipe("stage2", f"init.from_checkpoint={previous}"), layout)
    (previous / "manifest.json").unlink()
    with pytest.raises(KitError, match=f"{previous} has no manifest.json"):
        preflight(smoke_recipe("stage2", f"init.from_checkpoint={previous}"), layout)


def test_manifest_drops_secret_keys_and_token_values_but_keeps_token_fields(tmp_path):
    from llava.manifest import read_manifest, write_manifest
    token = "hf_" + "x" * 34
    write_manifest(tmp_path, "checkpoint", extra={
        "recipe": {"model": {"image_token": "<image>", "image_token_index": 151665}},
        "hf_token": token, "HUB_TOKEN": "abc", "wandb_api_key": "k", "client_secret": "s", "password": "p",
        "note": f"pushed with {token}", "eos_token": "<|im_end|>"})
    body = read_manifest(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    assert body["extra"] == {"recipe": {"model": {"image_token": "<image>", "image_token_index": 151665}},
                             "note": "pushed with <redacted>", "eos_token": "<|im_end|>"}
    assert token not in text and '"abc"' not in text


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str) -> list[str]:
    """Calls that would run remote code or unpickle arbitrary objects, as 'line: call'."""
    faults = []
    for call in (node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)):
        name, keywords = ast.unparse(call.func), {k.arg: k.value for k in call.keywords}
        if "trust_remote_code" in keywords and not _is_const(keywords["trust_remote_code"], False):
            faults.append(f"{call.lineno}: {name}(trust_remote_code={ast.unparse(keywords['trust_remote_code'])})")
        if name == "torch.load" and not _is_const(keywords.get("weights_only"), True):
            faults.append(f"{call.lineno}: torch.load without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
            faults.append(f"{call.lineno}: {name}")
    return faults


def test_no_remote_code_and_no_unsafe_unpickling_in_llava():
    """Every call in llava/: no trust_remote_code=True, torch.load only with weights_only=True, no pickle.load."""
    faults = []
    for path in sorted((REPO / "llava").rglob("*.py")):
        text = path.read_text()
        faults += [f"{path.relative_to(REPO)}:{fault}" for fault in unsafe_calls(text)]
        faults += [f"{path.relative_to(REPO)}: {line.strip()}" for line in text.splitlines()
                   if "trust_remote_code=True" in line.replace(" ", "")]  # also in strings and configs
    assert faults == []


def test_the_scan_flags_the_forms_it_forbids():
    bad = ("torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=True)\n"
           "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
           "AutoModel.from_pretrained(p, trust_remote_code=False)\npickle.load(f)\n")
    assert unsafe_calls(bad) == ["1: torch.load without weights_only=True", "2: torch.load without weights_only=True",
                                 "4: AutoModel.from_pretrained(trust_remote_code=True)", "6: pickle.load"]


def test_final_checkpoint_is_safetensors_only(stage1_run):
    _, _, result = stage1_run
    names = {p.name for p in Path(result.output).iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]
