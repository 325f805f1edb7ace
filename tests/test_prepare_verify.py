"""Verification on generated datasets with planted faults: exact quarantine, the user's file untouched, the
verified set beside it, stats, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.cli import main
from llava.manifest import read_manifest, require_manifest
from llava.prepare.stats import SQUARE_IMAGE_TOKENS, text_lengths
from llava.prepare.verify import check_images, verify_dataset
from llava.synthetic.tokenizer import build_tiny_tokenizer
from prepare_samples import planted_dataset, record, write_image, write_truncated_jpeg


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    corpus = ["What is shown? A noisy picture. Name a prime number. Seven. Describe the image in detail."] * 20
    build_tiny_tokenizer(corpus, out, vocab_size=300)
    return out


def _ids(path: Path) -> list[str]:
    return [entry["id"] for entry in json.loads(path.read_text())]


def test_planted_faults_are_each_quarantined_with_id_and_reason(tmp_path):
    good, bad = planted_dataset(tmp_path)
    users_file = (tmp_path / "data.json").read_bytes()

    report = verify_dataset(tmp_path, expects_image=None, workers=2)

    assert {row["id"]: row["reason"] for row in report.faults} == bad
    assert (tmp_path / "data.json").read_bytes() == users_file  # the user's file is never rewritten
    assert report.data_file == "data.verified.json" and set(_ids(tmp_path / "data.verified.json")) == good
    assert (report.total, report.kept) == (len(good) + len(bad), len(good))
    rows = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert {row["id"]: (row["reason"], row["image"]) for row in rows} == {
        "missing": ("missing image", "bad/not-there.jpg"),
        "truncated": ("truncated image", "bad/truncated.jpg"),
        "zero-byte": ("zero-byte file", "bad/empty.jpg"),
        "gif-as-jpg": ("gif named .jpg", "bad/cover.jpg"),
        "wrong-order": ("roles do not alternate human/gpt", "bad/shared.jpg"),
        "two-tags": ("2 <image> tags, expected 1", "bad/shared.jpg"),
        "empty": ("empty conversation", "bad/shared.jpg"),
    }
    assert all(row["record"]["id"] == row["id"] for row in rows)  # the record is kept, nothing is lost
    assert report.images_checked == 7 + 4  # good images (text-only has none) + the 4 file faults


def test_reverify_is_idempotent_and_keeps_the_quarantine(tmp_path):
    planted_dataset(tmp_path)
    verify_dataset(tmp_path, workers=1)
    clean = (tmp_path / "data.verified.json").read_bytes()

    again = verify_dataset(tmp_path, workers=1)

    assert len(again.faults) == 7  # the user's data.json still holds them
    assert (tmp_path / "data.verified.json").read_bytes() == clean
    assert len((tmp_path / "quarantine.jsonl").read_text().splitlines()) == 7  # not listed twice


def test_prepare_data_filters_its_own_data_json_in_place(tmp_path):
    good, _ = planted_dataset(tmp_path)
    report = verify_dataset(tmp_path, workers=1, in_place=True)
    assert report.data_file == "data.json" and set(_ids(tmp_path / "data.json")) == good
    assert not (tmp_path / "data.verified.json").exists()


def test_a_fixed_data_json_retires_the_verified_copy(tmp_path):
    good, _ = planted_dataset(tmp_path)
    verify_dataset(tmp_path, workers=1)
    (tmp_path / "data.json").write_bytes((tmp_path / "data.verified.json").read_bytes())  # the user fixed it
    assert verify_dataset(tmp_path, workers=1).data_file == "data.json"
    assert not (tmp_path / "data.verified.json").exists()


def test_duplicate_and_missing_ids_are_faults(tmp_path):
    write_image(tmp_path / "images/a.jpg")
    records = [record("a", "a.jpg"), record("a", "a.jpg"), {"conversations": record("x")["conversations"]}]
    (tmp_path / "data.json").write_text(json.dumps(records))

    report = verify_dataset(tmp_path, workers=1)

    assert [(row["id"], row["reason"]) for row in report.faults] == [("a", "duplicate id"), (None, "missing id")]


def test_stage_expectation_rejects_text_only_in_an_image_stage(tmp_path):
    write_image(tmp_path / "images/a.jpg")
    (tmp_path / "data.json").write_text(json.dumps([record("a", "a.jpg"), record("t")]))

    report = verify_dataset(tmp_path, expects_image=True, workers=1)

    assert [(row["id"], row["reason"]) for row in report.faults] == [("t", "no image, expected an image sample")]


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_parallel_image_checks_match_the_serial_result(tmp_path, executor):
    paths = []
    for number in range(70):
        if number % 10 == 3:
            paths.append(str(write_truncated_jpeg(tmp_path / f"{number}.jpg")))
        else:
            paths.append(str(write_image(tmp_path / f"{number}.jpg", size=(20 + number, 30), seed=number)))

    serial = check_images(paths, workers=1)
    parallel = check_images(paths, workers=2, executor=executor)

    assert parallel == serial
    assert [info.fault for info in serial].count("truncated image") == 7
    assert [info.width for info in serial if not info.fault][:3] == [20, 21, 22]


def test_token_and_image_token_histograms_use_tokenizer_and_stage_rule(tmp_path, tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = {"wide": (640, 480), "tall": (480, 640), "square": (384, 384)}
    for name, size in sizes.items():
        write_image(tmp_path / f"images/{name}.jpg", size=size)
    records = [record(name, f"{name}.jpg", answer="Describe " * (3 + i)) for i, name in enumerate(sizes)]
    (tmp_path / "data.json").write_text(json.dumps(records))

    stage15 = verify_dataset(tmp_path, recipe_name="stage1_5", tokenizer=tokenizer, workers=1).stats
    stage1 = verify_dataset(tmp_path, recipe_name="stage1", tokenizer=tokenizer, workers=1).stats

    # recipe-semantics.md §3.4 reference counts for stage 1.5: 640x480 -> 2929, 480x640 -> 2943, 384x384 -> 1513
    assert (stage15["image_tokens"]["min"], stage15["image_tokens"]["max"]) == (1513, 2943)
    assert stage15["image_tokens"]["counts"][3:6] == [1, 0, 2]  # bins [1500,2000) and [2500,3000)
    expected_text = text_lengths(records, tokenizer)
    assert expected_text == [len(tokenizer("\nWhat is shown?\n" + r["conversations"][1]["value"],
                                           add_special_tokens=False)["input_ids"]) for r in records]
    assert stage15["text_tokens"]["max"] == max(expected_text)
    assert stage15["total_tokens"]["max"] == max(t + i for t, i in zip(expected_text, (2929, 2943, 1513)))
    assert stage15["over_model_max_length"] == 0
    assert (stage1["image_tokens"]["min"], stage1["image_tokens"]["max"]) == (SQUARE_IMAGE_TOKENS, SQUARE_IMAGE_TOKENS)
    assert json.loads((tmp_path / "stats.json").read_text()) == stage1


def test_verify_cli_quarantines_writes_manifest_and_check_only_changes_nothing(tmp_path, tokenizer_dir, capsys):
    good, bad = planted_dataset(tmp_path)
    before = (tmp_path / "data.json").read_bytes()

    assert main(["prepare", "verify", str(tmp_path), "--check-only", "--workers", "1"]) == 1
    assert (tmp_path / "data.json").read_bytes() == before
    assert not (tmp_path / "manifest.json").exists()

    capsys.readouterr()
    code = main(["prepare", "verify", str(tmp_path), "--stage", "2", "--tokenizer", str(tokenizer_dir),
                 "--workers", "1", "--max-bad-fraction", "0.5"])

    assert code == 0
    out = capsys.readouterr().out
    assert "quarantined truncated: truncated image (bad/truncated.jpg)" in out
    assert (tmp_path / "data.json").read_bytes() == before
    assert (f"{tmp_path / 'data.json'} is unchanged; the {len(good)} samples that passed are in "
            f"{tmp_path / 'data.verified.json'}: train on them with --set data.path=") in out
    body = require_manifest(tmp_path, "dataset")
    assert body["metrics"]["samples"] == len(good)
    assert body["metrics"]["quarantined"] == len(bad)
    assert body["extra"]["quarantine_reasons"]["gif named .jpg"] == 1
    assert body["extra"]["verified_file"] == "data.verified.json"
    assert set(body["files"]) == {"data.json", "data.verified.json", "quarantine.jsonl", "stats.json",
                                  "image_digests.tsv"}
    assert body["extra"]["lengths"]["image"]["max"] > 729  # stage 2 anyres counts, not the square rule


def test_too_many_bad_samples_fail_with_a_clear_error(tmp_path, capsys):
    planted_dataset(tmp_path)

    code = main(["prepare", "verify", str(tmp_path), "--workers", "1"])

    assert code == 2
    assert "7 of 15 samples" in capsys.readouterr().err
    assert read_manifest(tmp_path)["metrics"]["quarantined"] == 7  # still recorded, for inspection


def test_training_refuses_the_unverified_file_and_names_the_verified_one(tmp_path):
    from llava.errors import KitError
    from llava.paths import VolumeLayout
    from llava.recipe import STAGES_DIR, load_recipe
    from llava.train.preflight import check_manifests, locate_inputs

    data = tmp_path / "mine"
    planted_dataset(data)
    assert main(["prepare", "verify", str(data), "--workers", "1", "--max-bad-fraction", "0.9"]) == 0
    (tmp_path / "ckpt").mkdir()
    layout = VolumeLayout.from_env(tmp_path)
    base = [f"data.image_folder={data / 'images'}", f"init.from_checkpoint={tmp_path / 'ckpt'}"]
    recipe = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", [f"data.path={data / 'data.json'}", *base])
    with pytest.raises(KitError, match=f"wrote the ones that passed to {data / 'data.verified.json'}: train on that"):
        check_manifests(recipe, locate_inputs(recipe, layout))
    verified = load_recipe(STAGES_DIR / "smoke" / "stage2.yaml", [f"data.path={data / 'data.verified.json'}", *base])
    with pytest.raises(KitError, match="manifest"):  # past the data check: the empty checkpoint folder has none
        check_manifests(verified, locate_inputs(verified, layout))
