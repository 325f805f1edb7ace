"""`prepare data` at the real record counts (the `realsize` tier: `python -m pytest -m realsize`, not part of CI): ReCap's 118,287 rows and mix665k's 665,298
records in their real formats, prepared twice from the same files and once from a shuffled copy.

The seeded 30k and 60k subsets must come out as the same index file on every run and as the same
records, under the same ids, whatever order the rows arrive in (two machines, two downloads).
`python -m llava.bench.prepare_scale WORK` is the same run as a command, stage 1's 558,128 too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.bench.prepare_scale import MIX665K, RECAP_ROWS, main

pytestmark = [pytest.mark.realsize, pytest.mark.timeout(3600)]


def test_subsets_at_real_counts_equal_across_runs_and_input_orders(tmp_path, capsys):
    assert main([str(tmp_path), "--stages", "1.5", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    pools = {"1.5": RECAP_ROWS, "2": sum(MIX665K.values()) - MIX665K["ocr_vqa"]}
    for stage, size in (("1.5", 30_000), ("2", 60_000)):
        out = {f"{r['order']}-{r['run']}": Path(r["out"]) for r in rows if r["stage"] == stage}
        first, again, shuffled = out["original-run1"], out["original-run2"], out["shuffled-run1"]
        assert (first / "subset_index.json").read_bytes() == (again / "subset_index.json").read_bytes()
        index, other = (json.loads((f / "subset_index.json").read_text()) for f in (first, shuffled))
        assert index["size"] == size and index["pool_size"] == pools[stage]
        assert index["ids"] == other["ids"] and index["ids_sha256"] == other["ids_sha256"]
        assert index["source_sha256"] != other["source_sha256"]  # the shuffled file is another file
        assert (first / "data.json").read_bytes() == (shuffled / "data.json").read_bytes()
        assert len(json.loads((first / "data.json").read_text())) == size
