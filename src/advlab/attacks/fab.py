"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), untargeted and multi-targeted (FAB-T, as in
AutoAttack), under L∞, L2 and L1.

FAB looks for the point of the decision boundary closest to ``x`` (in the attack's norm). At each
step it linearises the classifier at the iterate ``x⁽ᵏ⁾``: for a logit difference ``f`` (negative
while the true class wins) with gradient ``w = ∇f(x⁽ᵏ⁾)`` the boundary is approximated by the
hyperplane ``π = {z : f + w·(z − x⁽ᵏ⁾) = 0}``. With ``P(p)`` the projection of ``p`` onto ``π``
intersected with the box (the smallest ``δ`` in the attack's norm with ``p + δ ∈ π ∩ box``,
:func:`project_hyperplane_box`),

    δₖ = P(x⁽ᵏ⁾) − x⁽ᵏ⁾,   δ₀ = P(x) − x,   α = min(‖δₖ‖ / (‖δₖ‖ + ‖δ₀‖), α_max)
    x⁽ᵏ⁺¹⁾ = clip((1 − α)(x⁽ᵏ⁾ + η δₖ) + α (x + η δ₀))

a step towards the boundary that is biased towards the original point (``α``) and overshoots it
a little (``η > 1``). Whenever ``x⁽ᵏ⁺¹⁾`` is adversarial it is kept if it is the closest so far,
and the iterate is pulled back towards ``x``: ``x⁽ᵏ⁺¹⁾ ← x + β (x⁽ᵏ⁺¹⁾ − x)`` (``β < 1``), so the
search alternates around the boundary and closes in on its nearest point.

Which difference: untargeted FAB takes, over the classes ``j ≠ y``, the one whose linearised
boundary is nearest, ``argminⱼ |fⱼ| / ‖∇fⱼ‖_q`` (``fⱼ = zⱼ − z_y``, ``q`` the dual norm), which
needs the gradients of all ``C − 1`` differences (``C − 1`` backward passes per step). FAB-T
(AutoAttack's version) attacks the differences ``z_t − z_y`` one target ``t`` at a time, for the
``n_target_classes`` classes with the highest clean logits, so a step costs one backward pass;
it is still an *untargeted* attack (any misclassification succeeds). Given a ``target``, FAB
is targeted and linearises ``z_t − max_{j≠t} z_j``.

Restarts: the first run starts at ``x``; every further run starts from a random point at
distance ``min(best, ε) / 2`` of ``x`` (``best`` the norm of the closest adversarial point found
so far), as in the paper, and keeps the closest point over all runs.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y`` and ``target`` ``(B,)`` int64. Costs per
step and point: ``num_grads`` counts backward passes (one vector-Jacobian product each: ``C − 1``
for untargeted FAB, 1 for FAB-T and targeted FAB), ``num_forwards`` two forward passes (the
linearisation and the check of the new iterate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from advlab._checks import bounds_field, check_choice, check_int, check_number, input_grad, norm_field
from advlab.attacks.contract import Attack, Run
from advlab.attacks.minimal import MARGIN_RTOL
from advlab.threat import ThreatModel, lp_norm, per_sample

# the dual of each norm: |w·δ| <= ||w||_dual ||δ||, so |f| / ||w||_dual is the linearised distance
_DUAL = {"l2": "l2", "linf": "l1", "l1": "linf"}
# the reference implementation's default radii for [0, 1] inputs, used (scaled to the box's width)
# as a random restart's radius when neither ε nor an adversarial point bounds it
_FALLBACK_RADIUS = {"linf": 0.3, "l2": 1.0, "l1": 5.0}
_TINY = 1e-12


# -- projection onto a hyperplane intersected with the box ------------------------------------------


def project_hyperplane_box(t: Tensor, w: Tensor, b: Tensor, norm: str,
                           bounds: tuple[float, float]) -> Tensor:
    """The smallest step onto a hyperplane inside a box, for a batch of points.

    For each row ``i``: ``δᵢ = argmin ‖δ‖_p`` subject to ``wᵢ·(tᵢ + δ) = bᵢ`` and
    ``lo ≤ tᵢ + δ ≤ hi``; where the box does not reach the hyperplane, the step to the box's corner
    that moves ``w·x`` furthest towards ``b``.

    Turning ``w`` so that ``w·x`` must grow by ``r = |b − w·t|``, coordinate ``j`` moves by
    ``sⱼ ≥ 0`` in the direction of ``sign(wⱼ)``, at most ``capⱼ`` (its room to the box), adding
    ``|wⱼ| sⱼ``. The optimality conditions give, for a multiplier ``λ ≥ 0`` fixed by
    ``Σ |wⱼ| sⱼ = r``:

    * L2: ``sⱼ = min(λ |wⱼ|, capⱼ)``;
    * L∞: ``sⱼ = min(λ, capⱼ)`` where ``wⱼ ≠ 0``;
    * L1: the coordinates in decreasing order of ``|wⱼ|``, each filled to its cap until ``r`` is
      reached (one coordinate partly).

    For L2 and L∞ ``Σ |wⱼ| sⱼ`` is piecewise linear and increasing in ``λ`` with breakpoints where
    coordinates reach their caps: one sort and prefix sums evaluate it at every breakpoint, and
    ``λ`` follows in closed form on the segment that holds ``r`` (no iterations).

    Args:
        t: ``(N, D)`` points; w: ``(N, D)`` normals; b: ``(N,)`` offsets; norm: ``"linf"``,
            ``"l2"`` or ``"l1"``; bounds: the box ``(lo, hi)``.

    Returns:
        ``(N, D)`` steps ``δ``.
    """
    lo, hi = bounds  # numbers, or per-feature (1, D) tensors
    r = b - (w * t).sum(dim=1)  # (N,) how much w·x must change
    w = torch.where((r < 0)[:, None], -w, w)
    r = r.abs()
    a = w.abs()
    up = w > 0
    cap = torch.where(up, hi - t, t - lo).clamp_min(0)
    cap = torch.where(a > 0, cap, torch.zeros_like(cap))  # (N, D) room in the useful direction
    s = _fill_in_order(a, cap, r) if norm == "l1" else _water_fill(a, cap, r, norm)
    return torch.where(up, s, -s)  # s = 0 where w = 0


def _water_fill(a: Tensor, cap: Tensor, r: Tensor, norm: str) -> Tensor:
    """``s = min(λ v, cap)`` with ``Σ a s = r`` (``v = a`` for L2, ``1[a > 0]`` for L∞);
    ``s = cap`` where ``r`` is out of reach."""
    n, d = a.shape
    v = a if norm == "l2" else (a > 0).to(a.dtype)
    live = v > 0
    brk = torch.where(live, cap / torch.where(live, v, torch.ones_like(v)), torch.full_like(a, math.inf))
    brk_s, order = brk.sort(dim=1)  # breakpoints λ at which each coordinate reaches its cap
    slope = (a * v).gather(1, order)  # d(a·s)/dλ of a coordinate while it is free
    full = (a * cap).gather(1, order)  # a·s of a coordinate once capped
    zero = a.new_zeros(n, 1)
    capped = torch.cat([zero, full.cumsum(dim=1)], dim=1)  # (N, D+1): Σ_{j<k} full_j
    free = torch.cat([slope.flip(1).cumsum(dim=1).flip(1), zero], dim=1)  # (N, D+1): Σ_{j>=k} slope_j
    # g(λ) at the k-th breakpoint: coordinates 0..k capped, the others still growing
    at_brk = torch.where(torch.isfinite(brk_s), capped[:, 1:] + brk_s * free[:, 1:], capped[:, 1:])
    k = (at_brk < r[:, None]).sum(dim=1, keepdim=True)  # (N, 1): coordinates capped at the solution
    lam = (r[:, None] - capped.gather(1, k)) / free.gather(1, k).clamp_min(_TINY)
    s = torch.minimum(lam.clamp_min(0) * v, cap)
    return torch.where(k == d, cap, s)  # out of reach: the corner


def _fill_in_order(a: Tensor, cap: Tensor, r: Tensor) -> Tensor:
    """L1: fill coordinates to their caps in decreasing order of ``a`` until ``Σ a s = r``."""
    n, d = a.shape
    a_s, order = a.sort(dim=1, descending=True)
    cap_s = cap.gather(1, order)
    capped = torch.cat([a.new_zeros(n, 1), (a_s * cap_s).cumsum(dim=1)], dim=1)  # (N, D+1)
    k = (capped[:, 1:] < r[:, None]).sum(dim=1, keepdim=True)  # (N, 1): coordinates filled
    kk = k.clamp_max(d - 1)
    part = ((r[:, None] - capped.gather(1, k)) / a_s.gather(1, kk).clamp_min(_TINY))
    part = torch.minimum(part.clamp_min(0), cap_s.gather(1, kk))
    pos = torch.arange(d, device=a.device)[None, :]
    s_sorted = torch.where(pos < k, cap_s, torch.where(pos == k, part, torch.zeros_like(cap_s)))
    return torch.zeros_like(a).scatter(1, order, s_sorted)


# -- the attack -------------------------------------------------------------------------------------


def _others(y: Tensor, num_classes: int) -> Tensor:
    """``(R, C − 1)``: the classes other than ``y``, in order."""
    j = torch.arange(num_classes - 1, device=y.device)[None, :]
    return j + (j >= y[:, None]).long()


def _inside(norm: Tensor, eps: float) -> Tensor:
    """``(R,)`` bool: an adversarial point was found, at distance at most ``eps``."""
    return torch.isfinite(norm) & (norm <= eps)


def _stable(logits: Tensor) -> Tensor:
    """``(R,)`` bool: the top two logits are apart by more than float noise, so the decision at
    this point survives re-evaluation in another batch (see :data:`advlab.attacks.minimal.MARGIN_RTOL`)."""
    top = logits.topk(2, dim=1).values
    return (top[:, 0] - top[:, 1]) > MARGIN_RTOL * logits.abs().amax(dim=1)


@dataclass(frozen=True, kw_only=True)
class _FABConfig(Attack):
    """The settings FAB and FAB-T share (see :class:`FAB`)."""

    loss_fusion: ClassVar[bool] = False  # FAB linearises the model's logits

    eps: float = math.inf
    norm: str = "linf"
    steps: int = 10
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories
    early_stop: bool = False

    def __post_init__(self) -> None:
        norm_field(self, ("linf", "l2", "l1"))
        bounds_field(self)
        ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)  # eps: a number >= 0 or inf
        check_int("steps", self.steps)
        check_int("restarts", self.restarts)
        check_number("alpha_max (the paper uses 0.1)", self.alpha_max, low=0.0, low_open=False, high=1.0)
        check_number("eta (the overshoot, >= 1; the paper uses 1.05)", self.eta, low=1.0, low_open=False)
        check_number("beta (the backward step, in (0, 1]; the paper uses 0.9)", self.beta, high=1.0)
        check_choice("early_stop", self.early_stop, (True, False))

    # one run from ``start`` on the rows ``pts`` (points, with repeats allowed across runs)
    def _run(self, run: Run, pts: Tensor, aim: Tensor | None, mode: str, start: Tensor,
             best: dict[str, Tensor]) -> None:
        model, threat, rec = run.model, run.threat, run.record
        x0, y = run.x[pts], run.y[pts]
        dtype = x0.dtype
        work = torch.promote_types(dtype, torch.float32)  # the geometry in float32 at least
        lo, hi = threat.box(x0)
        eps = threat.eps
        x0w = x0.to(work).flatten(1)
        # per-feature bounds against the flat rows of the geometry: (1, D) in the work dtype
        flat_box = (tuple(v.to(work).reshape(1, -1) for v in threat.box(x0))  # type: ignore[union-attr]
                    if threat.per_feature else None)
        xk = start
        rows = torch.arange(pts.numel(), device=pts.device)

        def keep_best(cand: Tensor, logits: Tensor, sel: Tensor) -> Tensor:
            """Keep ``cand`` (rows ``sel``) where it is adversarial and the closest so far; ``(R,)``
            bool: adversarial. A point kept must be adversarial by more than float noise
            (:func:`_stable`); the backward step follows every adversarial point, as in the paper
            (an iterate left on the boundary would linearise to a zero step and stay there)."""
            p = pts[sel]
            hit = run.adversarial(logits, p) & torch.isfinite(logits).all(dim=1)
            dist = lp_norm(cand.to(work) - x0w[sel].view_as(cand), threat.norm)
            better = hit & _stable(logits) & (dist < best["norm"][p])
            if bool(better.any()):
                q = p[better]
                best["norm"][q] = dist[better]
                best["x"][q] = cand[better].detach()
                best["scores"][q] = logits[better].detach().to(best["scores"].dtype)
            return hit

        for _ in range(self.steps):
            f, g, logits = self._linearise(model, xk, y[rows], None if aim is None else aim[rows], mode,
                                           threat.free(xk))
            rec.charge(pts[rows], grads=f.shape[1], forwards=1)
            keep_best(xk, logits, rows)  # the iterate itself (after a backward step) may be adversarial
            xk_next = self._step(xk.to(work).flatten(1), x0w[rows], f, g, threat, flat_box)
            xk_next = threat.keep_frozen(xk_next.view_as(xk).to(dtype), x0[rows])
            with torch.no_grad():
                z = model(xk_next)
            rec.charge(pts[rows], forwards=1)
            hit = keep_best(xk_next, z, rows)
            back = x0[rows] + self.beta * (xk_next - x0[rows])
            back = threat.keep_frozen(torch.clamp(back, min=lo, max=hi), x0[rows])
            xk = torch.where(per_sample(hit, xk_next), back, xk_next)
            if self.early_stop:
                done = _inside(best["norm"][pts[rows]], eps)
                if bool(done.any()):
                    rows, xk = rows[~done], xk[~done]
                    if rows.numel() == 0:
                        return

    def _linearise(self, model: nn.Module, xk: Tensor, y: Tensor, aim: Tensor | None,
                   mode: str, free: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Logit differences ``f`` ``(R, K)`` at ``xk``, their input gradients ``(R, K, D)`` and the
        logits ``(R, C)``: ``K = C − 1`` differences ``z_j − z_y`` (untargeted), or one: ``z_t − z_y``
        (FAB-T) or ``z_t − max_{j≠t} z_j`` (targeted)."""
        leaf = xk.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            z_y = logits.gather(1, y[:, None])
            if mode == "untargeted":
                f = logits.gather(1, _others(y, logits.shape[1])) - z_y
            elif mode == "pair":
                f = logits.gather(1, aim[:, None]) - z_y
            else:
                rest = logits.scatter(1, aim[:, None], -math.inf).amax(dim=1, keepdim=True)
                f = logits.gather(1, aim[:, None]) - rest
            k = f.shape[1]
            g = torch.stack([input_grad(f[:, j].sum(), leaf, retain_graph=j < k - 1).flatten(1)
                             for j in range(k)], dim=1)
        work = torch.promote_types(xk.dtype, torch.float32)
        f = torch.nan_to_num(f.detach().to(work), nan=0.0, posinf=0.0, neginf=0.0)
        g = torch.nan_to_num(g.to(work), nan=0.0, posinf=0.0, neginf=0.0)
        if free is not None:  # a frozen feature cannot move: the linearisation has no say in it
            g = g * free.reshape(1, 1, -1).to(work)
        return f, g, logits.detach()

    def _step(self, xk: Tensor, x0: Tensor, f: Tensor, g: Tensor, threat: ThreatModel,
              box: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """One FAB update on flat rows ``(R, D)``: the nearest linearised boundary, the projections
        of ``xk`` and ``x0`` onto it (inside the box: ``box``, per-feature ``(1, D)`` bounds, or the
        threat model's numbers), and the biased, overshooting step."""
        r = xk.shape[0]
        gn = lp_norm(g.flatten(0, 1), _DUAL[threat.norm]).view(f.shape)
        pick = (f.abs() / (gn + _TINY)).argmin(dim=1)  # (R,) the nearest linearised boundary
        ar = torch.arange(r, device=xk.device)
        w, fl = g[ar, pick], f[ar, pick]  # (R, D), (R,)
        b = (w * xk).sum(dim=1) - fl  # the hyperplane w·z = b
        flat = box if box is not None else threat.bounds
        delta = project_hyperplane_box(torch.cat([xk, x0]), torch.cat([w, w]), torch.cat([b, b]),
                                       threat.norm, flat)  # type: ignore[arg-type]
        d_k, d_0 = delta[:r], delta[r:]
        n_k = lp_norm(d_k, threat.norm).clamp_min(1e-8)
        n_0 = lp_norm(d_0, threat.norm).clamp_min(1e-8)
        alpha = (n_k / (n_k + n_0)).clamp(0.0, self.alpha_max)[:, None]
        step = (1 - alpha) * (xk + self.eta * d_k) + alpha * (x0 + self.eta * d_0)
        if isinstance(flat[0], Tensor):  # per-feature bounds, against the flat rows
            return torch.clamp(step, min=flat[0], max=flat[1])
        return threat.clip(step)

    def _random_start(self, run: Run, pts: Tensor, best_norm: Tensor) -> Tensor:
        """A random point at distance ``min(best, ε) / 2`` from each ``x`` (then clipped to the box)."""
        threat, x0 = run.threat, run.x[pts]
        lo, hi = threat.box(x0)
        work = torch.promote_types(x0.dtype, torch.float32)
        fallback = _FALLBACK_RADIUS[threat.norm] * threat.width
        radius = torch.minimum(best_norm, torch.full_like(best_norm, threat.eps))
        radius = torch.where(torch.isfinite(radius), radius, torch.full_like(radius, fallback)) / 2
        shape = x0.shape
        if threat.norm == "linf":
            t = torch.empty(shape, dtype=work, device=x0.device).uniform_(-1.0, 1.0, generator=run.generator)
        elif threat.norm == "l2":
            t = torch.empty(shape, dtype=work, device=x0.device).normal_(generator=run.generator)
        else:  # Laplace: uniform on the L1 sphere once normalised
            u = torch.empty(shape, dtype=work, device=x0.device).uniform_(generator=run.generator)
            sign = torch.empty(shape, dtype=work, device=x0.device).bernoulli_(0.5, generator=run.generator)
            t = -torch.log(u.clamp_min(1e-12)) * (2 * sign - 1)
        t = threat.restrict(t)
        t = t / per_sample(lp_norm(t, threat.norm).clamp_min(_TINY), t)
        start = x0.to(work) + per_sample(radius.to(work), t) * t
        if isinstance(lo, Tensor):
            start = torch.clamp(start, min=lo.to(work), max=hi.to(work))
        else:
            start = start.clamp(lo, hi)
        return threat.keep_frozen(start.to(x0.dtype), x0)

    def _runs(self, run: Run) -> list[tuple[Tensor | None, str]]:
        """The runs in turn: per run, the class aimed at per point ``(B,)`` (``None``: every class)
        and the kind of linearisation."""
        raise NotImplementedError  # pragma: no cover

    def _core(self, run: Run) -> None:
        idx, threat = run.todo, run.threat
        b = run.x.shape[0]
        work = torch.promote_types(run.x.dtype, torch.float32)
        clean = run.extras["clean_logits"]
        best = {"norm": torch.full((b,), math.inf, dtype=work, device=run.x.device),
                "x": run.x.clone(), "scores": clean.detach().clone()}
        for aim, mode in self._runs(run):
            for restart in range(self.restarts):
                # with a finite ε only the points not yet inside the ball go on; with ε = inf every
                # point runs again and keeps its closest point (early_stop: the first one)
                still = ~_inside(best["norm"][idx], threat.eps)
                if math.isinf(threat.eps) and not self.early_stop:
                    still = torch.ones_like(still)
                pts = idx[still]
                if pts.numel() == 0:
                    break
                start = run.x[pts] if restart == 0 else self._random_start(run, pts, best["norm"][pts])
                self._run(run, pts, None if aim is None else aim[pts], mode, start, best)
        self._store(run, idx, best)

    def _store(self, run: Run, idx: Tensor, best: dict[str, Tensor]) -> None:
        """Hand each point's closest adversarial point to the lifecycle when it lies in the ball;
        otherwise that point projected onto the ball (the lifecycle scores it), or ``x``."""
        threat, rec = run.threat, run.record
        x, xb = run.x[idx], best["x"][idx]
        found = torch.isfinite(best["norm"][idx])
        # measured exactly: a point is returned as found only if it lies in the ball in its own dtype
        exact = lp_norm(xb.double() - x.double(), threat.norm)
        inside = found & (exact <= threat.eps)
        clean = ~found
        if bool(inside.any()):
            rec.record(idx[inside], xb[inside], best["scores"][idx[inside]], inside[inside])
        if bool(clean.any()):
            rec.record(idx[clean], x[clean], best["scores"][idx[clean]], inside[clean])
        out = found & ~inside
        if bool(out.any()):
            rec.record(idx[out], threat.project(xb[out], x[out]), None, inside[out])


@dataclass(frozen=True, kw_only=True)
class FAB(_FABConfig):
    """FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), under L∞, L2 or L1.

    A minimal-norm attack usable at a radius: ``x⁽ᵏ⁺¹⁾ = clip((1 − α)(x⁽ᵏ⁾ + η δₖ) + α(x + η δ₀))``
    with ``δₖ``, ``δ₀`` the projections of the iterate and of ``x`` onto the nearest linearised
    decision boundary inside the box, ``α = min(‖δₖ‖/(‖δₖ‖ + ‖δ₀‖), α_max)``, and a backward step
    ``x + β(x⁽ᵏ⁺¹⁾ − x)`` after every adversarial iterate (see the module docstring).

    With ``eps = math.inf`` the result is each point's closest adversarial point found (``norms``
    are upper bounds on its distance to the boundary; ``success=False`` and ``x`` where none was
    found). With a finite ``eps`` a point succeeds when its closest adversarial point lies in the
    ball; otherwise that point projected onto the ball is returned (and succeeds only if it is
    still adversarial there). Untargeted by default (``C − 1`` backward passes per step); with
    ``target`` given it is targeted (one backward pass per step). Deterministic with
    ``restarts=1``; further restarts draw from the generator.

    Args:
        eps: the ball's radius (``math.inf``: pure minimal-norm mode).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``. steps: iterations per run.
        restarts: runs per point; all but the first from random points at ``min(best, ε)/2``.
        alpha_max: the largest bias ``α`` towards ``x`` (0.1). eta: the overshoot ``η ≥ 1``
            (1.05). beta: the backward step ``β ∈ (0, 1]`` (0.9).
        early_stop: stop a point at its first adversarial iterate inside the ball.

    Example:
        >>> result = FAB(norm="l2", steps=100)(model, x, y)           # minimal L2 perturbations
        >>> result.norms[result.success].median()
        >>> FAB(eps=8 / 255, norm="linf")(model, x, y).success.float().mean()
    """

    display_name: ClassVar[str | None] = "FAB"

    def _runs(self, run: Run) -> list[tuple[Tensor | None, str]]:
        if run.target is not None:
            return [(run.target, "target")]
        return [(None, "untargeted")]


@dataclass(frozen=True, kw_only=True)
class FABT(_FABConfig):
    """FAB-T, the multi-targeted FAB of AutoAttack (Croce & Hein, ICML 2020): FAB on the single
    difference ``z_t − z_y`` for each of the ``n_target_classes`` classes ``t`` with the highest
    clean logits (``y`` excluded), in turn, on the points not yet broken. An *untargeted* attack
    (any misclassification succeeds) at one backward pass per step instead of FAB's ``C − 1``.

    Same update and settings as :class:`FAB`; ``n_target_classes`` is capped at ``C − 1``. With a
    finite ``eps`` each target runs only on the points still outside the ball; with
    ``eps = math.inf`` every target runs on every point and the closest point over all is kept.

    Example:
        >>> result = FABT(eps=8 / 255, norm="linf", steps=100, n_target_classes=9)(model, x, y)
        >>> robust_acc = 1 - result.success.float().mean()
    """

    display_name: ClassVar[str | None] = "FAB-T"
    n_target_classes: int = 9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_target_classes", self.n_target_classes)

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        if target is not None:
            raise ValueError("FABT picks its own target classes (the top-k by clean logits) and counts "
                             "any misclassification; for a given target use FAB(...)(model, x, y, "
                             "target=target)")

    def _runs(self, run: Run) -> list[tuple[Tensor | None, str]]:
        logits = run.extras["clean_logits"]
        k = min(self.n_target_classes, logits.shape[1] - 1)
        order = logits.scatter(1, run.y[:, None], -math.inf).sort(dim=1, descending=True, stable=True).indices
        return [(order[:, j], "pair") for j in range(k)]


__all__ = ["FAB", "FABT", "project_hyperplane_box"]
