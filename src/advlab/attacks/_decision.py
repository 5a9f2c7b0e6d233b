"""What the decision-based attacks (HopSkipJump, Boundary) share: the starting points, one call's
walk state (budget and best adversarial input per point), the random starts and the binary search.

Both attacks start from an input the oracle answers as adversarial (a user's ``starting_points``
or uniform noise) and walk towards the clean input; :class:`Walk` is the only way they reach the
oracle. At the end :func:`hand_over` gives the lifecycle each point's closest adversarial input
and the oracle's label there (``x`` and its label where none was found), so ``success`` is
recomputed from the criterion without another query.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab._checks import check_inputs, check_int
from advlab.attacks._blackbox import check_label_range, labels_of
from advlab.attacks._base import AttackResult
from advlab.attacks.contract import Attack, Run, execute
from advlab.attacks.criteria import Criterion
from advlab.threat import ThreatModel, _view, lp_norm

log = logging.getLogger(__name__)

# binary search resolution of the blend between x and a random adversarial start (both papers'
# reference code: 0.001 of the segment)
INIT_BLEND_TOL = 1e-3
# a point gives up a geometric step-size search after this many halvings (the stepped point is
# then the boundary point itself, which is adversarial); the reference code has no cap
MAX_HALVINGS = 40
# the grid of step sizes tried by stepsize_search="grid_search" (reference code), times the distance
GRID = torch.logspace(-4, 0, 20, dtype=torch.float64)



# -- validation ------------------------------------------------------------------------------------


def budget_field(value: Any) -> None:
    if value is not None:
        check_int("budget (queries per point, or None for the oracle's budget only)", value)


def check_starting_points(starting_points: Any, x: Tensor, bounds: Any,
                          threat: ThreatModel | None = None) -> None:
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
    if not isinstance(lo, (int, float)):  # per-feature bounds
        try:
            check_inputs(None, starting_points, torch.zeros(x.shape[0], dtype=torch.long,
                                                            device=x.device), bounds=bounds)
        except ValueError as err:
            raise ValueError(f"starting_points must be valid inputs: {err}") from None
    else:
        smin, smax = float(starting_points.min()), float(starting_points.max())
        if smin < lo or smax > hi:
            raise ValueError(f"starting_points has values in [{smin:.4g}, {smax:.4g}], outside the bounds "
                             f"({lo:g}, {hi:g}); starting points must be valid inputs")
    if threat is not None and threat.mask is not None:
        moved = (starting_points != x) & ~threat.free(x)
        if bool(moved.any()):
            pts = moved.flatten(1).any(dim=1).nonzero().squeeze(1).tolist()
            raise ValueError(f"starting_points change features the mask freezes (points {pts[:10]}); "
                             "a starting point must equal x on every frozen feature")



def open_walk(attack: Attack, run: Run) -> tuple[Walk, Tensor | None]:
    """Check the call's ``starting_points`` (``run.extras``) and set up the walk of one call."""
    sp = run.extras.get("starting_points")
    check_starting_points(sp, run.x, run.threat.bounds, run.threat)
    if sp is None and attack.init_attempts == 0:  # type: ignore[attr-defined]
        raise ValueError(f"no way to start: {type(attack).__name__} needs an adversarial start; pass "
                         "starting_points=... or init_attempts >= 1")
    walk = Walk(run, attack.norm, attack.budget)  # type: ignore[attr-defined]
    return walk, sp.detach() if sp is not None else None


class DecisionAttack(Attack):
    """The lifecycle both decision-based attacks share: a call that also takes
    ``starting_points``, and a core that finds each point's start (:func:`begin`), lets the family
    move it (``_search``) and hands the closest adversarial inputs over (:func:`hand_over`).
    A subclass declares its fields and writes ``_search`` only."""

    access: ClassVar[str] = "labels"
    kind: ClassVar[str] = "minimal"

    def __call__(self, model: Any, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 starting_points: Tensor | None = None, generator: torch.Generator | None = None,
                 criterion: Criterion | None = None) -> AttackResult:
        return execute(self, model, x, y, target=target, generator=generator, criterion=criterion,
                       extras={"starting_points": starting_points})

    def _core(self, run: Run) -> None:
        walk, sp = open_walk(self, run)
        start, has_start, _, clean_pred = begin(walk, sp, self.init_attempts,  # type: ignore[attr-defined]
                                                run.generator)
        idx = (has_start & ~walk.stopped).nonzero().squeeze(1)
        if idx.numel():
            self._search(walk, idx, start[idx], run.generator)
        hand_over(walk, clean_pred)

    def _search(self, walk: Walk, idx: Tensor, start: Tensor, gen: torch.Generator) -> None:
        """Move the points ``idx`` (which start at ``start``, also ``walk``'s best so far) towards
        ``x`` through ``walk``."""
        raise NotImplementedError


# -- one call's state: the session, the budget and the best adversarial input per point --------------


class Walk:
    """Mutable state of one attack call on ``B`` points (the lifecycle's ``run`` and the walk's
    own bookkeeping).

    :meth:`ask` is the only way to the oracle: it checks the per-point budget, reads labels from
    the answers, decides adversarial by the run's criterion and keeps, per point, the closest input
    answered adversarial (``best``).
    """

    def __init__(self, run: Run, norm: str, limit: int | None) -> None:
        self.run, self.session, self.x, self.y, self.target = run, run.session, run.x, run.y, run.target
        self.norm, self.limit, self.threat = norm, limit, run.threat
        self.bounds = run.threat.box(run.x)  # numbers, or per-feature tensors on x's device
        x = self.x
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
        """``(B,)`` int64: queries each point may still make (oracle budget and the attack's ``budget``)."""
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
        # every query honours the mask: a frozen feature is x's, whatever the search proposed
        rows = self.threat.keep_frozen(rows, self.x[owner])
        cost = torch.bincount(owner, minlength=b)
        if bool((cost > self.allowed()).any()):
            raise AssertionError("internal error: a decision-based attack planned a query past a "
                                 "point's budget; please report this")
        answers = self.session(rows, owner)
        labels = labels_of(answers).to(self.x.device)
        adv = self.run.adversarial_labels(labels, owner)
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
        return self.threat.clip(t)


def begin(walk: Walk, starting_points: Tensor | None, init_attempts: int,
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
    x = walk.x
    b = x.shape[0]
    dev = x.device
    pts = torch.arange(b, device=dev)
    # the clean points, and the starting points in the same call (a fresh session always pays
    # the clean query; a point that cannot also pay its starting point stops there)
    has_sp = starting_points is not None
    allowed = walk.allowed()
    clean_ok = allowed >= 1
    sp_ok = (allowed >= 2) if has_sp else torch.zeros_like(clean_ok)
    walk.stopped |= ~clean_ok | (clean_ok & ~sp_ok if has_sp else torch.zeros_like(clean_ok))
    rows, owner = [x[clean_ok]], [pts[clean_ok]]
    if has_sp:
        rows.append(starting_points[sp_ok])  # type: ignore[index]
        owner.append(pts[sp_ok])
    adv, labels = walk.ask(torch.cat(rows), torch.cat(owner))
    n_clean = int(clean_ok.sum())
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    done[clean_ok] = adv[:n_clean]
    # the oracle's label for x (y where x could not be queried, which a fresh session rules out)
    clean_pred = walk.y.clone()
    clean_pred[clean_ok] = labels[:n_clean]
    check_label_range(walk.y, walk.session.oracle.num_classes)
    if walk.target is not None:
        check_label_range(walk.target, walk.session.oracle.num_classes, "target")
    start = x.clone()
    has_start = torch.zeros(b, dtype=torch.bool, device=dev)
    if has_sp:
        sp_adv = torch.zeros(b, dtype=torch.bool, device=dev)
        sp_adv[sp_ok] = adv[n_clean:]
        bad = sp_ok & ~done & ~sp_adv
        if bool(bad.any()):
            which = bad.nonzero().squeeze(1).tolist()
            goal = "in the target class" if walk.target is not None else "misclassified"
            raise ValueError(f"{len(which)} starting_points are not adversarial (not {goal} by the "
                             f"oracle): points {which[:10]}{' ...' if len(which) > 10 else ''}")
        start[sp_ok] = starting_points[sp_ok]  # type: ignore[index]
        has_start = sp_ok & ~done
        return start, has_start, done, clean_pred
    # random starts: uniform noise in the box until the oracle calls it adversarial
    lo, hi = walk.bounds
    from_noise = torch.zeros(b, dtype=torch.bool, device=dev)
    for _ in range(init_attempts):
        pending = (~done & ~from_noise & ~walk.stopped).nonzero().squeeze(1)
        if pending.numel() == 0:
            break
        pending = pending[walk.afford(pending, 1)]
        if pending.numel() == 0:
            break
        noise = torch.rand((pending.numel(), *x.shape[1:]), generator=generator, device=dev,
                           dtype=x.dtype) * (hi - lo) + lo
        if walk.threat.per_feature or walk.threat.mask is not None:
            noise = walk.threat.keep_frozen(walk.clip(noise), x[pending])
        adv, _ = walk.ask(noise, pending)
        start[pending[adv]] = noise[adv]
        from_noise[pending[adv]] = True
    missing = ~done & ~from_noise & ~walk.stopped
    if bool(missing.any()):
        log.warning("%d of %d points found no adversarial start in %d uniform-noise draws%s; they are "
                    "returned unchanged (success=False)", int(missing.sum()), b, init_attempts,
                    "; pass starting_points of the target class" if walk.target is not None else "")
    idx = from_noise.nonzero().squeeze(1)
    if idx.numel():
        out, _ = bisect(walk, idx, start[idx], norm="l2", theta=INIT_BLEND_TOL)
        start[idx] = out
    return start, from_noise, done, clean_pred


def bisect_steps(hi: Tensor, theta: float, norm: str) -> Tensor:
    """``(m,)`` int64: binary-search steps to bring ``hi - lo`` from ``hi`` below the threshold."""
    if norm == "l2":
        return torch.full_like(hi, math.ceil(math.log2(1 / theta)), dtype=torch.long)
    thr = torch.minimum(hi * theta, torch.full_like(hi, theta))
    return torch.ceil(torch.log2((hi / thr).clamp_min(1.0))).long()


def bisect(walk: Walk, owner: Tensor, far: Tensor, *, norm: str,
           theta: float) -> tuple[Tensor, Tensor]:
    """Binary search from the adversarial inputs ``far`` ``(m, *)`` towards ``x[owner]``.

    L2 searches the blend ``(1 - a) x + a far`` for ``a`` in ``[0, 1]`` to resolution ``theta``;
    L∞ searches the box ``clip(far, x - a, x + a)`` for ``a`` in ``[0, ||far - x||_∞]`` to resolution
    ``min(a_max · theta, theta)`` (HSJA's ``binary_search_batch``). Each candidate stops at its own
    resolution. Returns the last input answered adversarial per candidate ``(m, *)`` and its
    distance to ``x`` ``(m,)``. A point whose budget cannot pay the next step stops; its
    candidates keep their current adversarial end.
    """
    x0 = walk.x[owner]
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
    b = walk.x.shape[0]
    while True:
        need = alive & (hi - lo > thr)
        if not bool(need.any()):
            break
        cost = torch.bincount(owner[need], minlength=b)
        poor = cost > walk.allowed()
        if bool(poor.any()):
            dead = need & poor[owner]
            walk.stopped |= poor & (cost > 0)
            alive &= ~dead
            need &= ~dead
            if not bool(need.any()):
                break
        i = need.nonzero().squeeze(1)
        mid = (hi[i] + lo[i]) / 2
        if norm == "l2":
            a = _view(mid, far[i])
            rows = walk.clip((1 - a) * x0[i] + a * far[i])
        else:
            a = _view(mid, far[i])
            rows = torch.minimum(torch.maximum(far[i], x0[i] - a), x0[i] + a)
        adv, _ = walk.ask(rows, owner[i])
        hi[i] = torch.where(adv, mid, hi[i])
        lo[i] = torch.where(adv, lo[i], mid)
        out[i[adv]] = rows[adv]
    return out, lp_norm(out - x0, norm)


def hand_over(walk: Walk, clean_pred: Tensor) -> None:
    """Record every point's closest adversarial input and its label for the lifecycle (``x`` and
    the oracle's label of ``x`` where none was found), and the points stopped by the budget."""
    found = walk.found
    everyone = torch.arange(walk.x.shape[0], device=walk.x.device)
    x_adv = torch.where(_view(found, walk.x), walk.best, walk.x)
    walk.run.record.record(everyone, x_adv, None, found)
    walk.run.record.set_labels(everyone, torch.where(found, walk.best_pred, clean_pred))
    walk.run.extras["exhausted"] = walk.stopped


