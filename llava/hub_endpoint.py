"""Which Hub (or mirror) the kit talks to: one rule for downloads (prepare) and uploads (publish)."""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "https://huggingface.co"


def resolve_endpoint(endpoint: str | None = None) -> str:
    """The Hub (or mirror) to talk to: the argument, else HF_ENDPOINT read now, else huggingface.co.

    Read at call time: huggingface_hub reads HF_ENDPOINT once at import, which misses a later export.
    """
    chosen = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return chosen.rstrip("/")
