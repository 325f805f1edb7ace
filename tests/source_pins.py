"""The commits the packaged sources files pin, so a loopback Hub can publish its stand-ins at those commits
and the tests download them exactly as `prepare` does on a real Hub."""

from __future__ import annotations

import re


def pinned_revision(repo_id: str) -> str | None:
    """The 40-hex commit model_sources.yaml or dataset_sources.yaml pins for `repo_id`; None when its pin
    is first-use (the loopback Hub then derives a commit)."""
    from llava.prepare.models import load_sources as model_sources
    from llava.prepare.sources import DEFAULT_SOURCES, load_sources

    revisions = {source.repo_id: source.revision for source in model_sources()}
    revisions.update({stage.hub.repo_id: stage.hub.revision for stage in load_sources(DEFAULT_SOURCES).values()})
    revision = revisions[repo_id]
    return revision if revision and re.fullmatch("[0-9a-f]{40}", revision) else None
