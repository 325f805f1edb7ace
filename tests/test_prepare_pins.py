"""The packaged sources files pin every model, dataset repo and archive that has a public pin: no `main`
and no null is left but the first-use entries listed (and cited) here, and every pin says its source."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PREPARE = Path(__file__).resolve().parents[1] / "llava" / "prepare"
COMMIT = re.compile("^[0-9a-f]{40}$")
SHA256 = re.compile("^[0-9a-f]{64}$")

# First-use by design: pinned at the first download and held by every later prepare (docs/data.md).
FIRST_USE = {
    ("lmms-lab/LLaVA-ReCap-118K", "revision"):
        "no public source names a commit of this dataset repo (code and docs searched for its snapshot "
        "folders, `--revision`s and resolve URLs: none found)",
    ("https://downloads.cs.stanford.edu/nlp/data/gqa/images.zip", "sha256"):
        "the publisher lists no checksum; the only public sha256 is of a Hub mirror's copy "
        "(Feeky929/GQA-images), which is not the publisher's file; its size is pinned",
}


def _pins() -> list[tuple[str, str, object, str | None]]:
    """(entry, field, value, source) for every pin in both sources files."""
    models = yaml.safe_load((PREPARE / "model_sources.yaml").read_text())["models"]
    stages = yaml.safe_load((PREPARE / "dataset_sources.yaml").read_text())["stages"]
    pins = [(model["repo_id"], "revision", model.get("revision"), model.get("source")) for model in models]
    for stage in stages.values():
        hub = stage["hub"]
        pins.append((hub["repo_id"], "revision", hub.get("revision"), hub.get("source")))
        for archives in stage.get("image_archives", {}).values():
            for archive in archives:
                pins += [(archive["url"], key, archive.get(key), archive.get("source")) for key in ("size", "sha256")]
    return pins


def test_every_public_pin_is_set_and_cites_its_source():
    pins = _pins()
    assert len(pins) == 2 + 3 + 2 * 5  # two models, three dataset repos, five archives (size and sha256)
    wrong = []
    for entry, key, value, source in pins:
        if (entry, key) in FIRST_USE:
            continue
        valid = {"revision": lambda v: isinstance(v, str) and COMMIT.match(v),
                 "size": lambda v: isinstance(v, int) and v > 0,
                 "sha256": lambda v: isinstance(v, str) and SHA256.match(v)}[key](value)
        if not valid or not (source and source.strip()):
            wrong.append(f"{entry} {key}={value!r} source={source!r}")
    assert not wrong, "placeholders or uncited pins: " + "; ".join(wrong)


def test_the_first_use_entries_are_the_unpinned_ones():
    """The list above stays true: each first-use entry is still unpinned in the sources file."""
    values = {(entry, key): value for entry, key, value, _ in _pins()}
    assert set(FIRST_USE) <= set(values)
    for entry_key in FIRST_USE:
        assert values[entry_key] in (None, "main"), f"{entry_key} is pinned now: drop it from FIRST_USE"


def test_the_packaged_files_load_with_their_pins():
    from llava.prepare.models import load_sources as load_models
    from llava.prepare.sources import DEFAULT_SOURCES, load_sources

    models = {model.repo_id: model.revision for model in load_models()}
    assert models["Qwen/Qwen2.5-0.5B-Instruct"] == "7ae557604adf67be50417f59c2c2f167def9a775"
    assert models["google/siglip-so400m-patch14-384"] == "9fdffc58afc957d1a03a25b10dba0329ab15c2a3"
    archives = load_sources(DEFAULT_SOURCES)["2"].image_archives
    assert [(a.file_name, a.holds) for a in archives["vg"]] == [("images.zip", "VG_100K/"),
                                                                ("images2.zip", "VG_100K_2/")]
    assert archives["gqa"][0].size == 21_817_965_542 and archives["gqa"][0].sha256 is None


def test_a_first_use_pin_is_kept_and_a_broken_pin_file_is_named(tmp_path):
    import pytest

    from llava.errors import KitError
    from llava.prepare.first_use import FirstUsePins

    pins = FirstUsePins(tmp_path)
    entry = pins.record("dataset:a/b@main", commit="c" * 40)
    assert FirstUsePins(tmp_path).get("dataset:a/b@main") == entry and entry["recorded_at"]
    with pytest.raises(KitError, match="already pinned in .*first_use.json; delete that entry"):
        pins.record("dataset:a/b@main", commit="d" * 40)
    (tmp_path / "first_use.json").write_text("{not json")
    with pytest.raises(KitError, match=f"first-use pin file {tmp_path / 'first_use.json'} is unreadable"):
        pins.get("dataset:a/b@main")
