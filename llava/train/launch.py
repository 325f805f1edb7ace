"""This node's place in the job, as torchrun's arguments (no torch import: the CLI parser builds it)."""

from __future__ import annotations

from dataclasses import dataclass

from llava.errors import KitError


@dataclass(frozen=True)
class Launch:
    """Where this node's processes sit in the job: what `llava-kit train` hands to torchrun.

    One node keeps torchrun's static rendezvous at MASTER_ADDR:MASTER_PORT. Several nodes meet over
    a c10d rendezvous there instead, hosted by node 0's launcher (named explicitly: on Kubernetes the
    address is a service name and on one test host every node would match it). c10d gives ranks by
    sorted host name, so NODE_RANK picks the rendezvous host, not the global ranks.
    """

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def distributed(self) -> bool:
        return self.nproc * self.nnodes > 1

    def check(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise KitError(f"--nproc {self.nproc} and --nnodes {self.nnodes} must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise KitError(f"--node-rank {self.node_rank} (NODE_RANK) must be in 0..{self.nnodes - 1} "
                           f"for --nnodes {self.nnodes}")

    def torchrun_args(self, shutdown_timeout_s: int) -> list[str]:
        args = [f"--nproc_per_node={self.nproc}", f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}"]
        if self.nnodes == 1:
            args += [f"--master_addr={self.master_addr}", f"--master_port={self.master_port}"]
        else:
            args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={self.master_addr}:{self.master_port}",
                     "--rdzv-id=llava-kit", f"--rdzv-conf=is_host={int(self.node_rank == 0)}"]
        return [*args, f"--shutdown-timeout={shutdown_timeout_s}"]
