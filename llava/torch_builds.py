"""PyTorch's published CUDA builds and the GPU image variants on them: llava/resources/torch_cuda.yaml.

One table read by doctor (which variant runs on a host), docker/lock.py (which index a lock comes from)
and the pairing test (no file may pair a torch version with a build PyTorch does not publish).
"""

from __future__ import annotations

from importlib import resources

from llava.typed_config import read_document


def load_matrix() -> dict:
    origin = str(resources.files("llava").joinpath("resources/torch_cuda.yaml"))
    return read_document(origin, f"the torch/CUDA table {origin} is missing from the package")


def published(matrix: dict, torch_version: str, label: str) -> bool:
    """Whether PyTorch publishes torch `torch_version` built for `label` (cu126, cu130, ...)."""
    return label in matrix["torch"].get(torch_version, {}).get("builds", {})


def variant_build(matrix: dict, torch_version: str, variant: str) -> dict:
    """The build entry (cuda, index, archs, ...) of an image variant, with its label and variant name."""
    spec = matrix["variants"][variant]
    return {**matrix["torch"][torch_version]["builds"][spec["build"]], **spec, "label": spec["build"],
            "variant": variant, "torch": torch_version}


def compiled_archs() -> list[str]:
    """The GPU archs this torch was compiled for (sm_80 ...), read without a GPU.

    torch.cuda.get_arch_list() answers [] when no device is visible (an image build, CI); it reads
    torch._C._cuda_getArchFlags(), which is what this calls directly. [] for a CPU build.
    """
    import torch

    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
    return flags.split() if flags else []


def torchvision_install(torch_version: str, matrix: dict | None = None) -> str | None:
    """The pip line for the torchvision build paired with an installed torch ("2.13.0+cu126", "2.13.0"),
    or None when the table does not know that torch release."""
    matrix = matrix or load_matrix()
    release, _, label = torch_version.partition("+")
    entry = matrix["torch"].get(release)
    if entry is None:
        return None
    line = f"pip install torchvision=={entry['torchvision']}"
    if label == "cpu":
        return f"{line} --index-url https://download.pytorch.org/whl/cpu"
    build = entry["builds"].get(label)
    if label and build is None:
        return None
    return line if not label else f"{line} --index-url {build['index']}"
