"""HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020), L2 or L∞, decision-based.

Walks along the decision boundary towards the clean input with Monte-Carlo estimates of the
boundary's normal, from labels only. Takes an :class:`advlab.oracle.Oracle` (``output="label"``
or ``"scores"``, of which only the argmax is used); see :mod:`advlab.attacks.decision` for what
the results of every decision-based attack promise.

Example:
    >>> oracle = Oracle(model, output="label", budget=5000)
    >>> result = HopSkipJump(norm="l2", budget=5000)(oracle, x, y, generator=torch.Generator().manual_seed(0))
    >>> result.norms[result.success].median(), result.queries.max()
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from advlab._checks import bounds_field, check_choice, check_int, check_number, norm_field
from advlab.attacks._blackbox import budget_alias
from advlab.attacks._decision import (GRID, MAX_HALVINGS, DecisionAttack, Walk, bisect, bisect_steps,
                                      budget_field)
from advlab.threat import _view, lp_norm

log = logging.getLogger(__name__)

__all__ = ["HopSkipJump"]


@budget_alias
@dataclass(frozen=True, kw_only=True)
class HopSkipJump(DecisionAttack):
    """HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020), L2 or L∞, hard-label.

    From an adversarial start ``x̃_0`` (``starting_points``, or uniform noise blended towards
    ``x``), each iteration ``t = 1, 2, ...``:

    1. binary search between ``x`` and ``x̃_{t-1}`` to the boundary point ``x_t`` (threshold
       ``θ = γ / d^{3/2}`` for L2, ``θ = γ / d^2`` for L∞, ``d`` the input dimension);
    2. Monte-Carlo estimate of the boundary's normal at ``x_t`` with
       ``n_t = min(init_evals · √t, max_evals)`` probes ``u_b`` uniform on the unit L2 sphere
       (L∞: uniform in the cube, normalised), at radius ``δ_t = γ · ||x_t - x|| / d``
       (``0.1 · (hi - lo)`` at ``t = 1``)::

           ∇̃S = 1/n Σ_b (φ(x_t + δ_t u_b) − mean φ) · u_b,   φ = +1 adversarial, −1 not

       (plain ``±mean u_b`` when all probes agree); the update direction ``v`` is ``∇̃S/||∇̃S||``
       (L2) or ``sign(∇̃S)`` (L∞);
    3. step size: ``stepsize_search="geometric_progression"`` tries ``ξ = ||x_t − x|| / √t`` and
       halves it until ``x_t + ξ v`` is adversarial; ``"grid_search"`` tries 20 sizes
       ``logspace(-4, 0) · ||x_t − x||`` at once and binary-searches every adversarial one,
       keeping the closest; then ``x̃_t = clip(x_t + ξ v)``.

    Distances and steps are L2 or L∞ per ``norm``. These follow the authors' reference code
    (``hsja.py``), which the paper's experiments used; where the paper and the code differ (δ at
    ``t = 1``, the all-agree case of the estimator) the code is followed, as ART and Foolbox do.
    Probes are clipped to the box and ``u_b`` recomputed as ``(clip(x_t + δ u_b) − x_t) / δ``.

    Budget: a point runs ``steps`` iterations or until ``min(oracle budget, budget)`` cannot
    pay the next one. The Monte-Carlo estimate of the last affordable iteration uses fewer probes
    (down to ``min(10, n_t)``) so that the step and the final binary search still fit.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        budget: per-point query budget of the attack (``None``: only the oracle's budget;
            ``queries=`` is its deprecated name).
        steps: iterations (the paper's ``T``).
        init_evals, max_evals: ``n_t = min(init_evals · √t, max_evals)``.
        gamma: the threshold constant γ.
        stepsize_search: ``"geometric_progression"`` or ``"grid_search"``.
        init_attempts: uniform-noise draws per point to find a start (0: only ``starting_points``).
        bounds: the input box.

    Example:
        >>> oracle = Oracle(model, output="label")
        >>> result = HopSkipJump(norm="l2", budget=1000)(oracle, x, y, generator=g)
        >>> result.norms.median()               # distances after 1000 queries per point
        >>> HopSkipJump(budget=5000)(oracle, x, y, target=t, starting_points=x_of_class_t)
    """

    norm: str = "l2"
    budget: int | None = 10_000
    steps: int = 64
    init_evals: int = 100
    max_evals: int = 10_000
    gamma: float = 1.0
    stepsize_search: str = "geometric_progression"
    init_attempts: int = 100
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        norm_field(self, ("l2", "linf"))
        budget_field(self.budget)
        check_int("steps", self.steps)
        check_int("init_evals", self.init_evals)
        check_int("max_evals", self.max_evals)
        if self.max_evals < self.init_evals:
            raise ValueError(f"max_evals ({self.max_evals}) must be >= init_evals ({self.init_evals})")
        check_number("gamma", self.gamma)
        check_choice("stepsize_search", self.stepsize_search, ("geometric_progression", "grid_search"))
        check_int("init_attempts", self.init_attempts, 0)
        bounds_field(self)

    def _search(self, walk: Walk, idx: Tensor, start: Tensor, gen: torch.Generator) -> None:
        """Run the iterations on points ``idx`` ``(m,)`` from adversarial ``start`` ``(m, *)``."""
        x, norm = walk.x, self.norm
        d = x[0].numel()
        theta = self.gamma / (d ** 1.5 if norm == "l2" else d ** 2)
        cur, dist = bisect(walk, idx, start, norm=norm, theta=theta)  # (m, *), (m,)
        keep = ~walk.stopped[idx]
        idx, cur, dist = idx[keep], cur[keep], dist[keep]
        grid = self.stepsize_search == "grid_search"
        for t in range(1, self.steps + 1):
            if idx.numel() == 0:
                break
            n_t = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            # what the step and the final binary search need after the estimate (a typical
            # geometric search takes 1-2 trials)
            reserve = bisect_steps(dist, theta, norm) + (GRID.numel() if grid else 2)
            n_eff = torch.clamp(walk.allowed()[idx] - reserve, max=n_t)
            ok = n_eff >= min(10, n_t)
            walk.stopped[idx[~ok]] = True
            idx, cur, dist, n_eff = idx[ok], cur[ok], dist[ok], n_eff[ok]
            if idx.numel() == 0:
                break
            delta = (torch.full_like(dist, 0.1 * walk.threat.width) if t == 1 else self.gamma * dist / d)
            update = self._direction(walk, idx, cur, delta, n_eff, gen)
            if grid:
                new, moved = self._grid_step(walk, idx, cur, dist, update, theta)
            else:
                new, moved = self._geometric_step(walk, idx, cur, dist, update, t, theta)
            cur = torch.where(_view(moved, cur), new, cur)
            dist = lp_norm(cur - x[idx], norm)
            keep = ~walk.stopped[idx]
            idx, cur, dist = idx[keep], cur[keep], dist[keep]
            log.debug("HopSkipJump t=%d: %d points, median distance %.4g", t, idx.numel(),
                      float(dist.median()) if dist.numel() else math.nan)

    def _direction(self, walk: Walk, idx: Tensor, cur: Tensor, delta: Tensor, n: Tensor,
                   gen: torch.Generator) -> Tensor:
        """The update direction ``v`` ``(m, *)`` from ``n[i]`` probes around each ``cur[i]``,
        all points' probes in one oracle call."""
        m = idx.shape[0]
        local = torch.repeat_interleave(torch.arange(m, device=cur.device), n)  # (k,)
        shape = (local.numel(), *cur.shape[1:])
        if self.norm == "l2":
            u = torch.randn(shape, generator=gen, device=cur.device, dtype=cur.dtype)
        else:
            u = torch.rand(shape, generator=gen, device=cur.device, dtype=cur.dtype) * 2 - 1
        u = walk.threat.restrict(u)  # probe the free features only
        u = u / _view(lp_norm(u, "l2").clamp_min(1e-12), u)
        if bool((n == n[0]).all()):
            # the usual case: as many probes for every point; broadcasting instead of gathering
            # cur[local] keeps one (k, D) tensor fewer in memory (same values, same arithmetic)
            shape_mn = (m, int(n[0]), *cur.shape[1:])
            base = cur[:, None]
            step = _view(delta, cur)[:, None]
            u = u.view(shape_mn)
            rows = walk.clip(base + step * u)
            u = ((rows - base) / step).view(-1, *cur.shape[1:])
            rows = rows.view(-1, *cur.shape[1:])
        else:
            base = cur[local]
            step = _view(delta[local], u)
            rows = walk.clip(base + step * u)
            u = (rows - base) / step
        adv, _ = walk.ask(rows, idx[local])
        f = adv.to(cur.dtype) * 2 - 1  # (k,) ±1
        nf = n.to(cur.dtype)
        hits = torch.zeros(m, dtype=torch.long, device=cur.device).index_add_(0, local, adv.long())
        mean_f = torch.zeros(m, dtype=cur.dtype, device=cur.device).index_add_(0, local, f) / nf
        agree = (hits == 0) | (hits == n)
        coef = torch.where(agree[local], f, f - mean_f[local])
        grad = torch.zeros((m, u[0].numel()), dtype=cur.dtype, device=cur.device).index_add_(
            0, local, coef[:, None] * u.flatten(1)) / nf[:, None]
        grad = grad / lp_norm(grad, "l2").clamp_min(1e-30)[:, None]
        grad = grad.view_as(cur)
        return grad if self.norm == "l2" else grad.sign()

    def _geometric_step(self, walk: Walk, idx: Tensor, cur: Tensor, dist: Tensor, update: Tensor,
                        t: int, theta: float) -> tuple[Tensor, Tensor]:
        """Halve ``ξ = dist / √t`` until ``clip(cur + ξ v)`` is adversarial, then binary-search
        back to the boundary. Returns the new boundary points and which points moved."""
        m = idx.shape[0]
        xi = dist / math.sqrt(t)
        stepped = cur.clone()
        found = torch.zeros(m, dtype=torch.bool, device=cur.device)
        alive = torch.ones_like(found)
        for _ in range(MAX_HALVINGS):
            i = (alive & ~found).nonzero().squeeze(1)
            if i.numel() == 0:
                break
            pay = walk.afford(idx[i], 1)
            alive[i[~pay]] = False
            i = i[pay]
            if i.numel() == 0:
                break
            rows = walk.clip(cur[i] + _view(xi[i], cur[i]) * update[i])
            adv, _ = walk.ask(rows, idx[i])
            stepped[i[adv]] = rows[adv]
            found[i[adv]] = True
            xi[i[~adv]] = xi[i[~adv]] / 2
        moved = found & alive
        j = moved.nonzero().squeeze(1)
        out = cur.clone()
        if j.numel():
            out[j], _ = bisect(walk, idx[j], stepped[j], norm=self.norm, theta=theta)
        return out, moved

    def _grid_step(self, walk: Walk, idx: Tensor, cur: Tensor, dist: Tensor, update: Tensor,
                   theta: float) -> tuple[Tensor, Tensor]:
        """Try the 20 step sizes at once; binary-search every adversarial one (as many as the
        budget pays, the closest to ``x`` first) and keep the closest boundary point."""
        m, g = idx.shape[0], GRID.numel()
        pay = walk.afford(idx, g)
        out = cur.clone()
        moved = torch.zeros(m, dtype=torch.bool, device=cur.device)
        i = pay.nonzero().squeeze(1)
        if i.numel() == 0:
            return out, moved
        xi = dist[i, None] * GRID.to(cur.device, cur.dtype)[None, :]  # (m', G)
        local = torch.arange(i.numel(), device=cur.device).repeat_interleave(g)
        rows = walk.clip(cur[i][local] + _view(xi.flatten(), cur[local]) * update[i][local])
        adv, _ = walk.ask(rows, idx[i][local])
        # per point, how many candidates the remaining budget can binary-search
        steps = bisect_steps(lp_norm(rows - walk.x[idx[i][local]], self.norm), theta, self.norm)
        room = walk.allowed()[idx[i]] // steps.view(-1, g).amax(dim=1).clamp_min(1)  # (m',)
        cand_dist = torch.where(adv, lp_norm(rows - walk.x[idx[i][local]], self.norm),
                                torch.full_like(xi.flatten(), math.inf)).view(-1, g)
        rank = cand_dist.argsort(dim=1).argsort(dim=1)  # 0 = closest candidate
        chosen = (adv.view(-1, g) & (rank < room[:, None])).flatten()
        if not bool(chosen.any()):
            return out, moved
        c = chosen.nonzero().squeeze(1)
        res, rdist = bisect(walk, idx[i][local[c]], rows[c], norm=self.norm, theta=theta)
        # the closest result per point
        best = torch.full((i.numel(),), math.inf, dtype=cur.dtype, device=cur.device).scatter_reduce(
            0, local[c], rdist, "amin")
        rowid = torch.arange(c.numel(), device=cur.device)
        pick = torch.full((i.numel(),), c.numel(), dtype=torch.long, device=cur.device).scatter_reduce(
            0, local[c], torch.where(rdist == best[local[c]], rowid, torch.full_like(rowid, c.numel())),
            "amin")
        has = torch.isfinite(best)
        out[i[has]] = res[pick[has]]
        moved[i[has]] = True
        return out, moved

