"""Two nodes on one box: two `llava-kit train --nnodes 2 --node-rank 0|1` launches (one process each)
meet over a c10d rendezvous on 127.0.0.1, under plain DDP and under ZeRO-3 (the `cpu-test` profile).

They must end equal to a single-node 2-process run at the same global batch (the 1-vs-2-process
tolerances of tests/test_core_ddp.py), write each checkpoint once into the shared folder, resume
bit-identical after a kill -9 of one node, and stop together at one step when one node's launcher
gets SIGTERM. Four steps of the tiny stage 2 with a checkpoint every two: the fewest that put a
resume between two saves.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from llava.train.checkpointing import complete_checkpoints, latest_checkpoint
from llava.train.distributed import free_port
from train_cli import (assert_bit_identical, events, kill_tree, logged_steps, output_of, run_train, train_args,
                       train_env, wait_for, weights)

# pytest-timeout counts the module fixture's runs (two jobs) in the first test: 600 s is too little on a loaded box
pytestmark = [pytest.mark.slow, pytest.mark.extended, pytest.mark.timeout(1800)]

STEPS, KILL_AT, EVERY = 4, 3, 2
SIGTERM_STEPS = 8  # the whole epoch: room for the signal to land between the first save and the end
GRACE_S = 60
NODE_TIMEOUT_S = 600  # the first DeepSpeed run compiles an op; the box is shared
BACKENDS = {"ddp": ["deepspeed=null", "training.gradient_checkpointing=true"], "zero3": ["deepspeed=cpu-test"]}


def overrides(backend: str) -> list[str]:
    return ["init.from_checkpoint={checkpoints}/stage1", "training.per_device_batch=2", "training.grad_accum=4",
            "training.num_gpus=1", f"training.max_steps={STEPS}", "training.logging_steps=1",
            "training.save_strategy=no", f"checkpointing.resume_every_steps={EVERY}", *BACKENDS[backend]]


def start_nodes(world: Path, name: str, backend: str, logs: Path, node_env: dict[int, dict] | None = None,
                homes: dict[int, Path] | None = None, extra: tuple[str, ...] = (),
                attempt: str = "") -> list[subprocess.Popen]:
    """Both nodes' launchers, each `llava-kit train --nproc 1 --nnodes 2 --node-rank R`, output to files
    (`attempt` names a rerun's logs, so they do not overwrite the first launch's)."""
    port = str(free_port())
    nodes = []
    for rank in (0, 1):
        home = (homes or {}).get(rank, world)
        args = [*train_args("stage2", name, [*overrides(backend), *extra]), "--nproc=1", "--nnodes=2", f"--node-rank={rank}",
                "--master-addr=127.0.0.1", f"--master-port={port}"]
        env = train_env(home, 1, LLAVA_KIT_STOP_GRACE_S=str(GRACE_S), **(node_env or {}).get(rank, {}))
        log = logs / f"{name}{attempt}-node{rank}.log"
        with open(log, "w") as sink:
            node = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
        node.output_path = log
        nodes.append(node)
    return nodes


def finish(nodes: list[subprocess.Popen], timeout: float = NODE_TIMEOUT_S) -> list[int]:
    """Both exit codes; a node still running after `timeout` (a hung peer) fails the test."""
    codes = []
    for node in nodes:
        try:
            codes.append(node.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            for other in nodes:
                kill_tree(other)
            raise AssertionError(f"a node still runs {timeout} s on:\n{output_of(node)[-3000:]}") from None
    return codes


def train_two_nodes(world: Path, name: str, backend: str, logs: Path, **kwargs) -> str:
    nodes = start_nodes(world, name, backend, logs, **kwargs)
    codes = finish(nodes)
    both = "\n".join(output_of(node) for node in nodes)
    assert codes == [0, 0], "\n".join(f"node {rank}, exit {code}:\n{output_of(node)[-2000:]}"
                                      for rank, (node, code) in enumerate(zip(nodes, codes)))
    return both


def checkpoint_saves(world: Path, name: str) -> list[int]:
    return [e["step"] for e in events(world, name) if e["event"] == "checkpoint"]


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request, stage1_run, tiny_world, tmp_path_factory):
    """(backend, the single-node 2-process reference, the uninterrupted two-node run, a folder for logs)."""
    name, logs = request.param, tmp_path_factory.mktemp(f"nodes-{request.param}")
    single = run_train(tiny_world, "stage2", f"mn-{name}-1node", overrides(name), nproc=2, timeout=NODE_TIMEOUT_S)
    assert single.returncode == 0, single.stderr[-4000:]
    train_two_nodes(tiny_world, f"mn-{name}-2nodes", name, logs)
    return name, f"mn-{name}-1node", f"mn-{name}-2nodes", logs


def test_two_nodes_equal_one_node_with_two_processes(backend, tiny_world):
    name, single, double, _ = backend
    one, two = logged_steps(tiny_world, single), logged_steps(tiny_world, double)
    assert [s["step"] for s in one] == [s["step"] for s in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3), a["step"]
    a, b = weights(tiny_world / "checkpoints" / single), weights(tiny_world / "checkpoints" / double)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    initial = weights(tiny_world / "checkpoints" / "stage1")
    assert any(not torch.equal(b[key], initial[key]) for key in b if "language_model" in key)
    body = json.loads((tiny_world / "checkpoints" / double / "manifest.json").read_text())
    assert body["extra"]["world_size"] == 2 and body["metrics"]["global_steps"] == STEPS


def test_two_nodes_write_each_checkpoint_once(backend, tiny_world):
    """Rank 0 of the job publishes: one save event per scheduled step, one marked folder each, and in
    each the RNG state of both ranks (and, under ZeRO-3, both ranks' shards)."""
    name, _, double, _ = backend
    assert checkpoint_saves(tiny_world, double) == list(range(EVERY, STEPS + 1, EVERY))
    saved = complete_checkpoints(tiny_world / "runs" / double / "trainer")
    assert [c.step for c in saved] == list(range(EVERY, STEPS + 1, EVERY))[-len(saved):]
    files = saved[-1].marker["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(files)
    if name == "zero3":
        assert sum("optim_states" in f for f in files) == 2, sorted(files)
    assert not (tiny_world / "runs" / double / "trainer" / ".staging").exists()


def test_kill_of_one_node_then_rerun_of_both_is_bit_identical(backend, tiny_world):
    """Node 1's worker dies by SIGKILL at the end of step KILL_AT (a lost box): node 0 must not hang,
    and the same two commands resume from the last checkpoint to the uninterrupted run's weights."""
    name, _, double, logs = backend
    run = f"mn-{name}-killed"
    nodes = start_nodes(tiny_world, run, name, logs, node_env={1: {"LLAVA_KIT_TEST_KILL_AT_STEP": str(KILL_AT)}})
    codes = finish(nodes)
    assert codes[0] != 0 and codes[1] != 0, [output_of(n)[-2000:] for n in nodes]
    assert not (tiny_world / "checkpoints" / run).exists()
    train_two_nodes(tiny_world, run, name, logs, attempt="-rerun")
    assert [e["step"] for e in events(tiny_world, run) if e["event"] == "resume"] == [KILL_AT // EVERY * EVERY]
    assert_bit_identical(tiny_world / "checkpoints" / double, tiny_world / "checkpoints" / run)


def test_sigterm_to_one_nodes_launcher_stops_the_job_at_one_step(stage1_run, tiny_world, tmp_path):
    """Preemption of one node: SIGTERM to node 1's launcher (torchrun forwards it to its worker);
    node 0's rank learns of it at the step end; both stop at the same step after one checkpoint."""
    name = "mn-sigterm"
    nodes = start_nodes(tiny_world, name, "ddp", tmp_path, extra=(f"training.max_steps={SIGTERM_STEPS}",))
    marker = tiny_world / "runs" / name / "trainer" / f"checkpoint-{EVERY}" / "COMPLETE.json"
    wait_for(marker.exists, nodes[0], timeout=NODE_TIMEOUT_S, what="the first checkpoint")
    nodes[1].send_signal(signal.SIGTERM)
    codes = finish(nodes, timeout=GRACE_S + 30)
    output = "\n".join(output_of(node) for node in nodes)
    assert codes[0] != 0 and codes[1] != 0, output[-3000:]
    saved = latest_checkpoint(tiny_world / "runs" / name / "trainer")
    assert saved is not None and saved.marker["reason"] == "SIGTERM", output[-3000:]
    assert EVERY < saved.step < SIGTERM_STEPS and saved.marker["fingerprint"]["world_size"] == 2
    said = f"stopped by SIGTERM after step {saved.step}; resumable state is in {saved.path}"
    assert all(said in output_of(node) for node in nodes), output[-3000:]  # the same step on both nodes
    assert output.count("SIGTERM received: finishing the current step") == 1
    assert output.count("SIGTERM received by another rank: finishing the current step") == 1
    lifecycle = [(e["event"], e.get("step")) for e in events(tiny_world, name)]
    assert lifecycle.count(("checkpoint", saved.step)) == 1 and lifecycle[-1] == ("stop", saved.step)
    assert not (tiny_world / "checkpoints" / name).exists()


def test_node_local_checkpoint_folders_are_refused_before_training(stage1_run, tiny_world, tmp_path):
    """Each node with its own LLAVA_KIT_HOME (node-local disks): rank 0 alone would publish checkpoints
    that the other node's ranks never see, so a resume could not work. Both nodes stop at start."""
    local = tmp_path / "node1-home"
    for part in ("models", "datasets", "checkpoints/stage1"):
        shutil.copytree(tiny_world / part, local / part)
    nodes = start_nodes(tiny_world, "mn-local", "ddp", tmp_path, homes={1: local}, extra=("training.max_steps=1",))
    codes = finish(nodes)
    assert codes[0] != 0 and codes[1] != 0
    for node in nodes:  # each rank says why (torchrun then prints its own ChildFailedError report)
        before, said, _ = output_of(node).partition("is not one folder shared by all nodes")
        assert said and "Traceback" not in before, output_of(node)[-3000:]
    for home in (tiny_world, local):  # no step was trained, and the probe file is gone
        assert not [p.name for p in (home / "runs" / "mn-local").glob("trainer/*")]
