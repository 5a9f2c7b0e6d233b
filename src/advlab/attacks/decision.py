"""Decision-based (hard-label) black-box attacks: HopSkipJump and the Boundary attack.

A decision-based attacker sees only the model's top label. Both attacks here start from an input
the model already gets wrong (a user's ``starting_points`` or uniform noise that happens to be
adversarial) and walk along the decision boundary towards the clean input ``x``, so they are
*minimal-norm* attacks: the threat model they report has ``eps = math.inf`` and the attack's
``bounds``, and ``result.norms`` are the distances found (upper bounds on each point's distance to
the decision boundary). They take an :class:`advlab.oracle.Oracle`, with ``output="label"`` or
``output="scores"`` (of which only the argmax is used: the two give identical results).

What the results promise, for every point:

* ``x_adv`` is the closest input (in the attack's norm) that the oracle answered as adversarial
  during the call, every queried input counting (a Monte-Carlo probe or a spherical candidate
  included); it is exactly the tensor that was queried, so ``success`` and ``pred`` are oracle
  answers on the returned points and cost no extra query. A point for which no adversarial input
  was ever found returns ``x`` unchanged with ``success=False``.
* Budgets are never exceeded: a point stops when its oracle budget or the attack's own
  ``queries`` (whichever is smaller) cannot pay for the next step; it keeps the best adversarial
  input found so far. ``finish`` (see :mod:`advlab.attacks._blackbox`) reports
  ``budget_exhausted`` for the points that stopped on the budget without an adversarial input.
* The clean input is queried first (one query): a point the oracle already misclassifies (or,
  targeted, already assigns to the target) is returned unchanged with norm 0.

All points of a batch advance together: one oracle call per binary-search step, one per
step-size trial and one for all Monte-Carlo probes of all points (``points × samples`` rows,
charged per point through :meth:`QuerySession.__call__`'s index). Randomness comes only from
``generator`` (a fresh one seeded with 0 when none is given), so a seed fixes the output.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y``, ``target`` ``(B,)`` int64;
``starting_points`` ``(B, *)`` like ``x``.

Example:
    >>> from advlab.oracle import Oracle
    >>> from advlab.attacks.decision import HopSkipJump
    >>> oracle = Oracle(model, output="label", budget=5000)
    >>> result = HopSkipJump(norm="l2", queries=5000)(oracle, x, y, generator=torch.Generator().manual_seed(0))
    >>> result.norms[result.success].median(), result.queries.max()
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab.attacks._base import AttackResult
from advlab.attacks._blackbox import adversarial_labels, check_label_range, finish, prepare
from advlab._checks import check_int as _int_at_least
from advlab.attacks.minimal import _bounds_field, _finite, _norm_field
from advlab.oracle import QuerySession
from advlab.threat import ThreatModel, _view, lp_norm

log = logging.getLogger(__name__)

__all__ = ["BoundaryAttack", "HopSkipJump"]

# binary search resolution of the blend between x and a random adversarial start (both papers'
# reference code: 0.001 of the segment)
_INIT_BLEND_TOL = 1e-3
# a point gives up a geometric step-size search after this many halvings (the stepped point is
# then the boundary point itself, which is adversarial); the reference code has no cap
_MAX_HALVINGS = 40
# the grid of step sizes tried by stepsize_search="grid_search" (reference code), times the distance
_GRID = torch.logspace(-4, 0, 20, dtype=torch.float64)


# -- validation ------------------------------------------------------------------------------------


def _queries_field(value: Any) -> None:
    if value is not None:
        _int_at_least("queries (per point, or None for the oracle's budget only)", value, 1)


def _check_starting_points(starting_points: Any, x: Tensor, bounds: tuple[float, float]) -> None:
    if starting_points is None:
        return
    if not isinstance(starting_points, Tensor):
        raise TypeError(f"starting_points must be a torch.Tensor shaped like x {tuple(x.shape)}, "
                        f"got {type(starting_points).__name__}")
    if tuple(starting_points.shape) != tuple(x.shape):
        raise ValueError(f"starting_points has shape {tuple(starting_points.shape)} but x has shape "
                         f"{tuple(x.shape)}; pass one adversarial starting input per point")
    if starting_points.dtype != x.dtype or starting_points.device != x.device:
        raise ValueError(f"starting_points is {starting_points.dtype} on {starting_points.device} but x is "
                         f"{x.dtype} on {x.device}; use the same dtype and device")
    if not bool(torch.isfinite(starting_points).all()):
        raise ValueError("starting_points contains NaN or Inf")
    lo, hi = bounds
    smin, smax = float(starting_points.min()), float(starting_points.max())
    if smin < lo or smax > hi:
        raise ValueError(f"starting_points has values in [{smin:.4g}, {smax:.4g}], outside the bounds "
                         f"({lo:g}, {hi:g}); starting points must be valid inputs")


# -- one call's state: the session, the budget and the best adversarial input per point --------------


class _Run:
    """Mutable state of one attack call on ``B`` points.

    :meth:`ask` is the only way to the oracle: it checks the per-point budget, reads labels from
    the answers and keeps, per point, the closest input answered adversarial (``best``).
    """

    def __init__(self, session: QuerySession, x: Tensor, y: Tensor, target: Tensor | None,
                 norm: str, limit: int | None, bounds: tuple[float, float]) -> None:
        self.session, self.x, self.y, self.target = session, x, y, target
        self.norm, self.limit, self.bounds = norm, limit, bounds
        b = x.shape[0]
        self.best = x.clone()  # (B, *)
        self.best_dist = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        self.best_pred = torch.full((b,), -1, dtype=torch.long, device=x.device)
        self.stopped = torch.zeros(b, dtype=torch.bool, device=x.device)  # ended on the budget

    @property
    def found(self) -> Tensor:
        """``(B,)`` bool: an adversarial input was found."""
        return torch.isfinite(self.best_dist)

    def allowed(self) -> Tensor:
        """``(B,)`` int64: queries each point may still make (oracle budget and ``queries``)."""
        left = self.session.remaining
        if self.limit is not None:
            left = torch.minimum(left, self.limit - self.session.queries)
        return left.to(self.x.device)

    def afford(self, points: Tensor, cost: Tensor | int) -> Tensor:
        """``(m,)`` bool for ``points`` ``(m,)``: can pay ``cost`` more queries. The others are
        marked as stopped on the budget."""
        ok = self.allowed()[points] >= cost
        self.stopped[points[~ok]] = True
        return ok

    def ask(self, rows: Tensor, owner: Tensor) -> tuple[Tensor, Tensor]:
        """Query ``rows`` ``(k, *)`` charged to points ``owner`` ``(k,)``. Returns ``(k,)`` bool
        (adversarial) and the labels ``(k,)`` the oracle answered (the argmax of scores)."""
        b = self.x.shape[0]
        cost = torch.bincount(owner, minlength=b)
        if bool((cost > self.allowed()).any()):
            raise AssertionError("internal error: a decision-based attack planned a query past a "
                                 "point's budget; please report this")
        answers = self.session(rows, owner)
        labels = (answers if answers.dim() == 1 else answers.argmax(dim=1)).to(self.x.device)
        adv = adversarial_labels(labels, self.y[owner],
                                 self.target[owner] if self.target is not None else None)
        if bool(adv.any()):
            a = adv.nonzero().squeeze(1)  # distances of the adversarial rows only
            dist = lp_norm(rows[a] - self.x[owner[a]], self.norm)
            per = torch.full_like(self.best_dist, math.inf).scatter_reduce(0, owner[a], dist, "amin")
            better = per < self.best_dist
            if bool(better.any()):
                n_a = a.numel()
                rowid = torch.arange(n_a, device=owner.device)
                hit = (dist == per[owner[a]]) & better[owner[a]]
                pick = torch.full((b,), n_a, dtype=torch.long, device=owner.device).scatter_reduce(
                    0, owner[a], torch.where(hit, rowid, torch.full_like(rowid, n_a)), "amin")
                pts = better.nonzero().squeeze(1)
                r = a[pick[pts]]  # the first closest adversarial row of each improved point
                self.best[pts] = rows[r]
                self.best_dist[pts] = per[pts]
                self.best_pred[pts] = labels[r]
        return adv, labels

    def clip(self, t: Tensor) -> Tensor:
        return t.clamp(self.bounds[0], self.bounds[1])


def _start(run: _Run, starting_points: Tensor | None, init_attempts: int,
           generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Query the clean points, check ``starting_points`` and draw random adversarial starts.

    Returns ``start`` ``(B, *)`` (adversarial where ``has_start``), ``has_start`` ``(B,)``,
    ``done`` ``(B,)`` (the clean point is already adversarial) and ``clean_pred`` ``(B,)``
    (the oracle's label for ``x``).

    Untargeted and targeted alike, a point without a starting point draws uniform noise in the
    box, one draw per point and round for at most ``init_attempts`` rounds, until the oracle
    answers it adversarial; the start is then blended towards ``x`` by a binary search on
    ``(1 - a) x + a noise`` to a resolution of 0.001 in ``a`` (the reference code of both papers).
    """
    x = run.x
    b = x.shape[0]
    dev = x.device
    pts = torch.arange(b, device=dev)
    # the clean points, and the starting points in the same call (a fresh session always pays
    # the clean query; a point that cannot also pay its starting point stops there)
    has_sp = starting_points is not None
    allowed = run.allowed()
    clean_ok = allowed >= 1
    sp_ok = (allowed >= 2) if has_sp else torch.zeros_like(clean_ok)
    run.stopped |= ~clean_ok | (clean_ok & ~sp_ok if has_sp else torch.zeros_like(clean_ok))
    rows, owner = [x[clean_ok]], [pts[clean_ok]]
    if has_sp:
        rows.append(starting_points[sp_ok])  # type: ignore[index]
        owner.append(pts[sp_ok])
    adv, labels = run.ask(torch.cat(rows), torch.cat(owner))
    n_clean = int(clean_ok.sum())
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    done[clean_ok] = adv[:n_clean]
    # the oracle's label for x (y where x could not be queried, which a fresh session rules out)
    clean_pred = run.y.clone()
    clean_pred[clean_ok] = labels[:n_clean]
    check_label_range(run.y, run.session.oracle.num_classes)
    if run.target is not None:
        check_label_range(run.target, run.session.oracle.num_classes, "target")
    start = x.clone()
    has_start = torch.zeros(b, dtype=torch.bool, device=dev)
    if has_sp:
        sp_adv = torch.zeros(b, dtype=torch.bool, device=dev)
        sp_adv[sp_ok] = adv[n_clean:]
        bad = sp_ok & ~done & ~sp_adv
        if bool(bad.any()):
            which = bad.nonzero().squeeze(1).tolist()
            goal = "in the target class" if run.target is not None else "misclassified"
            raise ValueError(f"{len(which)} starting_points are not adversarial (not {goal} by the "
                             f"oracle): points {which[:10]}{' ...' if len(which) > 10 else ''}")
        start[sp_ok] = starting_points[sp_ok]  # type: ignore[index]
        has_start = sp_ok & ~done
        return start, has_start, done, clean_pred
    # random starts: uniform noise in the box until the oracle calls it adversarial
    lo, hi = run.bounds
    from_noise = torch.zeros(b, dtype=torch.bool, device=dev)
    for _ in range(init_attempts):
        pending = (~done & ~from_noise & ~run.stopped).nonzero().squeeze(1)
        if pending.numel() == 0:
            break
        pending = pending[run.afford(pending, 1)]
        if pending.numel() == 0:
            break
        noise = torch.rand((pending.numel(), *x.shape[1:]), generator=generator, device=dev,
                           dtype=x.dtype) * (hi - lo) + lo
        adv, _ = run.ask(noise, pending)
        start[pending[adv]] = noise[adv]
        from_noise[pending[adv]] = True
    missing = ~done & ~from_noise & ~run.stopped
    if bool(missing.any()):
        log.warning("%d of %d points found no adversarial start in %d uniform-noise draws%s; they are "
                    "returned unchanged (success=False)", int(missing.sum()), b, init_attempts,
                    "; pass starting_points of the target class" if run.target is not None else "")
    idx = from_noise.nonzero().squeeze(1)
    if idx.numel():
        out, _ = _bisect(run, idx, start[idx], norm="l2", theta=_INIT_BLEND_TOL)
        start[idx] = out
    return start, from_noise, done, clean_pred


def _bisect_steps(hi: Tensor, theta: float, norm: str) -> Tensor:
    """``(m,)`` int64: binary-search steps to bring ``hi - lo`` from ``hi`` below the threshold."""
    if norm == "l2":
        return torch.full_like(hi, math.ceil(math.log2(1 / theta)), dtype=torch.long)
    thr = torch.minimum(hi * theta, torch.full_like(hi, theta))
    return torch.ceil(torch.log2((hi / thr).clamp_min(1.0))).long()


def _bisect(run: _Run, owner: Tensor, far: Tensor, *, norm: str,
            theta: float) -> tuple[Tensor, Tensor]:
    """Binary search from the adversarial inputs ``far`` ``(m, *)`` towards ``x[owner]``.

    L2 searches the blend ``(1 - a) x + a far`` for ``a`` in ``[0, 1]`` to resolution ``theta``;
    L∞ searches the box ``clip(far, x - a, x + a)`` for ``a`` in ``[0, ||far - x||_∞]`` to resolution
    ``min(a_max · theta, theta)`` (HSJA's ``binary_search_batch``). Each candidate stops at its own
    resolution. Returns the last input answered adversarial per candidate ``(m, *)`` and its
    distance to ``x`` ``(m,)``. A point whose budget cannot pay the next step stops; its
    candidates keep their current adversarial end.
    """
    x0 = run.x[owner]
    m = owner.shape[0]
    out = far.clone()
    if norm == "l2":
        hi = torch.ones(m, dtype=x0.dtype, device=x0.device)
        thr = torch.full_like(hi, theta)
    else:
        hi = lp_norm(far - x0, "linf")
        thr = torch.minimum(hi * theta, torch.full_like(hi, theta))
    lo = torch.zeros_like(hi)
    alive = torch.ones(m, dtype=torch.bool, device=x0.device)
    b = run.x.shape[0]
    while True:
        need = alive & (hi - lo > thr)
        if not bool(need.any()):
            break
        cost = torch.bincount(owner[need], minlength=b)
        poor = cost > run.allowed()
        if bool(poor.any()):
            dead = need & poor[owner]
            run.stopped |= poor & (cost > 0)
            alive &= ~dead
            need &= ~dead
            if not bool(need.any()):
                break
        i = need.nonzero().squeeze(1)
        mid = (hi[i] + lo[i]) / 2
        if norm == "l2":
            a = _view(mid, far[i])
            rows = run.clip((1 - a) * x0[i] + a * far[i])
        else:
            a = _view(mid, far[i])
            rows = torch.minimum(torch.maximum(far[i], x0[i] - a), x0[i] + a)
        adv, _ = run.ask(rows, owner[i])
        hi[i] = torch.where(adv, mid, hi[i])
        lo[i] = torch.where(adv, lo[i], mid)
        out[i[adv]] = rows[adv]
    return out, lp_norm(out - x0, norm)


def _finish(config: Any, run: _Run, threat: ThreatModel, clean_pred: Tensor,
            target: Tensor | None) -> AttackResult:
    success = run.found
    x_adv = torch.where(_view(success, run.x), run.best, run.x)
    pred = torch.where(success, run.best_pred, clean_pred)
    return finish(config, threat, run.x, x_adv, session=run.session, success=success, pred=pred,
                  target=target, exhausted=run.stopped)


# -- HopSkipJump ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HopSkipJump:
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

    Budget: a point runs ``steps`` iterations or until ``min(oracle budget, queries)`` cannot
    pay the next one. The Monte-Carlo estimate of the last affordable iteration uses fewer probes
    (down to ``min(10, n_t)``) so that the step and the final binary search still fit.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        queries: per-point query budget of the attack (``None``: only the oracle's budget).
        steps: iterations (the paper's ``T``).
        init_evals, max_evals: ``n_t = min(init_evals · √t, max_evals)``.
        gamma: the threshold constant γ.
        stepsize_search: ``"geometric_progression"`` or ``"grid_search"``.
        init_attempts: uniform-noise draws per point to find a start (0: only ``starting_points``).
        bounds: the input box.

    Example:
        >>> oracle = Oracle(model, output="label")
        >>> result = HopSkipJump(norm="l2", queries=1000)(oracle, x, y, generator=g)
        >>> result.norms.median()               # distances after 1000 queries per point
        >>> HopSkipJump(queries=5000)(oracle, x, y, target=t, starting_points=x_of_class_t)
    """

    norm: str = "l2"
    queries: int | None = 10_000
    steps: int = 64
    init_evals: int = 100
    max_evals: int = 10_000
    gamma: float = 1.0
    stepsize_search: str = "geometric_progression"
    init_attempts: int = 100
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _norm_field(self, ("l2", "linf"))
        _queries_field(self.queries)
        _int_at_least("steps", self.steps, 1)
        _int_at_least("init_evals", self.init_evals, 1)
        _int_at_least("max_evals", self.max_evals, 1)
        if self.max_evals < self.init_evals:
            raise ValueError(f"max_evals ({self.max_evals}) must be >= init_evals ({self.init_evals})")
        _finite("gamma", self.gamma)
        if self.stepsize_search not in ("geometric_progression", "grid_search"):
            raise ValueError("stepsize_search must be 'geometric_progression' or 'grid_search', got "
                             f"{self.stepsize_search!r}")
        _int_at_least("init_attempts", self.init_attempts, 0)
        _bounds_field(self)

    def __call__(self, oracle: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 starting_points: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        threat = ThreatModel(norm=self.norm, eps=math.inf, bounds=self.bounds,
                             targeted=target is not None)
        oracle, session = prepare(oracle, x, y, bounds=threat.bounds, target=target, generator=generator)
        _check_starting_points(starting_points, x, threat.bounds)
        if starting_points is None and self.init_attempts == 0:
            raise ValueError("no way to start: HopSkipJump needs an adversarial start; pass "
                             "starting_points=... or init_attempts >= 1")
        x, y = x.detach(), y.detach()
        target = target.detach() if target is not None else None
        sp = starting_points.detach() if starting_points is not None else None
        gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        run = _Run(session, x, y, target, self.norm, self.queries, threat.bounds)
        start, has_start, _, clean_pred = _start(run, sp, self.init_attempts, gen)
        idx = (has_start & ~run.stopped).nonzero().squeeze(1)
        if idx.numel():
            self._iterate(run, idx, start[idx], gen)
        return _finish(self, run, threat, clean_pred, target)

    def _iterate(self, run: _Run, idx: Tensor, start: Tensor, gen: torch.Generator) -> None:
        """Run the iterations on points ``idx`` ``(m,)`` from adversarial ``start`` ``(m, *)``."""
        x, norm = run.x, self.norm
        d = x[0].numel()
        theta = self.gamma / (d ** 1.5 if norm == "l2" else d ** 2)
        lo, hi = run.bounds
        cur, dist = _bisect(run, idx, start, norm=norm, theta=theta)  # (m, *), (m,)
        keep = ~run.stopped[idx]
        idx, cur, dist = idx[keep], cur[keep], dist[keep]
        grid = self.stepsize_search == "grid_search"
        for t in range(1, self.steps + 1):
            if idx.numel() == 0:
                break
            n_t = min(int(self.init_evals * math.sqrt(t)), self.max_evals)
            # what the step and the final binary search need after the estimate (a typical
            # geometric search takes 1-2 trials)
            reserve = _bisect_steps(dist, theta, norm) + (_GRID.numel() if grid else 2)
            n_eff = torch.clamp(run.allowed()[idx] - reserve, max=n_t)
            ok = n_eff >= min(10, n_t)
            run.stopped[idx[~ok]] = True
            idx, cur, dist, n_eff = idx[ok], cur[ok], dist[ok], n_eff[ok]
            if idx.numel() == 0:
                break
            delta = (torch.full_like(dist, 0.1 * (hi - lo)) if t == 1 else self.gamma * dist / d)
            update = self._direction(run, idx, cur, delta, n_eff, gen)
            if grid:
                new, moved = self._grid_step(run, idx, cur, dist, update, theta)
            else:
                new, moved = self._geometric_step(run, idx, cur, dist, update, t, theta)
            cur = torch.where(_view(moved, cur), new, cur)
            dist = lp_norm(cur - x[idx], norm)
            keep = ~run.stopped[idx]
            idx, cur, dist = idx[keep], cur[keep], dist[keep]
            log.debug("HopSkipJump t=%d: %d points, median distance %.4g", t, idx.numel(),
                      float(dist.median()) if dist.numel() else math.nan)

    def _direction(self, run: _Run, idx: Tensor, cur: Tensor, delta: Tensor, n: Tensor,
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
        u = u / _view(lp_norm(u, "l2").clamp_min(1e-12), u)
        if bool((n == n[0]).all()):
            # the usual case: as many probes for every point; broadcasting instead of gathering
            # cur[local] keeps one (k, D) tensor fewer in memory (same values, same arithmetic)
            shape_mn = (m, int(n[0]), *cur.shape[1:])
            base = cur[:, None]
            step = _view(delta, cur)[:, None]
            u = u.view(shape_mn)
            rows = run.clip(base + step * u)
            u = ((rows - base) / step).view(-1, *cur.shape[1:])
            rows = rows.view(-1, *cur.shape[1:])
        else:
            base = cur[local]
            step = _view(delta[local], u)
            rows = run.clip(base + step * u)
            u = (rows - base) / step
        adv, _ = run.ask(rows, idx[local])
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

    def _geometric_step(self, run: _Run, idx: Tensor, cur: Tensor, dist: Tensor, update: Tensor,
                        t: int, theta: float) -> tuple[Tensor, Tensor]:
        """Halve ``ξ = dist / √t`` until ``clip(cur + ξ v)`` is adversarial, then binary-search
        back to the boundary. Returns the new boundary points and which points moved."""
        m = idx.shape[0]
        xi = dist / math.sqrt(t)
        stepped = cur.clone()
        found = torch.zeros(m, dtype=torch.bool, device=cur.device)
        alive = torch.ones_like(found)
        for _ in range(_MAX_HALVINGS):
            i = (alive & ~found).nonzero().squeeze(1)
            if i.numel() == 0:
                break
            pay = run.afford(idx[i], 1)
            alive[i[~pay]] = False
            i = i[pay]
            if i.numel() == 0:
                break
            rows = run.clip(cur[i] + _view(xi[i], cur[i]) * update[i])
            adv, _ = run.ask(rows, idx[i])
            stepped[i[adv]] = rows[adv]
            found[i[adv]] = True
            xi[i[~adv]] = xi[i[~adv]] / 2
        moved = found & alive
        j = moved.nonzero().squeeze(1)
        out = cur.clone()
        if j.numel():
            out[j], _ = _bisect(run, idx[j], stepped[j], norm=self.norm, theta=theta)
        return out, moved

    def _grid_step(self, run: _Run, idx: Tensor, cur: Tensor, dist: Tensor, update: Tensor,
                   theta: float) -> tuple[Tensor, Tensor]:
        """Try the 20 step sizes at once; binary-search every adversarial one (as many as the
        budget pays, the closest to ``x`` first) and keep the closest boundary point."""
        m, g = idx.shape[0], _GRID.numel()
        pay = run.afford(idx, g)
        out = cur.clone()
        moved = torch.zeros(m, dtype=torch.bool, device=cur.device)
        i = pay.nonzero().squeeze(1)
        if i.numel() == 0:
            return out, moved
        xi = dist[i, None] * _GRID.to(cur.device, cur.dtype)[None, :]  # (m', G)
        local = torch.arange(i.numel(), device=cur.device).repeat_interleave(g)
        rows = run.clip(cur[i][local] + _view(xi.flatten(), cur[local]) * update[i][local])
        adv, _ = run.ask(rows, idx[i][local])
        # per point, how many candidates the remaining budget can binary-search
        steps = _bisect_steps(lp_norm(rows - run.x[idx[i][local]], self.norm), theta, self.norm)
        room = run.allowed()[idx[i]] // steps.view(-1, g).amax(dim=1).clamp_min(1)  # (m',)
        cand_dist = torch.where(adv, lp_norm(rows - run.x[idx[i][local]], self.norm),
                                torch.full_like(xi.flatten(), math.inf)).view(-1, g)
        rank = cand_dist.argsort(dim=1).argsort(dim=1)  # 0 = closest candidate
        chosen = (adv.view(-1, g) & (rank < room[:, None])).flatten()
        if not bool(chosen.any()):
            return out, moved
        c = chosen.nonzero().squeeze(1)
        res, rdist = _bisect(run, idx[i][local[c]], rows[c], norm=self.norm, theta=theta)
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


# -- Boundary attack --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BoundaryAttack:
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
        queries: per-point query budget of the attack (``None``: only the oracle's budget).
        update_stats_every: steps between statistics updates (and spherical queries).
        source_step_convergence: a point stops once its source step is below this.
        init_attempts: uniform-noise draws per point to find a start (0: only ``starting_points``).
        bounds: the input box.

    Example:
        >>> result = BoundaryAttack(steps=5000, queries=5000)(Oracle(model, output="label"), x, y)
        >>> result.norms.median()
    """

    steps: int = 25_000
    spherical_step: float = 0.01
    source_step: float = 0.01
    step_adaptation: float = 1.5
    queries: int | None = 10_000
    update_stats_every: int = 10
    source_step_convergence: float = 1e-7
    init_attempts: int = 100
    bounds: tuple[float, float] = (0.0, 1.0)

    norm: ClassVar[str] = "l2"  # not a field: the Boundary attack is L2 only

    def __post_init__(self) -> None:
        _int_at_least("steps", self.steps, 1)
        _finite("spherical_step", self.spherical_step)
        _finite("source_step", self.source_step)
        _finite("step_adaptation", self.step_adaptation, low=1.0)
        _queries_field(self.queries)
        _int_at_least("update_stats_every", self.update_stats_every, 1)
        _finite("source_step_convergence", self.source_step_convergence)
        _int_at_least("init_attempts", self.init_attempts, 0)
        _bounds_field(self)

    def __call__(self, oracle: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 starting_points: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        threat = ThreatModel(norm="l2", eps=math.inf, bounds=self.bounds, targeted=target is not None)
        oracle, session = prepare(oracle, x, y, bounds=threat.bounds, target=target, generator=generator)
        _check_starting_points(starting_points, x, threat.bounds)
        if starting_points is None and self.init_attempts == 0:
            raise ValueError("no way to start: BoundaryAttack needs an adversarial start; pass "
                             "starting_points=... or init_attempts >= 1")
        x, y = x.detach(), y.detach()
        target = target.detach() if target is not None else None
        sp = starting_points.detach() if starting_points is not None else None
        gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        run = _Run(session, x, y, target, "l2", self.queries, threat.bounds)
        start, has_start, _, clean_pred = _start(run, sp, self.init_attempts, gen)
        # the walk moves the best point found so far: the start, or its blend towards x
        idx = (has_start & ~run.stopped).nonzero().squeeze(1)
        if idx.numel():
            self._walk(run, idx, gen)
        return _finish(self, run, threat, clean_pred, target)

    def _walk(self, run: _Run, idx: Tensor, gen: torch.Generator) -> None:
        x = run.x
        b, dev, dt = x.shape[0], x.device, x.dtype
        spherical = torch.full((b,), float(self.spherical_step), dtype=dt, device=dev)
        source = torch.full((b,), float(self.source_step), dtype=dt, device=dev)
        sph_hist = torch.full((b, 100), math.nan, dtype=dt, device=dev)
        step_hist = torch.full((b, 30), math.nan, dtype=dt, device=dev)
        sph_ptr = torch.zeros(b, dtype=torch.long, device=dev)
        step_ptr = torch.zeros(b, dtype=torch.long, device=dev)
        active = torch.zeros(b, dtype=torch.bool, device=dev)
        active[idx] = True
        lo, hi = run.bounds
        for step in range(1, self.steps + 1):
            active &= source >= self.source_step_convergence
            stats = step % self.update_stats_every == 0
            i = active.nonzero().squeeze(1)
            if i.numel() == 0:
                break
            pay = run.afford(i, 2 if stats else 1)
            active[i[~pay]] = False
            i = i[pay]
            if i.numel() == 0:
                break
            xs, cur = x[i].flatten(1), run.best[i].flatten(1)  # (m, D)
            r = xs - cur
            rho = lp_norm(r, "l2")
            r_dir = r / rho[:, None]
            eta = torch.randn(cur.shape, generator=gen, device=dev, dtype=dt)
            eta = eta - (eta * r_dir).sum(dim=1, keepdim=True) * r_dir
            eta = eta * (spherical[i] * rho / lp_norm(eta, "l2").clamp_min(1e-30))[:, None]
            sph = (xs + (eta - r) / torch.sqrt(spherical[i] ** 2 + 1)[:, None]).clamp(lo, hi)
            to_x = xs - sph
            to_x_norm = lp_norm(to_x, "l2")
            length = (source[i] * rho + to_x_norm - rho).clamp_min(0) / to_x_norm.clamp_min(1e-30)
            cand = (sph + length[:, None] * to_x).clamp(lo, hi)
            shape = (i.numel(), *x.shape[1:])
            if stats:
                adv, _ = run.ask(torch.cat([cand, sph]).view(2 * i.numel(), *x.shape[1:]),
                                 torch.cat([i, i]))
                cand_adv, sph_adv = adv[:i.numel()], adv[i.numel():]
                sph_hist[i, sph_ptr[i]] = sph_adv.to(dt)
                sph_ptr[i] = (sph_ptr[i] + 1) % sph_hist.shape[1]
                step_hist[i, step_ptr[i]] = cand_adv.to(dt)
                step_ptr[i] = (step_ptr[i] + 1) % step_hist.shape[1]
                self._adapt(i, sph_hist, step_hist, spherical, source)
            else:
                run.ask(cand.view(shape), i)

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
