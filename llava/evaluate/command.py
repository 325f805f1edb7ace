"""`llava-kit eval`: evaluate a checkpoint on a suite, or (`eval score`) score a predictions file.

One verb, two forms, told apart by the first positional argument: the word `score` selects the
scoring form; anything else is a checkpoint folder (write ./score for a checkpoint named so).
"""

from __future__ import annotations

import argparse
from pathlib import Path

USAGE = """
  llava-kit eval CHECKPOINT --suite SUITE [--backend {builtin,vlmevalkit}] [--tsv TSV] [--out DIR] [--limit N]
  llava-kit eval score --tsv TSV --predictions FILE --out DIR [--suite SUITE] [--checkpoint CHECKPOINT]"""

DESCRIPTION = """\
Evaluate CHECKPOINT on a suite (eval/*.yaml), e.g. eval/mmbench_dev_en.yaml, and write acc.csv
(VLMEvalKit layout), results.json, table.md (with deltas against the seed and official tables),
chart.png, predictions.jsonl and questions.csv to --out (default runs/<checkpoint name>/eval).

  --backend builtin     answers with the checkpoint here (CPU or GPU) using VLMEvalKit's prompt,
                        scores with VLMEvalKit's exact-matching circular rules; resumable.
  --backend vlmevalkit  runs VLMEvalKit's run.py (the pinned ms-vlmeval artifact, installed for
                        $VLMEVALKIT_PYTHON, default this python: the eval image) on the checkpoint
                        through LLaVA_OneVision_HF. Needs a CUDA device (VLMEvalKit's class moves
                        the model there in float16); on CPU it refuses: use builtin.

`eval score` scores an existing predictions file (predictions.jsonl or VLMEvalKit's .xlsx) against
a TSV and writes the same report files.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint on MMBench (VLMEvalKit or built-in), or score predictions",
        usage=USAGE, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="CHECKPOINT|score",
                        help="checkpoint folder to evaluate, or the word `score`")
    parser.add_argument("--suite", type=Path, help="suite YAML (required to evaluate a checkpoint)")
    parser.add_argument("--backend", choices=("builtin", "vlmevalkit"), default="builtin")
    parser.add_argument("--tsv", type=Path, help="benchmark TSV (default: the suite's file in $LMUData)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/<checkpoint name>/eval)")
    parser.add_argument("--limit", type=int, help="builtin only: the first N questions (all their passes)")
    parser.add_argument("--external", action="store_true",
                        help="accept a checkpoint without a llava-kit manifest (e.g. a llava-hf model)")
    parser.add_argument("--predictions", type=Path, help="score only: predictions.jsonl or VLMEvalKit .xlsx")
    parser.add_argument("--checkpoint", type=Path, help="score only: the checkpoint the predictions came from")
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args._parser
    if args.target == "score":
        return _score(args, parser)
    if args.predictions is not None or args.checkpoint is not None:
        parser.error("--predictions/--checkpoint belong to `llava-kit eval score`")
    if args.suite is None:
        parser.error("--suite is required to evaluate a checkpoint (e.g. --suite eval/mmbench_dev_en.yaml)")
    from llava.evaluate.service import run_eval

    run_eval(Path(args.target), args.suite, backend=args.backend, out_dir=args.out, tsv=args.tsv,
             limit=args.limit, external=args.external)
    return 0


def _score(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    missing = [flag for flag, value in (("--predictions", args.predictions), ("--out", args.out)) if value is None]
    if args.tsv is None and args.suite is None:
        missing.append("--tsv")
    if missing:
        parser.error(f"`eval score` needs {' '.join(missing)}")
    if args.limit is not None or args.backend != "builtin" or args.external:
        parser.error("--limit/--backend/--external do not apply to `eval score`")
    from llava.evaluate.service import score_predictions

    score_predictions(args.tsv, args.predictions, args.out, suite_path=args.suite, checkpoint=args.checkpoint)
    return 0
