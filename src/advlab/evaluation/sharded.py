"""One evaluation spread over the ranks of a ``torch.distributed`` process group (torchrun).

Every rank holds the same model and the same ``(x, y)``. All ranks compute the clean predictions
(one forward pass, cheap beside the attacks), so they agree on the correctly classified points;
those are cut into calls of ``batch_size`` points exactly as :func:`~advlab.evaluation.evaluate`
cuts them, call ``j`` goes to rank ``j mod world``, and each call's generator is seeded from
(seed, j) alone (:func:`~advlab.evaluation.robustness.block_seed`). The per-point records
(broken flags, norms, queries) are then gathered to every rank and merged, so the returned
:class:`~advlab.evaluation.Evaluation` has the same rows and per-point records as the
unsharded call with the same arguments, on every rank. Only ``seconds`` differs: a row's seconds
are the longest rank's (the wall time of the sharded call).

    torchrun --nproc-per-node 2 -m advlab evaluate --checkpoint runs/mlp --data digits

Gloo carries the records (they are small: three numbers per point and attack), so the same code
runs on CPU ranks and on GPU ranks (each rank's tensors on its own device).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.attacks.contract import AttackLike
from advlab._checks import check_inputs, check_int, check_model
from advlab.evaluation._attack import clean_predictions
from advlab.evaluation.robustness import (Evaluation, PointRecord, _at_every_eps, _check_eps_list,
                                          _named_attacks, assemble, attack_blocks, num_blocks, provenance)


def _dist() -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("evaluate_sharded needs an initialised torch.distributed process group: run under "
                           "torchrun (advlab's commands initialise it), or call "
                           "torch.distributed.init_process_group('gloo') first")
    return dist


def _fingerprint(x: Tensor, y: Tensor) -> str:
    h = hashlib.sha256()
    h.update(str(tuple(x.shape)).encode())
    h.update(y.detach().cpu().to(torch.int64).numpy().tobytes())
    h.update(x.detach().reshape(x.shape[0], -1)[:, :64].cpu().to(torch.float64).numpy().tobytes())
    return h.hexdigest()


def evaluate_sharded(model: nn.Module, x: Tensor, y: Tensor, *,
                     attacks: Sequence[AttackLike] | Mapping[str, AttackLike], eps: Sequence[float],
                     batch_size: int = 256, seed: int = 0, progress: bool = True, examples: int = 0,
                     group: Any = None) -> Evaluation:
    """:func:`~advlab.evaluation.evaluate` with its attack calls spread over the process group.

    Args: as :func:`~advlab.evaluation.evaluate` (in-memory ``x``, ``y``: every rank passes the
    same), plus ``group``, the process group (default: the world). Every rank of the group must
    call it with the same arguments; each gets the whole :class:`Evaluation`. A rank whose data
    differ from rank 0's is refused on every rank (a ``ValueError`` naming the rank), before any
    attack runs.
    """
    dist = _dist()
    check_model(model)
    named = _named_attacks(attacks, eps)
    check_int("batch_size", batch_size)
    eps = _check_eps_list(eps)
    check_inputs(model, x, y, bounds=next(iter(named.values())).bounds)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    prints: list[Any] = [None] * world
    dist.all_gather_object(prints, _fingerprint(x, y), group=group)
    odd = [r for r, f in enumerate(prints) if f != prints[0]]
    if odd:
        raise ValueError(f"evaluate_sharded: rank {odd[0]} holds other data than rank 0 (shape, labels or "
                         "inputs differ); every rank must load the same evaluation set")
    correct = clean_predictions(model, x, y=y, batch_size=max(batch_size, 512)) == y
    idx = correct.nonzero().squeeze(1)
    mine = range(rank, num_blocks(int(idx.numel()), batch_size), world)
    jobs = [(name, e) for e in eps for name in named]
    payload: dict[Any, Any]
    try:
        payload = {}
        for name, e in tqdm(jobs, desc=f"evaluate (rank {rank}/{world})", disable=not progress, leave=False):
            r = attack_blocks(model, x, y, idx, named[name], e, batch_size=batch_size, seed=seed, blocks=mine,
                              keep=examples)
            payload[(name, e)] = (r.broken.cpu(), r.norms.cpu(), r.queries.cpu(), r.grads, r.seconds, r.examples)
    except Exception as exc:
        # the other ranks are about to wait in the gather below: tell them instead of leaving
        # them there until the group's timeout
        payload = {"error": f"{type(exc).__name__}: {exc}"}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, payload, group=group)
    failed = [(r, g["error"]) for r, g in enumerate(gathered) if "error" in g]
    if failed:
        raise RuntimeError(f"evaluate_sharded: rank {failed[0][0]} failed: {failed[0][1]}")
    records: dict[tuple[str, float], PointRecord] = {}
    for k in jobs:
        parts = [g[k] for g in gathered]
        broken = torch.stack([p[0] for p in parts]).any(0)
        norms = parts[0][1].clone()
        queries = torch.stack([p[2] for p in parts]).amax(0)
        for p in parts[1:]:
            norms = torch.where(torch.isnan(norms), p[1], norms)
        records[k] = PointRecord(broken=broken.to(x.device), norms=norms.to(x.device), queries=queries.to(x.device),
                                 grads=sum(p[3] for p in parts), seconds=max(p[4] for p in parts),
                                 examples=next((p[5] for p in parts if p[5] is not None), None))
    prov = provenance(seed=seed, batch_size=batch_size, norm=str(next(iter(named.values())).norm),
                      attacks={k: _at_every_eps(v, eps) for k, v in named.items()},
                      sharded={"world_size": world, "backend": str(dist.get_backend(group))})
    return assemble(named, eps, correct, records, prov)
