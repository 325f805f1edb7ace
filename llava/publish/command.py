"""`llava-kit publish CHECKPOINT --repo-id ORG/NAME`: push a checkpoint with a card built from its real results."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish",
        help="push a checkpoint, its eval results and a model card to the Hugging Face Hub",
        description=(
            "Build the Hub repo folder (weights, config, processor, tokenizer, chat template, generation "
            "config, README.md card with metadata and results, chart) and push it. Refuses a checkpoint "
            "without an eval result for its exact weights, one that fails to load and generate, or a "
            "missing token (read from the file HF_TOKEN_PATH names, or HF_TOKEN)."
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="HF-native checkpoint folder, e.g. checkpoints/stage2")
    parser.add_argument("--repo-id", required=True, help="target repo, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--dry-run", type=Path, metavar="OUT",
                        help="write the repo folder to OUT and stop (no token needed, nothing uploaded)")
    parser.add_argument("--eval", type=Path, dest="eval_results", metavar="RESULTS_JSON",
                        help="results.json of `llava-kit eval` (default: searched in CHECKPOINT/eval and runs/*/eval)")
    parser.add_argument("--endpoint", default=None,
                        help="Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llava.publish.service import PublishRequest, publish

    report = publish(PublishRequest(
        checkpoint=args.checkpoint, repo_id=args.repo_id, private=args.private, dry_run=args.dry_run,
        eval_results=args.eval_results, endpoint=args.endpoint,
    ))
    print(f"weights sha256 {report.weights_sha256}; eval results {report.results_path}")
    print(f"load-and-generate check passed (answer to the probe image: {report.sample_answer!r})")
    if report.folder is not None:
        print(f"dry run: repo folder written to {report.folder} (nothing uploaded)")
    elif report.push.commit_url is None:
        print(f"nothing to upload: {report.push.repo_url} already holds identical files")
    else:
        print(f"uploaded {len(report.push.changed)} changed file(s); commit: {report.push.commit_url}")
    return 0
