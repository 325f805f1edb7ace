"""What the rehearsal's publish step needs from the card code: a builtin-backend eval makes valid
model-index metadata (huggingface_hub's EvalResult refuses a source_name without a source_url)."""

from __future__ import annotations

from huggingface_hub import ModelCardData

from llava.publish.card import eval_results
from llava.publish.results import EvalResults


def test_a_builtin_eval_gives_model_index_results_without_a_source():
    results = EvalResults(suite="shapes_smoke", dataset="Shapes_MMBench_Smoke", backend="builtin",
                          judge="exact_matching", split="dev", n_questions=8, created="2026-12-01T00:00:00Z",
                          rows=[{"name": "Overall", "value": 0.375}, {"name": "CP", "value": 0.5}])

    metrics = eval_results(results)

    assert [(m.metric_name, m.metric_value, m.source_name) for m in metrics] == [
        ("Overall accuracy", 0.375, None), ("CP accuracy", 0.5, None)]
    assert metrics[0].metric_args["backend"] == "builtin"
    index = ModelCardData(model_name="tiny", eval_results=metrics).to_dict()["model-index"]
    assert index[0]["results"][0]["metrics"][0]["value"] == 0.375
