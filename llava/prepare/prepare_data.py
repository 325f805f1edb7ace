"""`prepare data --stage S`: source -> pool -> seeded subset -> images -> data.json -> verify -> manifest.

Every step is decided by dataset_sources.yaml plus the recorded options, so the same command (or the
published subset_index.json with --from-index) rebuilds the same data.json byte for byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava.data.record_checks import image_paths
from llava.errors import KitError
from llava.manifest import MANIFEST_NAME
from llava.owned import claim_folder
from llava.prepare.convert_mix665k import LinkMode, drop_by_image, parse_image_roots, stage_images
from llava.prepare.fetch import FetchedSource, fetch_source
from llava.prepare.sources import StageSource, stage_source
from llava.prepare.storage import ensure_dir, read_records, write_jsonl, write_records
from llava.prepare.subsets import INDEX_NAME, assign_unique_ids, ids_from_index, make_index, read_index, write_index
from llava.prepare.verify import DATA_NAME, IMAGES_DIR, VerifyReport, verify_dataset

DATASET_KIND = "dataset"  # the llava.owned kind of a prepared dataset folder (its manifest's kind too)
OCR_VQA = "ocr_vqa"


@dataclass
class DataOptions:
    """Everything `prepare data` was asked to do; recorded in the manifest."""

    stage: str
    out: Path
    downloads: Path
    sources_file: Path | None = None
    endpoint: str | None = None
    source_dir: Path | None = None
    revision: str | None = None
    seed: int | None = None
    size: int | None = None
    from_index: Path | None = None
    image_roots: list[str] = field(default_factory=list)
    keep_ocr_vqa: bool = False
    link: LinkMode = "hardlink"
    tokenizer: Path | None = None
    workers: int | None = None
    source_may_differ: bool = False  # --from-index on a changed source (reproduce compares sample by sample)


@dataclass
class Pool:
    """The records a subset is drawn from, before images are materialised."""

    records: list[dict[str, Any]]
    source_sha256: str
    filters: dict[str, Any]
    dropped: dict[str, int]
    renamed_ids: int
    recap_rows: dict[str, tuple[int, int]] | None = None
    recap_shards: list[Path] | None = None
    image_archives: list[dict[str, Any]] = field(default_factory=list)


def _json_pool(source: StageSource, fetched: FetchedSource, opts: DataOptions) -> Pool:
    path = fetched.file(source.json_file)
    records = read_records(path)
    drops = [text for text in source.drop_image_containing if not (opts.keep_ocr_vqa and text == OCR_VQA)]
    kept, dropped = drop_by_image(records, drops)
    renamed = assign_unique_ids(kept)
    return Pool(kept, fetched.sha256([path]), {"drop_image_containing": drops}, dropped, renamed)


def _recap_pool(source: StageSource, fetched: FetchedSource) -> Pool:
    from llava.prepare.convert_recap import read_recap_pool

    shards = fetched.glob(source.parquet_glob)
    pool = read_recap_pool(shards, source.columns, source.prompt)
    renamed = assign_unique_ids(pool.records)
    rows = {record["id"]: row for record, row in zip(pool.records, pool.rows)}
    filters = {"prompt": source.prompt}
    return Pool(pool.records, fetched.sha256(shards), filters, {}, renamed, rows, shards)


def _subset(pool: Pool, source: StageSource, opts: DataOptions) -> dict[str, Any] | None:
    """The subset index to apply, or None to keep the whole pool."""
    ids = [record["id"] for record in pool.records]
    if opts.from_index is not None:
        index = read_index(opts.from_index)
        if "filters" in index and index["filters"] != pool.filters:
            raise KitError(f"subset index {opts.from_index} was drawn with filters {index['filters']}, this run "
                           f"uses {pool.filters}: match them (e.g. --keep-ocr-vqa) to rebuild that subset")
        ids_from_index(index, ids, pool.source_sha256, str(opts.from_index), check_source=not opts.source_may_differ)
        return index
    rule = source.subset
    size = opts.size if opts.size is not None else (rule.size if rule else None)
    if not size:
        return None
    seed = opts.seed if opts.seed is not None else (rule.seed if rule else 0)
    return make_index(ids, size=size, seed=seed, source_sha256=pool.source_sha256,
                      stage=opts.stage, source=source.hub.repo_id, filters=pool.filters)


def _materialise_images(source: StageSource, fetched: FetchedSource, pool: Pool, chosen: list[dict[str, Any]],
                        opts: DataOptions, roots: dict[str, Path], whole_pool: bool) -> list[dict[str, Any]]:
    """Put the chosen records' images under out/images; returns the image fixes made on the way."""
    images_dir = opts.out / IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)
    if source.format == "recap_parquet":
        from llava.prepare.convert_recap import write_recap_images

        write_recap_images(pool.recap_shards, chosen, pool.recap_rows, images_dir, source.image_subdir, source.columns)
        return []
    if source.images_archive:
        from llava.prepare.archive_layout import check_layout, member_names
        from llava.prepare.archives import extract_zip

        archive, prefix = fetched.file(source.images_archive), source.archive_strip_prefix
        wanted = {path for record in chosen for path in image_paths(record)}
        check_layout(f"image archive {archive}", member_names(archive), {prefix + path for path in wanted},
                     f"archive_strip_prefix ({prefix!r}) of stage {opts.stage} in the sources file")
        extract_zip(archive, images_dir, members=None if whole_pool else wanted, strip_prefix=prefix)
        return []
    if source.image_sources:
        from llava.prepare.image_archives import fetch_image_sources

        fetched_roots, archives = fetch_image_sources(chosen, roots, source.image_archives,
                                                      opts.downloads / "images")
        roots.update(fetched_roots)
        pool.image_archives = archives
        return stage_images(chosen, roots, images_dir, link=opts.link)
    return []


def _write_outputs(out: Path, chosen: list[dict[str, Any]], index: dict[str, Any] | None,
                   fixes: list[dict[str, Any]]) -> None:
    from llava.prepare.dataset_manifest import FIXES_NAME

    write_records(out / DATA_NAME, chosen)
    if index is None:
        (out / INDEX_NAME).unlink(missing_ok=True)
    else:
        write_index(out / INDEX_NAME, index)
    if fixes:
        write_jsonl(out / FIXES_NAME, fixes)
    else:
        (out / FIXES_NAME).unlink(missing_ok=True)


def _manifest_extra(
    opts: DataOptions, source: StageSource, fetched: FetchedSource, pool: Pool,
    index: dict[str, Any] | None, fixes: list[dict[str, Any]], roots: dict[str, Path],
) -> dict[str, Any]:
    """What the dataset manifest records about how the folder was made."""
    subset = None
    if index is not None:
        subset = {key: index.get(key) for key in ("method", "seed", "size", "ids_sha256", "source_sha256")}
        subset["from_index"] = str(opts.from_index) if opts.from_index else None
    return {
        "stage": opts.stage,
        "description": source.description,
        "source": fetched.record(),
        "pool": {"size": len(pool.records), "source_sha256": pool.source_sha256, "filters": pool.filters,
                 "dropped": pool.dropped, "renamed_ids": pool.renamed_ids},
        "subset": subset,
        "image_fixes": len(fixes),
        "image_roots": {name: str(path) for name, path in roots.items()},
        "image_archives": pool.image_archives,
        "link": opts.link if source.image_sources else None,
        "lengths_counted_with": str(opts.tokenizer) if opts.tokenizer else "words",
    }


def prepare_data(opts: DataOptions) -> VerifyReport:
    """Build, verify and record one stage's dataset folder; returns the verification report."""
    from llava.prepare.dataset_manifest import write_dataset_manifest
    from llava.prepare.stats import load_tokenizer

    started = time.time()
    source = stage_source(opts.stage, opts.sources_file)
    tokenizer = load_tokenizer(opts.tokenizer)  # fail on a bad --tokenizer or --image-root before downloading
    roots = parse_image_roots(opts.image_roots, source.image_sources)
    ensure_dir(opts.out, "dataset folder (--out)")
    claim_folder(opts.out, DATASET_KIND, inputs={"--source-dir": opts.source_dir, "--downloads": opts.downloads},
                 what="dataset folder (--out)")
    (opts.out / MANIFEST_NAME).unlink(missing_ok=True)  # until the new one is written, the folder is unfinished
    fetched = fetch_source(source, opts.downloads, endpoint=opts.endpoint, local_dir=opts.source_dir,
                           revision=opts.revision)
    pool = _recap_pool(source, fetched) if source.format == "recap_parquet" else _json_pool(source, fetched, opts)
    index = _subset(pool, source, opts)
    if index is None:
        chosen = pool.records
    else:
        by_id = {record["id"]: record for record in pool.records}
        chosen = [by_id[sample_id] for sample_id in index["ids"]]
    fixes = _materialise_images(source, fetched, pool, chosen, opts, roots, whole_pool=index is None)
    _write_outputs(opts.out, chosen, index, fixes)
    report = verify_dataset(opts.out, expects_image=source.expects_image, recipe_name=source.recipe,
                            tokenizer=tokenizer, workers=opts.workers, fresh_quarantine=True, in_place=True)
    extra = _manifest_extra(opts, source, fetched, pool, index, fixes, roots)
    write_dataset_manifest(opts.out, report, extra=extra, started=started)
    return report


def reverify(dataset_dir: Path, *, stage: str | None = None, sources_file: Path | None = None,
             tokenizer_dir: Path | None = None, workers: int | None = None, apply: bool = True,
             max_length: int | None = None) -> VerifyReport:
    """`prepare verify DIR`: re-check a dataset folder (ours or a user's own) and refresh its manifest."""
    from llava.prepare.dataset_manifest import previous_extra, write_dataset_manifest
    from llava.prepare.stats import load_tokenizer

    if not Path(dataset_dir).is_dir():
        raise KitError(f"dataset folder {dataset_dir} does not exist")
    started = time.time()
    extra = previous_extra(dataset_dir)
    stage = stage or extra.get("stage")
    source = stage_source(stage, sources_file) if stage else None
    report = verify_dataset(
        dataset_dir, expects_image=source.expects_image if source else None,
        recipe_name=source.recipe if source else None, tokenizer=load_tokenizer(tokenizer_dir),
        max_length=max_length, workers=workers, apply=apply,
    )
    if apply:
        write_dataset_manifest(dataset_dir, report, extra={**extra, "stage": stage}, started=started)
    return report
