"""Data-parallel training under ``torchrun``: process-group set-up, the rank's device, and the
collectives the trainer needs (broadcast the model, average gradients and buffers)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun describes (initialising it if needed); world 1 otherwise."""
    if not torch.distributed.is_available():
        return Dist()
    dist = torch.distributed
    if not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist()
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with torchrun "
                "(python -m torch.distributed.run) or initialise torch.distributed yourself"
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            check_rank_device(device)
            torch.cuda.set_device(device)  # nccl maps this rank to its GPU
        logger.info("initialising torch.distributed (%s, world size %d)", backend, world)
        dist.init_process_group(backend=backend)
    elif device.type == "cuda" and dist.get_world_size() > 1:
        check_rank_device(device)
    world = dist.get_world_size()
    return Dist(rank=dist.get_rank(), world=world) if world > 1 else Dist()


def local_device() -> torch.device:
    """The device this process should train on: ``cuda:LOCAL_RANK`` under ``torchrun`` on a GPU
    machine (``cuda`` in a single process), else ``cpu``. Put the model and data there
    (``model.to(local_device())``) and the same script runs with one process or many."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def check_rank_device(device: torch.device) -> None:
    """Under torchrun with nccl every rank needs its own GPU: refuse data on another rank's."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index != local:
        raise RuntimeError(
            f"data-parallel training on GPUs: this process has LOCAL_RANK={local} but its data is on "
            f"cuda:{index}; each rank needs its own GPU. Put the model and data on "
            f"advlab.defenses.training.local_device() (cuda:{local} here) instead of a fixed device"
        )


def broadcast_model(model: nn.Module) -> None:
    for t in (*model.parameters(), *model.buffers()):
        torch.distributed.broadcast(t.data, src=0)


def all_reduce_grads(params: list[nn.Parameter], weight: float) -> None:
    """``grad ← Σ_ranks weight_r · grad_r`` in one flat all-reduce (missing grads count as 0)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    torch.distributed.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def average_buffers(model: nn.Module, world: int) -> None:
    for b in model.buffers():
        if b.is_floating_point():
            torch.distributed.all_reduce(b.data)
            b.data /= world
