"""The comparison rules of `reproduce` on their own: environment differences, the band, the verdict."""

from __future__ import annotations

import pytest

from llava.reproduce.compare import compare_eval, compare_losses, load_tolerances, verdict
from llava.reproduce.environment import compare_environment
from llava.reproduce.training import StageRun

HISTORY = [[1, 6.25], [2, 6.0], [3, 5.5], [4, 5.0]]


def _stage(history=HISTORY, final=5.6875):
    return {"name": "stage1", "loss_history": history, "metrics": {"train_loss": final}}


def test_an_identical_cpu_environment_is_exact_and_anything_else_is_not(monkeypatch):
    from llava.manifest import git_commit, package_versions

    monkeypatch.delenv("LLAVA_KIT_IMAGE_DIGEST", raising=False)
    same = {"versions": package_versions(), "image_digest": None, "git_commit": git_commit(), "world_size": 1,
            "device": "cpu", "profile": None}
    assert compare_environment(same, None).exact is True
    older = compare_environment({**same, "versions": {**same["versions"], "torch": "2.0.0"}}, None)
    assert not older.exact and f"package torch: recorded 2.0.0, here {package_versions()['torch']}" in older.differences
    assert "band" in older.meaning
    gpus = compare_environment({**same, "device": "cuda", "world_size": 8}, None)
    assert not gpus.exact and gpus.needs_gpus == 8 and "devices: recorded 8 x cuda, here CPU only" in gpus.differences
    assert "profile: recorded seed, here fast" in compare_environment(same, "fast").differences
    assert not compare_environment({**same, "device": None}, None).exact  # an older manifest: not assumed CPU


def test_bit_identical_means_equal_to_the_last_bit():
    exact = load_tolerances(True)
    run = StageRun("stage1", [list(p) for p in HISTORY], 5.6875, False)
    assert compare_losses(_stage(), run, exact).within is True
    run.loss_history[2][1] = 5.5 + 1e-12
    result = compare_losses(_stage(), run, exact)
    assert result.first_step == 3 and result.published_at == 5.5 and not result.within


def test_the_band_tolerates_drift_and_names_the_first_step_outside_it():
    band = load_tolerances(False)
    drift = StageRun("stage1", [[1, 6.26], [2, 6.01], [3, 5.52], [4, 5.03]], 5.70, False)
    assert compare_losses(_stage(), drift, band).within is True
    apart = StageRun("stage1", [[1, 6.26], [2, 6.01], [3, 5.62], [4, 5.2]], 5.70, False)
    result = compare_losses(_stage(), apart, band)
    assert result.first_step == 3 and result.max_abs_delta == pytest.approx(0.2) and not result.within
    off_final = compare_losses(_stage(), StageRun("stage1", HISTORY, 5.9, False), band)
    assert off_final.first_step is None and not off_final.within  # 3.7 % off the published final loss


def test_eval_rows_in_the_band_hold_overall_only():
    band = load_tolerances(False)
    recorded = {"rows": [{"name": "Overall", "value": 0.542}, {"name": "AR", "value": 0.633}]}
    close = compare_eval(recorded, {"rows": [{"name": "Overall", "value": 0.550}, {"name": "AR", "value": 0.6}]},
                         band, exact=False)
    assert close.within is True and [round(r["delta"], 2) for r in close.rows] == [0.8, -3.3]
    far = compare_eval(recorded, {"rows": [{"name": "Overall", "value": 0.52}, {"name": "AR", "value": 0.633}]},
                       band, exact=False)
    assert far.within is False


def test_verdicts():
    band = load_tolerances(False)
    run = StageRun("stage1", HISTORY, 5.6875, False)
    losses = [compare_losses(_stage(), run, band)]
    evaluation = compare_eval({"rows": [{"name": "Overall", "value": 0.5}]}, None, band, exact=False)
    assert verdict(losses, evaluation, [], [run], complete=False).word == "incomplete"
    run.recipe_changes = [("training.seed", 0, 1)]
    found = verdict(losses, evaluation, [], [run], complete=False)
    assert found.word == "not reproduced" and "`training.seed` (trained 0, record 1)" in found.reasons[0]
