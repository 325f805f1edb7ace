"""The shared volume layout. Every root is overridable by env so compose and bare hosts agree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VolumeLayout:
    models: Path
    datasets: Path
    checkpoints: Path
    runs: Path
    hf_cache: Path

    @classmethod
    def from_env(cls, base: str | os.PathLike | None = None) -> "VolumeLayout":
        """`LLAVA_KIT_HOME` (or `base`) holds all volumes unless one is set on its own."""
        root = Path(base or os.environ.get("LLAVA_KIT_HOME", "."))

        def pick(var: str, default: str) -> Path:
            return Path(os.environ.get(var, root / default))

        return cls(
            models=pick("LLAVA_KIT_MODELS", "models"),
            datasets=pick("LLAVA_KIT_DATASETS", "datasets"),
            checkpoints=pick("LLAVA_KIT_CHECKPOINTS", "checkpoints"),
            runs=pick("LLAVA_KIT_RUNS", "runs"),
            hf_cache=pick("HF_HOME", "hf-cache"),
        )

    def resolve(self, path: str | os.PathLike) -> Path:
        """Expand `{models}`-style placeholders used in recipes into real paths."""
        text = str(path).format(
            models=self.models, datasets=self.datasets, checkpoints=self.checkpoints, runs=self.runs
        )
        return Path(text)
