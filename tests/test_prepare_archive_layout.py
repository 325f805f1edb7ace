"""An archive whose layout differs from the sources file is refused from its central directory alone, before
any member is extracted: the member found and the one expected are named (stage 1's images.zip here;
stage 2's `holds` in test_prepare_image_archives.py)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from llava.cli import main
from llava.errors import KitError
from llava.prepare.archive_layout import check_layout
from prepare_samples import image_bytes, record


def _pretrain_source(root: Path, paths: list[str], member: callable, data=lambda n: b"x") -> Path:
    """A stage-1 source folder: records naming `paths`, an images.zip holding `member(path)` for each."""
    root.mkdir(parents=True)
    (root / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(
        [record(f"{n:09d}", path, "Describe briefly.", f"caption {n}") for n, path in enumerate(paths)]))
    with zipfile.ZipFile(root / "images.zip", "w") as bundle:
        for n, path in enumerate(paths):
            bundle.writestr(member(path), data(n))
    return root


def _stage1(source: Path, out: Path) -> int:
    return main(["prepare", "data", "--stage", "1", "--source-dir", str(source), "--out", str(out), "--workers", "1"])


def test_a_wrapped_archive_is_refused_naming_the_member_found_and_the_one_expected(tmp_path, capsys):
    paths = [f"00000/00000000{n}.jpg" for n in range(3)]
    source = _pretrain_source(tmp_path / "src", paths, lambda path: f"images/{path}", lambda n: image_bytes(seed=n))

    assert _stage1(source, tmp_path / "out") == 2

    err = capsys.readouterr().err
    assert f"image archive {source / 'images.zip'}: the sources file's layout expects member " \
           "'00000/000000000.jpg', the archive has 'images/00000/000000000.jpg' instead (the archive's members " \
           "carry a leading 'images/' that the layout lacks) (3 of 3 referenced members are not where expected); " \
           "nothing was extracted: fix archive_strip_prefix ('') of stage 1 in the sources file" in err
    assert not list((tmp_path / "out").rglob("*.jpg"))


def test_the_same_archive_passes_once_the_prefix_is_in_the_sources_file(tmp_path):
    import yaml

    from llava.prepare.sources import DEFAULT_SOURCES

    paths = [f"00000/00000000{n}.jpg" for n in range(3)]
    source = _pretrain_source(tmp_path / "src", paths, lambda path: f"images/{path}", lambda n: image_bytes(seed=n))
    table = yaml.safe_load(DEFAULT_SOURCES.read_text())
    table["stages"]["1"]["archive_strip_prefix"] = "images/"
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(table))

    assert main(["prepare", "data", "--stage", "1", "--source-dir", str(source), "--out", str(tmp_path / "out"),
                 "--sources", str(tmp_path / "sources.yaml"), "--workers", "1"]) == 0
    assert sorted(p.relative_to(tmp_path / "out/images").as_posix()
                  for p in (tmp_path / "out/images").rglob("*.jpg")) == paths


def test_a_layout_mismatch_in_a_50k_member_archive_is_refused_in_seconds(tmp_path, capsys):
    """The refusal reads the central directory only: its time does not depend on the members' bytes."""
    paths = [f"{n // 1000:05d}/{n:09d}.jpg" for n in range(50_000)]
    source = _pretrain_source(tmp_path / "src", paths, lambda path: f"LLaVA-Pretrain/{path}")

    started = time.perf_counter()
    code = _stage1(source, tmp_path / "out")
    seconds = time.perf_counter() - started

    assert code == 2
    err = capsys.readouterr().err
    assert "expects member '00000/000000000.jpg', the archive has 'LLaVA-Pretrain/00000/000000000.jpg'" in err
    assert "(50000 of 50000 referenced members are not where expected)" in err
    assert not list((tmp_path / "out").rglob("*.jpg"))
    print(f"\nlayout mismatch in a 50,000-member archive refused after {seconds:.2f} s (prepare data, end to end)")
    assert seconds < 60  # generous for a shared CI box; measured figures are in docs/data.md


@pytest.mark.parametrize("names, expected, message", [
    ({"a/1.jpg"}, {"1.jpg"}, "the archive has 'a/1.jpg' instead (the archive's members carry a leading 'a/'"),
    ({"1.jpg"}, {"a/1.jpg"}, "the archive has '1.jpg' instead (the layout's leading 'a/' is not in the archive)"),
    ({"x/9.jpg"}, {"y/1.jpg"}, "none of the 1 members the sources file's layout expects is there (e.g. 'y/1.jpg'; "
                               "the archive's first member is 'x/9.jpg')"),
])
def test_check_layout_names_what_it_found(names, expected, message):
    with pytest.raises(KitError, match="nothing was extracted") as caught:
        check_layout("archive z.zip", names, expected, "the prefix")
    assert message in str(caught.value)


def test_absent_members_without_a_layout_mismatch_are_returned_for_the_caller():
    assert check_layout("z.zip", {"a/1.jpg", "a/2.jpg"}, {"a/1.jpg", "a/3.jpg"}, "x") == {"a/3.jpg"}
    assert check_layout("z.zip", {"a/1.jpg"}, set(), "x") == set()
