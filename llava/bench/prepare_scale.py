"""`prepare data` at the real record counts, measured: time and peak RSS per dataset, subsets compared.

Writes synthetic sources in the real formats and counts (LLaVA-Pretrain: a 558,128-record JSON and an
images.zip holding every image; ReCap-118K: 118,287 rows in parquet shards with embedded images;
mix665k: 665,298 records with the LLaVA-1.5 source mix), then runs `llava-kit prepare data --source-dir`
on each, twice over the original order and once over a shuffled copy (what another machine's listing or
another download of the same rows gives), and prints one JSON line per run. Images are one small JPEG
repeated (decoding cost per image is not what this measures); stage 2 gets image files only for the
records its 60k subset draws, found through the kit's own subset rule.

    python -m llava.bench.prepare_scale WORK [--stages 1 1.5 2] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import zipfile
from pathlib import Path

from llava.bench.measure import run_measured

PRETRAIN_RECORDS = 558_128
RECAP_ROWS = 118_287  # COCO train2017 images, each with one ReCap description
RECAP_SHARDS = 12
# llava_v1_5_mix665k.json by image folder, 665,298 records; the text-only ones (ShareGPT) have no image.
# Counted from the released file in haotian-liu/LLaVA issue #657 (the maintainer's per-task counts, #702, agree).
MIX665K = {"coco": 364_100, "gqa": 72_140, "ocr_vqa": 80_000, "textvqa": 21_953, "vg": 86_417, None: 40_688}
MIX_FOLDERS = {"coco": "train2017", "gqa": "images", "ocr_vqa": "images", "textvqa": "train_images",
               "vg": "VG_100K"}
COCO_IMAGES = 118_287  # mix665k's COCO tasks share images, so their ids repeat across tasks


def tiny_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (180, 60, 60)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _conversation(prompt: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]


def pretrain_source(folder: Path, count: int, order_seed: int | None) -> Path:
    """blip_laion_cc_sbu_558k.json + images.zip (members 00000/000000000.jpg ..., as in LLaVA-Pretrain)."""
    records = [{"id": f"{n:09d}", "image": f"{n // 10000:05d}/{n:09d}.jpg",
                "conversations": _conversation("<image>\nRender a clear and concise summary of the photo.",
                                               f"a photo of object number {n} on a table")} for n in range(count)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(records)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "blip_laion_cc_sbu_558k.json").write_text(json.dumps(records))
    data = tiny_jpeg()
    with zipfile.ZipFile(folder / "images.zip", "w", zipfile.ZIP_STORED) as bundle:
        for record in sorted(records, key=lambda r: r["image"]):
            bundle.writestr(record["image"], data)
    return folder


def recap_source(folder: Path, count: int, order_seed: int | None) -> Path:
    """data/train-000NN-of-000MM.parquet: id, image {bytes, path}, conversations."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"{n:012d}" for n in range(count)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(ids)
    data = tiny_jpeg()
    (folder / "data").mkdir(parents=True, exist_ok=True)
    per_shard = -(-count // RECAP_SHARDS)
    for shard in range(RECAP_SHARDS):
        part = ids[shard * per_shard:(shard + 1) * per_shard]
        table = pa.table({
            "id": part,
            "image": [{"bytes": data, "path": f"{sample_id}.jpg"} for sample_id in part],
            "conversations": [_conversation("<image>", f"A detailed description of COCO image {sample_id}.")
                              for sample_id in part],
        })
        pq.write_table(table, folder / "data" / f"train-{shard:05d}-of-{RECAP_SHARDS:05d}.parquet")
    return folder


def mix665k_records(scale: float = 1.0) -> list[dict]:
    """The mix in source order; COCO ids repeat across tasks as in the real file."""
    records, coco_images = [], max(1, int(COCO_IMAGES * scale))
    for source, count in MIX665K.items():
        for n in range(int(count * scale)):
            if source is None:
                records.append({"id": f"sharegpt_{n}", "conversations": _conversation("Hello?", "Hi.")})
                continue
            image_no = n % coco_images if source == "coco" else n
            sample_id = f"{image_no:012d}" if source == "coco" else f"{source}_{n}"
            records.append({"id": sample_id, "image": f"{source}/{MIX_FOLDERS[source]}/{image_no:012d}.jpg",
                            "conversations": _conversation("<image>\nWhat is in the image?", f"{source} answer {n}")})
    return records


def mix665k_source(folder: Path, scale: float, order_seed: int | None, roots: Path, subset: dict) -> list[str]:
    """llava_v1_5_mix665k.json, and image files (under roots/<source>/) for the records the subset draws."""
    from llava.prepare.convert_mix665k import drop_by_image
    from llava.prepare.subsets import assign_unique_ids, draw_subset

    records = mix665k_records(scale)
    if order_seed is not None:
        random.Random(order_seed).shuffle(records)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "llava_v1_5_mix665k.json").write_text(json.dumps(records))
    kept, _ = drop_by_image([dict(r) for r in records], ["ocr_vqa"])
    assign_unique_ids(kept)
    chosen = set(draw_subset([r["id"] for r in kept], min(subset["size"], len(kept)), subset["seed"]))
    data = tiny_jpeg()
    for record in kept:
        if record["id"] in chosen and "image" in record:
            source, _, rest = record["image"].partition("/")
            target = roots / source / rest
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    sources = sorted({r["image"].split("/")[0] for r in kept if "image" in r})
    for source in sources:
        (roots / source).mkdir(parents=True, exist_ok=True)
    return sources


def subset_size(stage: str, scale: float) -> int | None:
    """The source table's subset size, scaled with the pool (None: the stage keeps its whole pool)."""
    from llava.prepare.sources import stage_source

    rule = stage_source(stage).subset
    return int(rule.size * scale) if rule else None


def write_source(stage: str, folder: Path, scale: float, order_seed: int | None, roots: Path) -> list[str]:
    """The stage's source files in `folder`; returns the --image-root arguments the stage needs."""
    from llava.prepare.sources import stage_source

    if stage == "1":
        pretrain_source(folder, int(PRETRAIN_RECORDS * scale), order_seed)
        return []
    if stage == "1.5":
        recap_source(folder, int(RECAP_ROWS * scale), order_seed)
        return []
    subset = {"size": subset_size(stage, scale), "seed": stage_source(stage).subset.seed}
    sources = mix665k_source(folder, scale, order_seed, roots, subset)
    return [f"{name}={roots / name}" for name in sources]


def run_prepare(stage: str, source: Path, out: Path, image_roots: list[str], log: Path, timeout: float,
                size: int | None) -> dict:
    args = [sys.executable, "-m", "llava.cli", "prepare", "data", "--stage", stage, "--source-dir", str(source),
            "--out", str(out), "--downloads", str(out.parent / ".downloads"),
            *[f"--image-root={root}" for root in image_roots], *(["--size", str(size)] if size else [])]
    done = run_measured(args, None, log, timeout, interval=0.5)
    index = out / "subset_index.json"
    return {"stage": stage, "rc": done.returncode, "seconds": round(done.seconds, 1),
            "peak_rss_mib": round(done.peak_rss / 2**20), "out": str(out),
            "records": len(json.loads((out / "data.json").read_text())) if done.returncode == 0 else None,
            "subset_ids_sha256": json.loads(index.read_text())["ids_sha256"] if index.is_file() else None,
            **({"tail": done.output[-2000:]} if done.returncode else {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--stages", nargs="+", default=["1", "1.5", "2"], choices=["1", "1.5", "2"])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the real counts (tests use less)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one prepare run may take")
    args = parser.parse_args(argv)
    failed = False
    for stage in args.stages:
        for name, order_seed in (("original", None), ("shuffled", 1)):
            source = args.work / "sources" / name / stage
            roots = write_source(stage, source, args.scale, order_seed, args.work / "image-roots" / name)
            runs = ("run1", "run2") if order_seed is None else ("run1",)
            for run in runs:
                out = args.work / "out" / f"{name}-{run}" / stage
                row = run_prepare(stage, source, out, roots, args.work / f"prepare-{stage}-{name}-{run}.log",
                                  args.timeout, subset_size(stage, args.scale))
                print(json.dumps({"order": name, "run": run, **row}), flush=True)
                failed |= row["rc"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
