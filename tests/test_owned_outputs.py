"""The kit replaces or deletes only what it wrote and marked as its own, in every verb that writes a folder.

The train cases live in tests/test_cli_bad_input.py (OUTPUT_CASES); here: the mechanism itself
(llava.owned, llava.durable.replace_folder), a rerun into the kit's own output, and the other writers
(eval, prepare, smoke). Every refusal leaves every file as it was (hashed before and after).
"""

from __future__ import annotations

import json
import os

import pytest

from llava.cli import main
from llava.durable import replace_folder
from llava.manifest import sha256_file, write_manifest
from llava.owned import MARKER_NAME, OutputRefused, claim_folder, mark_owned, owned_kind, refuse_overlap, \
    require_replaceable


def _hashes(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _user_folder(root):
    root.mkdir(parents=True)
    (root / "thesis.txt").write_text("four years of work\n")
    return root


def _staged(root, text="new"):
    staged = root / "staged"
    staged.mkdir(parents=True)
    (staged / "weights.bin").write_text(text)
    return staged


def test_replace_folder_refuses_a_users_folder_and_leaves_it_whole(tmp_path):
    user = _user_folder(tmp_path / "out")
    before = _hashes(tmp_path)
    with pytest.raises(OutputRefused, match=r"out already exists and was not written by llava-kit .*thesis\.txt"):
        replace_folder(_staged(tmp_path), user, kind="checkpoint")
    assert _hashes(user) == {"thesis.txt": before["out/thesis.txt"]}
    assert not (tmp_path / ".out.llava-kit-old").exists()


def test_replace_folder_refuses_a_regular_file_and_a_link(tmp_path):
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(OutputRefused, match="is an existing file"):
        replace_folder(_staged(tmp_path), tmp_path / "notes.md", kind="checkpoint")
    assert (tmp_path / "notes.md").read_text() == "mine" and not (tmp_path / ".notes.md.llava-kit-old").exists()
    target = _user_folder(tmp_path / "elsewhere")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OutputRefused, match="is a symbolic link"):
        replace_folder(tmp_path / "staged", tmp_path / "link", kind="checkpoint")
    assert (target / "thesis.txt").is_file()


def test_replace_folder_replaces_its_own_output_of_the_same_kind_only(tmp_path):
    final = tmp_path / "stage2"
    replace_folder(_staged(tmp_path, "old"), final, kind="checkpoint")
    assert owned_kind(final) == "checkpoint" and (final / MARKER_NAME).is_file()
    replace_folder(_staged(tmp_path, "new"), final, kind="checkpoint")
    assert (final / "weights.bin").read_text() == "new"
    with pytest.raises(OutputRefused, match="holds a llava-kit checkpoint output, not a eval"):
        replace_folder(_staged(tmp_path, "other"), final, kind="eval")
    assert (final / "weights.bin").read_text() == "new"


def test_an_empty_folder_is_taken_and_an_older_kit_output_is_recognised_by_its_manifest(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert replace_folder(_staged(tmp_path), empty, kind="checkpoint") == empty
    older = tmp_path / "older"  # written before the marker existed: manifest.json only
    older.mkdir()
    (older / "weights.bin").write_text("old")
    write_manifest(older, "checkpoint")
    assert owned_kind(older) == "checkpoint"
    assert require_replaceable(older, "checkpoint") == older
    fake = _user_folder(tmp_path / "fake")  # a user's manifest.json is not the kit's
    (fake / "manifest.json").write_text(json.dumps({"kind": "checkpoint"}))
    assert owned_kind(fake) is None
    with pytest.raises(OutputRefused):
        require_replaceable(fake, "checkpoint")


def test_overlap_is_refused_through_links_too(tmp_path):
    data = _user_folder(tmp_path / "data")
    (tmp_path / "alias").symlink_to(data)
    with pytest.raises(OutputRefused, match=r"is inside this run's input data"):
        refuse_overlap(tmp_path / "alias" / "out", {"data": data})
    with pytest.raises(OutputRefused, match=r"contains this run's input data"):
        refuse_overlap(tmp_path, {"data": data / "thesis.txt"})
    refuse_overlap(tmp_path / "out", {"data": data})  # a sibling is fine


def test_claim_folder_marks_a_new_folder(tmp_path):
    folder = claim_folder(tmp_path / "eval", "eval")
    assert owned_kind(folder) == "eval"
    assert claim_folder(folder, "eval") == folder  # the next run takes its own folder again


@pytest.mark.timeout(600)
def test_rerunning_a_stage_replaces_its_own_output(stage1_run, tiny_world, capsys):
    """The same command twice: the second run replaces the first one's (kit-marked) output, as resume does."""
    from llava.train.run import train_stage
    from conftest import smoke_recipe

    _, layout, _ = stage1_run
    output = layout.checkpoints / "owned-rerun"
    output.mkdir()  # an empty folder the user made for it is taken too
    recipe = smoke_recipe("stage1", "name=owned-rerun", f"output={output}", "training.max_steps=1",
                          "training.save_strategy=no", "checkpointing.resume_every_steps=0")
    first = train_stage(recipe, layout)
    assert owned_kind(first.output) == "checkpoint"
    first_manifest = (output / "manifest.json").read_text()
    second = train_stage(recipe, layout)
    assert second.output == output and (output / "manifest.json").read_text() != first_manifest
    assert not list(output.parent.glob(".owned-rerun.llava-kit-*"))


def test_train_refuses_a_run_folder_it_did_not_write(tmp_path, monkeypatch, capsys):
    """runs/<name> holds state the kit deletes (unfinished checkpoints, the skip ledger): it must be the kit's."""
    runs = tmp_path / "runs"
    user = _user_folder(runs / "stage1")
    monkeypatch.setenv("LLAVA_KIT_HOME", str(tmp_path))
    before = _hashes(tmp_path)
    rc = main(["train", "stage1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"run folder {user} already exists and was not written by llava-kit" in err
    assert _hashes(tmp_path) == before



def test_a_run_folder_holding_only_an_earlier_eval_is_the_kits(tmp_path):
    from llava.train.run_folder import claim_run_folder

    run_dir = tmp_path / "runs" / "stage2"
    claim_folder(run_dir / "eval", "eval")  # `eval checkpoints/stage2` writes runs/stage2/eval by default
    assert claim_run_folder(run_dir) == run_dir and owned_kind(run_dir) == "run"
    (run_dir / "eval" / "results.json").write_text("{}")
    assert claim_run_folder(run_dir) == run_dir  # marked now: taken again


def test_eval_score_refuses_a_users_folder(tiny_world, tmp_path, capsys):
    from llava.synthetic.world import held_out_tsv

    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text(json.dumps({"index": 0, "prediction": "A"}) + "\n")
    user = _user_folder(tmp_path / "results")
    before = _hashes(tmp_path)
    rc = main(["eval", "score", "--tsv", str(held_out_tsv(tiny_world)), "--predictions", str(predictions),
               "--out", str(user)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"eval output {user} already exists and was not written by llava-kit" in err
    assert _hashes(tmp_path) == before


def test_prepare_data_refuses_a_users_folder(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    before = _hashes(tmp_path)
    rc = main(["prepare", "data", "--stage", "1", "--out", str(user), "--downloads", str(tmp_path / "dl")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"dataset folder (--out) {user} already exists and was not written by llava-kit" in err
    assert _hashes(tmp_path) == before and not (tmp_path / "dl").exists()


def test_smoke_refuses_a_users_folder(tmp_path, capsys):
    user = _user_folder(tmp_path / "mine")
    (user / "eval").mkdir()  # smoke clears <out>/eval of its own earlier run: never of a user's folder
    (user / "eval" / "answers.csv").write_text("mine\n")
    before = _hashes(tmp_path)
    rc = main(["smoke", "--out", str(user)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"smoke folder (--out) {user} already exists and was not written by llava-kit" in err
    assert _hashes(tmp_path) == before


def test_marker_never_reaches_the_hub_listing(tmp_path):
    from llava.publish.repo_folder import local_files

    folder = mark_owned(tmp_path / "repo", "publish")
    (folder / "README.md").write_text("card")
    assert local_files(folder) == ["README.md"]
    assert os.path.isfile(folder / MARKER_NAME)


def test_an_older_kit_folder_is_adopted_by_a_file_only_the_kit_writes(tmp_path):
    from llava.owned import adopt_older_output

    older = tmp_path / "smoke"
    older.mkdir()
    (older / "world.log").write_text("log")
    (older / "report.md").write_text("old report")
    adopt_older_output(older, "smoke", "world.log")
    assert claim_folder(older, "smoke") == older
    user = _user_folder(tmp_path / "mine")
    adopt_older_output(user, "smoke", "world.log")  # no world.log: not the kit's, left unmarked
    assert owned_kind(user) is None
    with pytest.raises(OutputRefused):
        claim_folder(user, "smoke")


def test_the_instruct_llm_copy_and_rebuild_take_only_the_kits_model_folder(tmp_path):
    """`python -m llava.synthetic.instruct_llm OUT` and the worlds' copy replace a kit model folder only."""
    from llava.synthetic.instruct_llm import build_instruct_llm, copy_instruct_llm

    llm = copy_instruct_llm(tmp_path / "llm")
    assert owned_kind(llm) == "model" and (llm / "model.safetensors").is_file()
    assert not (llm / "provenance.json").exists()
    assert copy_instruct_llm(llm) == llm  # its own folder: replaced
    thesis = _user_folder(tmp_path / "thesis")
    before = _hashes(thesis)
    for action in (copy_instruct_llm, lambda folder: build_instruct_llm(folder, max_steps=1)):
        with pytest.raises(OutputRefused, match="not written by llava-kit"):
            action(thesis)
    assert _hashes(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llm", "thesis"]  # no staging folder left behind


def _claim_many(folder: str, rounds: int, refusals) -> None:
    """One launcher's view, repeated: claim the run folder as the other node claims it too."""
    for _ in range(rounds):
        try:
            claim_folder(folder, "run", what="run folder")
        except OutputRefused:
            refusals.value += 1


def test_two_nodes_claiming_one_run_folder_at_once_both_take_it(tmp_path):
    """Two launchers (two nodes over a shared file system) claim the same runs/<name> concurrently: a
    reader must never see a half-written marker and refuse the kit's own folder (a rerun after a killed
    node once failed so), and no in-flight marker file may make a new folder look foreign."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(4):
        folder = tmp_path / f"run-{attempt}"
        refusals = context.Value("i", 0)
        workers = [context.Process(target=_claim_many, args=(str(folder), 400, refusals)) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0, 0]
        assert refusals.value == 0, f"attempt {attempt}: {refusals.value} refusals of the kit's own folder"
        assert owned_kind(folder) == "run" and sorted(p.name for p in folder.iterdir()) == [MARKER_NAME]
