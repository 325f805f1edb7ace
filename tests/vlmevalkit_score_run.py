"""Test harness: score predictions with the pinned VLMEvalKit's own code, exactly as run.py's eval step does.

`python tests/vlmevalkit_score_run.py WORK DATASET...` in the VLMEvalKit test venv, with $LMUData holding
`<DATASET>.tsv` and WORK holding `<DATASET>.predictions.json` ({index: prediction text}). For each
dataset it does what VLMEvalKit's inference leaves and its evaluation reads: the dataset's rows with a
`prediction` column (`str()` of the answer, the `image` column dropped) dumped as the prediction .xlsx,
then `CustomMCQDataset.evaluate(..., model="exact_matching")` (circular for names holding "MMBench",
else single-pass). It writes WORK/<DATASET>.artifact.json: the hit per scored question from the result
sheet, the letter `can_infer` reads from each row of the reloaded sheet, and the acc.csv's path; and
WORK/benchmark_sources.json: ImageMCQDataset's DATASET_URL and DATASET_MD5. Nothing here changes
VLMEvalKit's code.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path


def score(work: Path, dataset: str) -> dict:
    from vlmeval.dataset.image_mcq import CustomMCQDataset
    from vlmeval.dataset.utils.multiple_choice import build_choices
    from vlmeval.smp import dump, load
    from vlmeval.utils import can_infer

    predictions = json.loads((work / f"{dataset}.predictions.json").read_text())
    data = CustomMCQDataset(dataset=dataset).data.copy()
    data["prediction"] = [str(predictions[str(index)]) for index in data["index"]]
    data.pop("image")
    eval_file = work / f"llava_kit_{dataset}.xlsx"
    dump(data, str(eval_file))
    CustomMCQDataset(dataset=dataset).evaluate(str(eval_file), model="exact_matching", nproc=1)
    (result_file,) = [path for path in glob.glob(str(work / f"llava_kit_{dataset}_exact_matching_result.*"))
                      if not path.endswith(".pkl")]  # the sheet, not the judge's cache
    result = load(result_file)
    sheet = load(str(eval_file))  # what the scorer reads back: NaN-like cells are NaN again
    reads = {}
    for _, item in sheet.iterrows():
        got = can_infer(str(item["prediction"]), build_choices(item))
        reads[int(item["index"])] = got or None
    return {"hits": {int(i): int(h) for i, h in zip(result["index"], result["hit"])}, "reads": reads,
            "acc_csv": str(work / f"llava_kit_{dataset}_acc.csv")}


def benchmark_sources() -> dict:
    """Where the artifact downloads each MMBench TSV from, and the md5 it holds it to."""
    from vlmeval.dataset.image_mcq import ImageMCQDataset

    return {"url": ImageMCQDataset.DATASET_URL, "md5": ImageMCQDataset.DATASET_MD5}


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    for name in sys.argv[2:]:
        (folder / f"{name}.artifact.json").write_text(json.dumps(score(folder, name)))
    (folder / "benchmark_sources.json").write_text(json.dumps(benchmark_sources()))
