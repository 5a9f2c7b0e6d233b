"""The Boundary attack (Brendel, Rauber & Bethge, ICLR 2018), L2, decision-based.

A random walk along the decision boundary towards the clean input, from labels only. Takes an
:class:`advlab.oracle.Oracle` (``output="label"`` or ``"scores"``, of which only the argmax is
used); see :mod:`advlab.attacks.decision` for what the results of every decision-based attack
promise.

Example:
    >>> result = BoundaryAttack(steps=5000, budget=5000)(Oracle(model, output="label"), x, y)
    >>> result.norms.median()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab._checks import bounds_field, check_int, check_number
from advlab.attacks._blackbox import budget_alias
from advlab.attacks._decision import DecisionAttack, Walk, budget_field
from advlab.threat import lp_norm

__all__ = ["BoundaryAttack"]


@budget_alias
@dataclass(frozen=True, kw_only=True)
class BoundaryAttack(DecisionAttack):
    """The Boundary attack (Brendel, Rauber & Bethge, ICLR 2018), L2, hard-label.

    From an adversarial start (``starting_points``, or uniform noise blended towards ``x``), each
    step proposes, for each point at ``x̃`` with ``r = x − x̃`` and ``ρ = ||r||_2``:

        η ~ N(0, I), made orthogonal to ``r`` and scaled to ``||η|| = spherical_step · ρ``;
        spherical candidate ``s = clip(x + (η − r) / √(1 + spherical_step²))`` (back on the sphere
        of radius ρ around ``x``); candidate ``c = clip(s + source_step · ρ · (x − s)/||x − s||)``
        (a step towards ``x``, corrected for the clipping);

    and moves to ``c`` if the oracle answers it adversarial and it is closer to ``x``. Every
    ``update_stats_every`` steps the spherical candidate is queried as well, and the two step
    sizes adapt per point by ``step_adaptation`` from the success rates over the last 100
    spherical trials (> 0.5: both larger; < 0.2: both smaller) and the last 30 candidate trials
    (> 0.25: source step larger; < 0.1: smaller). A point stops when ``source_step`` falls below
    ``source_step_convergence``. This is Foolbox 3's formulation of the paper's algorithm (one
    proposal per step, spherical trials only on statistics steps); Gaussian draws are independent
    per point (Foolbox shares one draw across the batch).

    Cost per step and point: 1 query (2 on statistics steps). All points in one oracle call.

    Args:
        steps: proposal steps per point.
        spherical_step, source_step: the initial relative step sizes.
        step_adaptation: the factor (> 1) by which the step sizes adapt.
        budget: per-point query budget of the attack (``None``: only the oracle's budget;
            ``queries=`` is its deprecated name).
        update_stats_every: steps between statistics updates (and spherical queries).
        source_step_convergence: a point stops once its source step is below this.
        init_attempts: uniform-noise draws per point to find a start (0: only ``starting_points``).
        bounds: the input box.

    Example:
        >>> result = BoundaryAttack(steps=5000, budget=5000)(Oracle(model, output="label"), x, y)
        >>> result.norms.median()
    """

    steps: int = 25_000
    spherical_step: float = 0.01
    source_step: float = 0.01
    step_adaptation: float = 1.5
    budget: int | None = 10_000
    update_stats_every: int = 10
    source_step_convergence: float = 1e-7
    init_attempts: int = 100
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    norm: ClassVar[str] = "l2"  # not a field: the Boundary attack is L2 only

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_number("spherical_step", self.spherical_step)
        check_number("source_step", self.source_step)
        check_number("step_adaptation", self.step_adaptation, low=1.0)
        budget_field(self.budget)
        check_int("update_stats_every", self.update_stats_every)
        check_number("source_step_convergence", self.source_step_convergence)
        check_int("init_attempts", self.init_attempts, 0)
        bounds_field(self)

    def _search(self, walk: Walk, idx: Tensor, start: Tensor, gen: torch.Generator) -> None:
        x = walk.x
        b, dev, dt = x.shape[0], x.device, x.dtype
        spherical = torch.full((b,), float(self.spherical_step), dtype=dt, device=dev)
        source = torch.full((b,), float(self.source_step), dtype=dt, device=dev)
        sph_hist = torch.full((b, 100), math.nan, dtype=dt, device=dev)
        step_hist = torch.full((b, 30), math.nan, dtype=dt, device=dev)
        sph_ptr = torch.zeros(b, dtype=torch.long, device=dev)
        step_ptr = torch.zeros(b, dtype=torch.long, device=dev)
        active = torch.zeros(b, dtype=torch.bool, device=dev)
        active[idx] = True
        lo, hi = walk.bounds
        if isinstance(lo, Tensor):  # per-feature bounds against the flat (m, D) rows below
            lo, hi = lo.reshape(1, -1), hi.reshape(1, -1)
        free = walk.threat.free(x)
        free = free.reshape(1, -1) if free is not None else None
        for step in range(1, self.steps + 1):
            active &= source >= self.source_step_convergence
            stats = step % self.update_stats_every == 0
            i = active.nonzero().squeeze(1)
            if i.numel() == 0:
                break
            pay = walk.afford(i, 2 if stats else 1)
            active[i[~pay]] = False
            i = i[pay]
            if i.numel() == 0:
                break
            xs, cur = x[i].flatten(1), walk.best[i].flatten(1)  # (m, D)
            r = xs - cur
            rho = lp_norm(r, "l2")
            r_dir = r / rho[:, None]
            eta = torch.randn(cur.shape, generator=gen, device=dev, dtype=dt)
            if free is not None:  # the orthogonal step moves free features only
                eta = eta * free
            eta = eta - (eta * r_dir).sum(dim=1, keepdim=True) * r_dir
            eta = eta * (spherical[i] * rho / lp_norm(eta, "l2").clamp_min(1e-30))[:, None]
            sph = torch.clamp(xs + (eta - r) / torch.sqrt(spherical[i] ** 2 + 1)[:, None], min=lo, max=hi)
            to_x = xs - sph
            to_x_norm = lp_norm(to_x, "l2")
            length = (source[i] * rho + to_x_norm - rho).clamp_min(0) / to_x_norm.clamp_min(1e-30)
            cand = torch.clamp(sph + length[:, None] * to_x, min=lo, max=hi)
            shape = (i.numel(), *x.shape[1:])
            if stats:
                adv, _ = walk.ask(torch.cat([cand, sph]).view(2 * i.numel(), *x.shape[1:]),
                                 torch.cat([i, i]))
                cand_adv, sph_adv = adv[:i.numel()], adv[i.numel():]
                sph_hist[i, sph_ptr[i]] = sph_adv.to(dt)
                sph_ptr[i] = (sph_ptr[i] + 1) % sph_hist.shape[1]
                step_hist[i, step_ptr[i]] = cand_adv.to(dt)
                step_ptr[i] = (step_ptr[i] + 1) % step_hist.shape[1]
                self._adapt(i, sph_hist, step_hist, spherical, source)
            else:
                walk.ask(cand.view(shape), i)

    def _adapt(self, i: Tensor, sph_hist: Tensor, step_hist: Tensor, spherical: Tensor,
               source: Tensor) -> None:
        a = self.step_adaptation
        h = sph_hist[i]
        full = ~torch.isnan(h).any(dim=1)
        p = h.nan_to_num(0.0).mean(dim=1)
        up, down = full & (p > 0.5), full & (p < 0.2)
        factor = torch.where(up, torch.full_like(p, a), torch.where(down, torch.full_like(p, 1 / a),
                                                                       torch.ones_like(p)))
        spherical[i] *= factor
        source[i] *= factor
        sph_hist[i[up | down]] = math.nan
        h = step_hist[i]
        full = ~torch.isnan(h).any(dim=1)
        p = h.nan_to_num(0.0).mean(dim=1)
        up, down = full & (p > 0.25), full & (p < 0.1)
        source[i] *= torch.where(up, torch.full_like(p, a), torch.where(down, torch.full_like(p, 1 / a),
                                                                         torch.ones_like(p)))
        step_hist[i[up | down]] = math.nan
