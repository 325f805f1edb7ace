"""`llava-kit train RECIPE`: one stage; re-launches itself under torchrun for several processes."""

from __future__ import annotations

import json
import math
import os
import sys

from llava.errors import KitError
from llava.train.launch import Launch
from llava.train.signals import stop_grace_seconds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train one stage from a recipe (stages/stage1.yaml, stage1_5, stage2, stages/smoke/...)",
        description="Train one stage. With --nproc/NUM_GPUS > 1 or --nnodes > 1 the command re-launches itself "
                    "with torchrun; several nodes meet over a c10d rendezvous at --master-addr:--master-port "
                    "(docs/containers.md, 'Several nodes').")
    parser.add_argument("recipe", help="recipe YAML path or name (stage1 | stage1_5 | stage2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value, e.g. --set training.max_steps=10 (repeatable)")
    add_launch_flags(parser)
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


def add_launch_flags(parser) -> None:
    """Where this node sits in the job; unset flags fall back to the variables launchers set, read only
    when `train` runs (`launch_from`), so a bad NUM_GPUS breaks no other verb."""
    parser.add_argument("--nproc", type=int, help="processes per node (default: $NUM_GPUS or 1)")
    parser.add_argument("--nnodes", type=int, help="nodes in the job (default: $NNODES or 1)")
    parser.add_argument("--node-rank", type=int,
                        help="this node's index; node 0 hosts the rendezvous (default: $NODE_RANK or 0)")
    parser.add_argument("--master-addr", help="node 0's address, the same on every node (default: $MASTER_ADDR or 127.0.0.1)")
    parser.add_argument("--master-port", type=int, help="rendezvous port on node 0 (default: $MASTER_PORT or 29500)")
    parser.add_argument("--print-launch", action="store_true", default=bool(os.environ.get("LLAVA_KIT_PRINT_LAUNCH")),
                        help="print, as JSON, the torchrun command this node would run, and exit (checks a "
                             "cluster template; also set by LLAVA_KIT_PRINT_LAUNCH=1)")


# NCCL settings under which a collective waiting on a dead or hung peer fails instead of waiting forever
# (torch 2.13's names; docs/reliability.md, "A hang", says why each). The launch templates and compose
# set the same values; a value already in the environment wins.
NCCL_TIMEOUT_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}

# launch field -> (the variable launchers set, its default)
LAUNCH_ENV = {"nproc": ("NUM_GPUS", 1), "nnodes": ("NNODES", 1), "node_rank": ("NODE_RANK", 0),
              "master_port": ("MASTER_PORT", 29500)}


def launch_from(args) -> Launch:
    """Flags first, then the launcher's variables; a variable that is not a whole number is named."""
    values = {field: getattr(args, field) if getattr(args, field) is not None else _env_int(var, default)
              for field, (var, default) in LAUNCH_ENV.items()}
    launch = Launch(**values, master_addr=args.master_addr or os.environ.get("MASTER_ADDR") or "127.0.0.1")
    launch.check()
    return launch


def _env_int(var: str, default: int) -> int:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise KitError(f"{var}={raw!r} is not a whole number; set it to a positive whole number "
                       f"(or pass the matching `llava-kit train` flag)") from None


def torchrun_command(launch: Launch, argv: list[str]) -> list[str]:
    # torchrun would SIGKILL workers 30 s after forwarding SIGTERM: give them the kit's stop grace
    # (llava.train.signals) to finish the step and save
    return [sys.executable, "-m", "torch.distributed.run",
            *launch.torchrun_args(math.ceil(stop_grace_seconds()) + 5), "-m", "llava.cli", "train", *argv]


def _stop_with_parent() -> None:
    """In torchrun's process, before it starts: a SIGTERM when the launcher dies (even by SIGKILL), so the
    job never outlives it (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def supervise(command: list[str], run_dir) -> int:
    """Run torchrun as a child and return its exit status, HANG_EXIT_CODE when a rank's step watchdog fired.

    torchrun reports any failed worker as exit 1; the restart policies of the launch templates (launch/)
    need to tell a hang, worth restarting from the last checkpoint, from a bad recipe. torchrun runs in
    its own process group, so a terminal's Ctrl-C reaches it once, through here; SIGTERM (docker stop,
    a preemption notice) is passed on as it comes. With NCCL, collectives time out instead of waiting
    forever (NCCL_TIMEOUT_ENV, set here unless the environment already sets them).
    """
    import signal
    import subprocess
    import time

    from llava.train.watchdog import HANG_EXIT_CODE, hang_files_since

    started = time.time()
    child = subprocess.Popen(command, env={**NCCL_TIMEOUT_ENV, **os.environ}, process_group=0,
                             preexec_fn=_stop_with_parent)
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum)) for sig in forwarded}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    hung = hang_files_since(run_dir, started)
    if code != 0 and hung:
        print(f"error: a rank stopped making progress (stacks: {', '.join(map(str, hung))}); exiting with "
              f"{HANG_EXIT_CODE} so the job is restarted from the last checkpoint", file=sys.stderr)
        return HANG_EXIT_CODE
    return code if code >= 0 else 128 - code


def run(args) -> int:
    from llava.profiles import apply_profile
    from llava.recipe import load_recipe
    from llava.train.resize import grad_accum_for

    # yaml + pydantic only: a bad recipe or --set is reported once, before torch loads or torchrun starts
    recipe = apply_profile(load_recipe(args.recipe, args.overrides), args.profile)
    launch = launch_from(args)
    grad_accum_for(recipe.training, launch.nproc * launch.nnodes, str(recipe.source))  # refused before torchrun
    if launch.distributed and "LOCAL_RANK" not in os.environ:
        # no launch flags here: torchrun's parser would take --nproc for its own --nproc-per-node
        # (ambiguous prefix); the workers see LOCAL_RANK and do not re-launch
        argv = [args.recipe, *[f"--set={o}" for o in args.overrides]]
        if args.home:
            argv.append(f"--home={args.home}")
        if args.profile:
            argv.append(f"--profile={args.profile}")
        if args.allow_recipe_change:
            argv.append("--allow-recipe-change")
        command = torchrun_command(launch, argv)
        if args.print_launch:
            print(json.dumps({"torchrun": command}))
            return 0
        from llava.paths import VolumeLayout
        from llava.train.run_folder import claim_run_folder

        # claimed here, before any rank writes a log there: a refusal is one message from one process
        run_dir = claim_run_folder(VolumeLayout.from_env(args.home).runs / recipe.name)
        return supervise(command, run_dir)
    if args.print_launch:
        print(json.dumps({"torchrun": None}))  # one process: trains in this one, no torchrun
        return 0
    from llava.paths import VolumeLayout
    from llava.train.run import train_stage

    result = train_stage(recipe, VolumeLayout.from_env(args.home), allow_recipe_change=args.allow_recipe_change)
    print(f"{recipe.name}: train_loss {result.train_loss:.4f} after {result.global_steps} steps "
          f"({result.skipped} samples skipped) -> {result.output}")
    return 0
