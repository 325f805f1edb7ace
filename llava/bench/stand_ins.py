"""Real-shaped stand-ins of the base models' Hub repos: real configs, random weights at real sizes.

One generic builder for every entry of stand_in_repos.yaml: the model class named there is built from
its config on no memory (no init), filled by `randomize_` (unit norms, zero biases, N(0, 0.02) matrices)
in the stored dtype and saved as the originals store it (a tied tensor once, the repo's key prefix); then the repo's own config.json and side files replace what transformers wrote. Nothing
is downloaded: tests serve these folders from the loopback Hub so `prepare models` fetches them as it
would the originals, and the real-size rehearsal trains from them.

    python -m llava.bench.stand_ins OUT      # writes OUT/<name>/ for each repo (1.85 GB, ~20 s on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from llava.bench.shapes import randomize_
from llava.typed_config import read_packaged

REPOS_FILE = Path(__file__).with_name("stand_in_repos.yaml")
DONE = ".stand-in-complete"


@dataclass(frozen=True)
class StandIn:
    name: str
    repo_id: str
    weights: dict
    files: dict
    tokenizer: str | None = None


def load_stand_ins() -> list[StandIn]:
    return [StandIn(**entry) for entry in read_packaged(REPOS_FILE)["repos"]]


def _random_weights(spec: StandIn, folder: Path, seed: int) -> None:
    import transformers
    from transformers.initialization import no_init_weights

    model_class = getattr(transformers, spec.weights["class"])
    body = spec.files["config.json"]
    part = body if spec.weights["config"] == "." else body[spec.weights["config"]]
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
    """The repo's files in `folder` (reused when a complete earlier build is there)."""
    folder = Path(folder)
    if (folder / DONE).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _random_weights(spec, folder, seed)
    if spec.tokenizer:
        _tokenizer(spec.tokenizer, folder)
    for name, body in spec.files.items():
        (folder / name).write_text(json.dumps(body, indent=2) + "\n")
    (folder / DONE).write_text(json.dumps({"repo_id": spec.repo_id, "seed": seed}))
    return folder


def repo_files(folder: Path) -> dict[str, bytes]:
    """What the Hub repo holds: every file but the build marker."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != DONE}


def write_stand_ins(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every stand-in under `root/<name>`; returns repo id -> folder."""
    return {spec.repo_id: write_stand_in(spec, Path(root) / spec.name, seed) for spec in load_stand_ins()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write <name>/ per stand-in repo into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for repo_id, folder in write_stand_ins(args.out, args.seed).items():
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{repo_id}: {folder} ({size / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
