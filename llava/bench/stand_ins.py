"""Real-shaped stand-ins of the base models' Hub repos: real configs, random weights at real sizes.

One generic builder for every entry of stand_in_repos.yaml: the model class named there is built from
its config on no memory (no init), filled by `randomize_` (unit norms, zero biases, N(0, 0.02) matrices)
in the stored dtype and saved as the originals store it (a tied tensor once, the repo's key prefix); then the repo's own config.json and side files replace what transformers wrote. Nothing
is downloaded: tests serve these folders from the loopback Hub so `prepare models` fetches them as it
would the originals, and the real-size rehearsal trains from them.

    python -m llava.bench.stand_ins OUT      # writes OUT/<name>/ for each repo (1.85 GB, ~20 s on 2 cores)

`layers` cuts every stand-in to that many transformer layers and changes nothing else (widths, vocabulary,
tied 151,936 x 896 embedding, tokenizer, image size): the real-width rehearsal a 24 GB host can run.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from llava.bench.shapes import randomize_
from llava.durable import replace_folder, staging_folder
from llava.owned import MARKER_NAME, require_replaceable
from llava.typed_config import read_packaged

REPOS_FILE = Path(__file__).with_name("stand_in_repos.yaml")
DONE = ".stand-in-complete"
KIND = "stand-in"


@dataclass(frozen=True)
class StandIn:
    name: str
    repo_id: str
    weights: dict
    files: dict
    tokenizer: str | None = None


def load_stand_ins() -> list[StandIn]:
    return [StandIn(**entry) for entry in read_packaged(REPOS_FILE)["repos"]]


def with_layers(spec: StandIn, layers: int | None) -> StandIn:
    """`spec` whose config.json says `layers` transformer layers (None: the real count)."""
    if layers is None:
        return spec
    body = copy.deepcopy(spec.files["config.json"])
    _model_part(spec, body)["num_hidden_layers"] = layers
    return StandIn(spec.name, spec.repo_id, spec.weights, {**spec.files, "config.json": body}, spec.tokenizer)


def _model_part(spec: StandIn, body: dict) -> dict:
    """The part of config.json the weights' class is built from (the whole file, or e.g. vision_config)."""
    return body if spec.weights["config"] == "." else body[spec.weights["config"]]


def _random_weights(spec: StandIn, folder: Path, seed: int) -> None:
    import transformers
    from transformers.initialization import no_init_weights

    model_class = getattr(transformers, spec.weights["class"])
    part = _model_part(spec, spec.files["config.json"])
    config = model_class.config_class(**{k: v for k, v in part.items() if k not in ("architectures", "torch_dtype")})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, spec.weights["dtype"]))
    try:
        with no_init_weights():
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    model.tie_weights()
    randomize_(model, seed)
    save_file(stored_tensors(model, spec.weights.get("prefix", "")), folder / "model.safetensors",
              metadata={"format": "pt"})


def stored_tensors(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict as a Hub file stores it: a tied tensor once (under its first name), `prefix` added."""
    kept = dict(model.named_parameters())  # remove_duplicate=True: lm_head.weight drops out when tied
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - kept.keys()
    return {prefix + name: tensor.contiguous() for name, tensor in model.state_dict().items() if name not in tied}


def _tokenizer(kind: str, folder: Path) -> None:
    from llava.synthetic.conversations import tokenizer_corpus
    from llava.synthetic.tokenizer import build_qwen2_sized_tokenizer

    if kind != "qwen2":
        raise ValueError(f"{REPOS_FILE}: unknown tokenizer {kind!r}")
    build_qwen2_sized_tokenizer(tokenizer_corpus(random.Random(0)), folder)


def write_stand_in(spec: StandIn, folder: str | Path, seed: int = 0) -> Path:
    """The repo's files in `folder`: reused when a complete earlier build of the same spec is there, else
    built aside and put in place of a missing folder or the kit's own stand-in (nothing else is touched)."""
    final = require_replaceable(folder, KIND)
    build = {"repo_id": spec.repo_id, "seed": seed, "config": spec.files["config.json"]}
    try:
        if json.loads((final / DONE).read_text()) == build:
            return final
    except (OSError, ValueError):
        pass
    folder = staging_folder(final)
    _random_weights(spec, folder, seed)
    if spec.tokenizer:
        _tokenizer(spec.tokenizer, folder)
    for name, body in spec.files.items():
        (folder / name).write_text(json.dumps(body, indent=2) + "\n")
    (folder / DONE).write_text(json.dumps(build))
    return replace_folder(folder, final, kind=KIND)


def repo_files(folder: Path) -> dict[str, bytes]:
    """What the Hub repo holds: every file but the kit's build and ownership markers."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in (DONE, MARKER_NAME)}


def write_stand_ins(root: str | Path, seed: int = 0, layers: int | None = None) -> dict[str, Path]:
    """Every stand-in under `root/<name>` (cut to `layers` transformer layers if given); repo id -> folder."""
    return {spec.repo_id: write_stand_in(with_layers(spec, layers), Path(root) / spec.name, seed)
            for spec in load_stand_ins()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write <name>/ per stand-in repo into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, help="transformer layers of every stand-in (default: the real counts)")
    args = parser.parse_args(argv)
    for repo_id, folder in write_stand_ins(args.out, args.seed, args.layers).items():
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{repo_id}: {folder} ({size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
