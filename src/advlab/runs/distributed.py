"""advlab's commands under ``torchrun``: the process group, each rank's device, who writes.

``torchrun --nproc-per-node K -m advlab evaluate ...`` (or ``... -m advlab run SPEC``) starts K
copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in
their environment. :func:`join` initialises the process group from it (Gloo: the ranks exchange
only per-point records, so the same backend serves CPU and GPU ranks), picks each rank's device
(``cuda``/``auto`` become ``cuda:LOCAL_RANK``) and says whether this rank is the one that writes
files, prints and stores (rank 0). Outside torchrun it is a one-rank no-op.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int
    device: str

    @property
    def writer(self) -> bool:
        """Only rank 0 writes files, prints tables and writes the store."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def join(device: str = "cpu", *, timeout_s: float = 24 * 3600.0) -> Ranks:
    """Initialise the process group from torchrun's environment (once) and return this rank.

    ``timeout_s``: how long a rank waits at a collective for the others (a grid's training cell
    runs on rank 0 while the others wait, so the default is a day, not torch's 30 minutes)."""
    if not launched_by_torchrun():
        return Ranks(rank=0, world=1, local_rank=0, device=device)
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed; run the command without torchrun")
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=dt.timedelta(seconds=timeout_s))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    text = (device or "cpu").strip().lower()
    if text in ("cuda", "auto") and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise ValueError(f"torchrun started local rank {local} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s): use --nproc-per-node "
                             f"{torch.cuda.device_count()} or fewer")
        text = f"cuda:{local}"
    elif text == "auto":
        text = "cpu"
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, device=text)


def barrier() -> None:
    """Wait for every rank (a no-op outside torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a no-op outside torchrun)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` outside torchrun)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def leave(*, synchronise: bool = True) -> None:
    """Tear the process group down (a no-op outside torchrun or when it is already gone).

    ``synchronise``: wait at a barrier first, so that no rank destroys its Gloo group while a
    peer is still in a collective, and collect the garbage that may hold pending Gloo work (a DDP
    reducer, a broadcast's buffers). Without both, a rank that finished early could abort at exit
    with "terminate called without an active exception" (seen once in CI, on a loaded machine).
    Pass ``False`` on the path of an exception: the peers may never reach the barrier, and
    torchrun stops them once this rank exits non-zero."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if synchronise:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
