"""Data-parallel training across processes with torch.distributed, launched by ``torchrun``.

``torchrun --nproc-per-node N -m hwnas search ...`` starts N processes with ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK`` set (several nodes: ``--nnodes`` and ``--rdzv-endpoint``, as torchrun documents). :func:`world`
joins the process group once (NCCL when the processes train on CUDA, gloo on the CPU) and says which rank this
is. Every rank runs the same search, takes the same decisions (the seeds are shared and every accuracy is
summed over the ranks), and trains on its slice of each global batch; rank 0 alone writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world(backend: str | None = None) -> World:
    """This process's place: rank 0 of 1 without a launcher; else the process group, joined on first call."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    if not launched():
        return World()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend)
    return world()


def all_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """``values`` summed over the ranks (as they are, in one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(tensors: list[torch.Tensor], device: torch.device | str = "cpu") -> None:
    """Average the gradients of ``tensors`` over the ranks (parameters outside a DDP module, e.g. ProxylessNAS's
    α), reduced on ``device`` (NCCL reduces CUDA tensors only)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for t in tensors:
        if t.grad is not None:
            g = t.grad.to(device)
            dist.all_reduce(g)
            t.grad.copy_(g.to(t.grad.device) / dist.get_world_size())


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
