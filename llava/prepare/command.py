"""`llava-kit prepare models | data --stage S | verify DIR`: every training input, reproducible and checked."""

from __future__ import annotations

import argparse
from pathlib import Path

STAGE_CHOICES = ("1", "1.5", "2")
DEFAULT_TOKENIZER = "qwen2.5-0.5b-instruct"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="download models and datasets, draw seeded subsets, verify, write manifests",
        description="Fetch and check every training input before a GPU hour is spent on it.",
    )
    verbs = parser.add_subparsers(dest="prepare_verb", required=True, metavar="WHAT")
    _register_models(verbs)
    _register_data(verbs)
    _register_verify(verbs)


def _register_models(verbs) -> None:
    models = verbs.add_parser("models", help="Qwen2.5-0.5B-Instruct and SigLIP-so400m into models/")
    models.add_argument("--models-root", type=Path, help="default: the volume layout's models/ (LLAVA_KIT_MODELS)")
    models.add_argument("--revision-file", "--sources", dest="sources", type=Path,
                        help="a model_sources.yaml with other revisions (default: the packaged one)")
    models.add_argument("--endpoint", help="Hub endpoint or mirror (default: HF_ENDPOINT or huggingface.co)")
    models.set_defaults(func=run_models)


def _register_data(verbs) -> None:
    data = verbs.add_parser("data", help="build datasets/stage{1,1_5,2}/ from the Hub (see docs/data.md)")
    data.add_argument("--stage", required=True, choices=STAGE_CHOICES)
    data.add_argument("--out", type=Path, help="dataset folder (default: datasets/<stage dir> of the volume layout)")
    data.add_argument("--sources", type=Path, help="dataset source table (default: llava/prepare/dataset_sources.yaml)")
    data.add_argument("--endpoint", help="Hub endpoint or mirror (default: HF_ENDPOINT or huggingface.co)")
    data.add_argument("--revision", help="override the source revision (branch, tag or commit): the table's "
                      "pin and a first-use pin alike")
    data.add_argument("--source-dir", type=Path, help="use source files already on disk instead of downloading")
    data.add_argument("--downloads", type=Path, help="download cache (default: datasets/.downloads)")
    data.add_argument("--seed", type=int, help="subset seed (default: from the source table)")
    data.add_argument("--size", type=int, help="subset size (default: from the source table; 0 keeps everything)")
    data.add_argument("--from-index", type=Path, help="rebuild the subset listed in a published subset_index.json")
    data.add_argument("--image-root", action="append", default=[], metavar="NAME=PATH",
                      help="stage 2 image source folder (coco, gqa, ocr_vqa, textvqa, vg); a bare PATH holds them all")
    data.add_argument("--keep-ocr-vqa", action="store_true",
                      help="keep ocr_vqa records (the seed dropped them before sampling)")
    data.add_argument("--link", choices=("hardlink", "copy", "symlink"), default="hardlink",
                      help="how stage-2 images enter the dataset folder (hardlink falls back to copy)")
    _add_check_options(data)
    data.set_defaults(func=run_data)


def _register_verify(verbs) -> None:
    verify = verbs.add_parser("verify", help="re-check a dataset folder, quarantine bad samples, refresh its manifest")
    verify.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR")
    verify.add_argument("--stage", choices=STAGE_CHOICES, help="default: the stage its manifest records")
    verify.add_argument("--sources", type=Path, help="dataset source table (default: the packaged one)")
    verify.add_argument("--check-only", action="store_true", help="report only; change nothing; exit 1 on any fault")
    verify.add_argument("--max-length", type=_positive_int, metavar="TOKENS",
                        help="quarantine samples longer than this (default: the stage recipe's model_max_length)")
    _add_check_options(verify)
    verify.set_defaults(func=run_verify)


def _add_check_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", type=Path,
                        help="tokenizer folder for token-length histograms "
                             f"(default: models/{DEFAULT_TOKENIZER} if present)")
    parser.add_argument("--workers", type=int, help="image-decoding threads (default: one per core)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.05,
                        help="fail when more than this fraction of samples is quarantined (default 0.05)")


def _layout():
    from llava.paths import VolumeLayout

    return VolumeLayout.from_env()


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of tokens, got {text!r}")
    return int(text)


def _tokenizer_dir(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    candidate = _layout().models / DEFAULT_TOKENIZER
    return candidate if (candidate / "tokenizer_config.json").is_file() else None


def run_models(args: argparse.Namespace) -> int:
    from llava.prepare.models import prepare_models

    root = args.models_root or _layout().models
    for folder in prepare_models(root, endpoint=args.endpoint, sources=args.sources):
        print(f"model ready: {folder}")
    return 0


def run_data(args: argparse.Namespace) -> int:
    from llava.prepare.prepare_data import DataOptions, prepare_data
    from llava.prepare.sources import stage_source

    layout = _layout()
    out = args.out or layout.datasets / stage_source(args.stage, args.sources).dir
    opts = DataOptions(
        stage=args.stage, out=out, downloads=args.downloads or layout.datasets / ".downloads",
        sources_file=args.sources, endpoint=args.endpoint, source_dir=args.source_dir, revision=args.revision,
        seed=args.seed, size=args.size, from_index=args.from_index, image_roots=args.image_root,
        keep_ocr_vqa=args.keep_ocr_vqa, link=args.link, tokenizer=_tokenizer_dir(args.tokenizer),
        workers=args.workers,
    )
    report = prepare_data(opts)
    _print_report(out, report)
    _enforce_bad_fraction(out, report, args.max_bad_fraction,
                          "a missing or wrong --image-root or a cut-short download is the usual cause")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from llava.prepare.prepare_data import reverify

    report = reverify(args.dataset_dir, stage=args.stage, sources_file=args.sources,
                      tokenizer_dir=_tokenizer_dir(args.tokenizer), workers=args.workers, apply=not args.check_only,
                      max_length=args.max_length)
    _print_report(args.dataset_dir, report)
    if args.check_only:
        return 1 if report.faults else 0
    if report.stamps:
        print(f"  size and sha256 of {len(report.stamps)} images -> {args.dataset_dir / 'image_digests.tsv'}: training "
              "skips (and lists in skips.jsonl) a sample whose image changes after this verify")
    if report.data_file != "data.json":
        verified = args.dataset_dir / report.data_file
        print(f"{args.dataset_dir / 'data.json'} is unchanged; the {report.kept} samples that passed are in {verified}: "
              f"train on them with --set data.path={verified}")
    _enforce_bad_fraction(args.dataset_dir, report, args.max_bad_fraction,
                          f"images missing from {args.dataset_dir / 'images'} (data.json names them relative "
                          "to that folder) or a cut-short copy is the usual cause")
    return 0


def _print_report(folder: Path, report) -> None:
    print(f"{folder}: {report.kept} of {report.total} samples kept, {len(report.faults)} quarantined; "
          f"{report.images_checked} images decoded at {report.images_per_second} images/s")
    for reason, count in report.reasons().items():
        print(f"  {count:>7}  {reason}")
    for row in report.faults[:20]:
        print(f"  quarantined {row['id']}: {row['reason']}" + (f" ({row['image']})" if row.get("image") else ""))
    if len(report.faults) > 20:
        print(f"  ... {len(report.faults) - 20} more in {folder / 'quarantine.jsonl'}")
    if report.length_check:
        print(f"  {report.length_check}")
    _print_conversions(report.conversions)
    stats = report.stats
    for key in ("text_tokens", "image_tokens", "total_tokens"):
        hist = stats.get(key)
        if hist and hist.get("n"):
            unit = stats["text_unit"] if key == "text_tokens" else "tokens"
            print(f"  {key}: p50 {hist['p50']}, p95 {hist['p95']}, max {hist['max']} {unit}")
    if stats.get("over_model_max_length"):
        print(f"  warning: {stats['over_model_max_length']} samples exceed "
              f"model_max_length {stats['model_max_length']}")


def _print_conversions(conversions: dict[str, list[str]]) -> None:
    """Kept images whose RGB conversion loses information (kept, as the original LLaVA loader does)."""
    if not conversions:
        return
    total = sum(len(paths) for paths in conversions.values())
    print(f"  {total} kept images lose information when converted to RGB for the model (docs/data.md, "
          "\"Image modes\"):")
    for reason, paths in conversions.items():
        more = f", ... {len(paths) - 3} more" if len(paths) > 3 else ""
        print(f"  {len(paths):>7}  {reason}: {', '.join(paths[:3])}{more}")


def _enforce_bad_fraction(folder: Path, report, limit: float, usual_cause: str) -> None:
    from llava.errors import KitError

    if report.total and len(report.faults) / report.total > limit:
        raise KitError(
            f"{len(report.faults)} of {report.total} samples in {folder} were quarantined "
            f"(more than --max-bad-fraction {limit}): see {folder / 'quarantine.jsonl'}; {usual_cause}"
        )
