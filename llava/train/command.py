"""`llava-kit train RECIPE`: one stage; re-launches itself under torchrun for several processes."""

from __future__ import annotations

import math
import os
import sys

from llava.errors import KitError
from llava.train.signals import stop_grace_seconds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train one stage from a recipe (stages/stage1.yaml, stage1_5, stage2, stages/smoke/...)",
        description="Train one stage. With --nproc/NUM_GPUS > 1 the command re-launches itself with torchrun "
                    "(NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT are read from the environment).")
    parser.add_argument("recipe", help="recipe YAML path or name (stage1 | stage1_5 | stage2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set training.max_steps=10 (repeatable)")
    parser.add_argument("--nproc", type=int, default=None,
                        help="processes per node (default: $NUM_GPUS or 1)")
    parser.add_argument("--home", help="root holding models/ datasets/ checkpoints/ runs/ (default $LLAVA_KIT_HOME or .)")
    parser.add_argument("--profile", default=os.environ.get("LLAVA_KIT_PROFILE") or None,
                        help="speed profile applied after --set, keeping the global batch: seed | fast "
                             "(stages/profiles/) or a YAML path (default: $LLAVA_KIT_PROFILE, else none: "
                             "the recipe as written); see docs/performance.md")
    parser.add_argument("--allow-recipe-change", action="store_true",
                        help="resume a stage whose resumable state was saved under other recipe values (e.g. more "
                             "training.max_steps): the steps already done keep the old values and the LR schedule "
                             "is rebuilt for the new ones at the saved step, so the result matches no fresh run; "
                             "without it such a resume is refused with the changed keys listed")
    parser.set_defaults(func=run)


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    env = os.environ
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            f"--nnodes={env.get('NNODES', '1')}", f"--node_rank={env.get('NODE_RANK', '0')}",
            f"--master_addr={env.get('MASTER_ADDR', '127.0.0.1')}", f"--master_port={env.get('MASTER_PORT', '29500')}",
            # torchrun SIGKILLs workers 30 s after forwarding SIGTERM unless told otherwise: give them the
            # kit's stop grace (llava.train.signals) to finish the step and save
            f"--shutdown-timeout={math.ceil(stop_grace_seconds()) + 5}",
            "-m", "llava.cli", "train", *argv]


def processes_per_node(nproc: int | None) -> int:
    """--nproc, else $NUM_GPUS, else 1; read when `train` runs so a bad NUM_GPUS breaks no other verb."""
    if nproc is not None:
        if nproc < 1:
            raise KitError(f"--nproc {nproc}: needs a positive number of processes per node")
        return nproc
    raw = os.environ.get("NUM_GPUS", "1")
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise KitError(f"NUM_GPUS={raw!r} is not a positive whole number; set it to the GPUs per node to train "
                       "on (or pass --nproc N)")
    return value


def run(args) -> int:
    from llava.profiles import apply_profile
    from llava.recipe import load_recipe

    # yaml + pydantic only: a bad recipe or --set is reported once, before torch loads or torchrun starts
    recipe = apply_profile(load_recipe(args.recipe, args.overrides), args.profile)
    args.nproc = processes_per_node(args.nproc)
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        # no --nproc here: torchrun's parser would take it for its own --nproc-per-node (ambiguous
        # prefix); the workers see LOCAL_RANK and do not re-launch
        argv = [args.recipe, *[f"--set={o}" for o in args.overrides]]
        if args.home:
            argv.append(f"--home={args.home}")
        if args.profile:
            argv.append(f"--profile={args.profile}")
        if args.allow_recipe_change:
            argv.append("--allow-recipe-change")
        os.execv(sys.executable, torchrun_command(args.nproc, argv))
    from llava.paths import VolumeLayout
    from llava.train.run import train_stage

    result = train_stage(recipe, VolumeLayout.from_env(args.home), allow_recipe_change=args.allow_recipe_change)
    print(f"{recipe.name}: train_loss {result.train_loss:.4f} after {result.global_steps} steps "
          f"({result.skipped} samples skipped) -> {result.output}")
    return 0
