"""The smallest label-changing perturbation in latent space: ``min ||r||`` with
``f(g(z + r)) != f(g(z))``, measured in the latent metric or in the input metric (``r_in``); see
:func:`latent_search`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from advlab._checks import check_choice, check_int, check_model, check_number
from advlab.evaluation.theory.generator import Generator, _clearly_flipped, _flat_norm, _frozen, _module_of


@dataclass(frozen=True, kw_only=True)
class LatentSearch:
    """How :func:`latent_search` looks for the smallest label-changing latent perturbation.

    Attributes:
        steps: DeepFool iterations in latent space (phase 1).
        candidates: classes (besides the current one) linearised per DeepFool step, those with
            the highest logits; ``None`` for all.
        targets: after the untargeted search, restart the three phases aimed at each of the
            ``targets`` classes with the highest clean logits (the boundary has several local
            minima of the distance; each restart can only lower the result); 0 for none.
        overshoot: DeepFool's overshoot (removed again by the bisection).
        bisection_steps: halvings of the scale along each ray (phase 2 and after each refinement):
            the result is within ``2^-bisection_steps`` (relative) of the ray's first label change.
        refine_steps: boundary refinements (phase 3): linearise at the current boundary point and
            move to the cheapest point of that tangent plane, keep it if a bisection along its ray
            finds a smaller label-changing perturbation.
        refine_reach: the refinement's ray is searched on ``[0, refine_reach]`` times the
            tangent-plane point.
    """

    steps: int = 50
    candidates: int | None = 4
    targets: int = 3
    overshoot: float = 0.02
    bisection_steps: int = 12
    refine_steps: int = 10
    refine_reach: float = 1.25

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        if self.candidates is not None:
            check_int("candidates", self.candidates)
        check_int("targets", self.targets, 0)
        check_number("overshoot", self.overshoot, low_open=False)
        check_int("bisection_steps", self.bisection_steps)
        check_int("refine_steps", self.refine_steps, 0)
        check_number("refine_reach", self.refine_reach, low=1.0, low_open=False, allow_inf=True)


@dataclass(frozen=True)
class LatentSearchResult:
    """Per point: the latent perturbation found ``r`` ``(B, d)`` (zeros where none), whether it
    changes the label ``found`` ``(B,)``, and its ``cost`` ``(B,)`` (``inf`` where not found):
    ``||r||_2`` for ``metric="latent"``, ``||g(z + r) - g(z)||_2`` for ``metric="input"``."""

    r: Tensor
    found: Tensor
    cost: Tensor
    metric: str
    forwards: int


class _Problem:
    """``f ∘ g`` around fixed codes ``z`` with fixed labels; costs of latent perturbations."""

    def __init__(self, f: nn.Module, g: Generator, z: Tensor, label: Tensor, metric: str) -> None:
        self.f, self.g, self.z, self.label, self.metric = f, g, z.detach(), label, metric
        with torch.no_grad():
            self.x = g(self.z)
        self.forwards = 0

    def flipped(self, idx: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Clearly flipped ``(b,)`` and the images ``g(z + r)`` for the points ``idx``."""
        with torch.no_grad():
            xs = self.g(self.z[idx] + r)
            logits = self.f(xs)
        self.forwards += 1
        return _clearly_flipped(logits, self.label[idx]), xs

    def cost(self, idx: Tensor, r: Tensor, xs: Tensor | None = None) -> Tensor:
        if self.metric == "latent":
            return r.norm(dim=1)
        if xs is None:
            with torch.no_grad():
                xs = self.g(self.z[idx] + r)
        return _flat_norm(xs - self.x[idx])

    def jacobian(self, zs: Tensor) -> Tensor:
        """``J_g`` at ``zs``: ``(b, D, d)``, one jvp per latent direction."""
        d = zs.shape[1]
        cols = []
        for i in range(d):
            e = torch.zeros_like(zs)
            e[:, i] = 1.0
            _, jv = torch.func.jvp(self.g, (zs.detach(),), (e,))
            cols.append(jv.detach().reshape(zs.shape[0], -1))
        return torch.stack(cols, dim=2)

    def margins(self, idx: Tensor, r: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits ``(b, K)``, margins ``z_k - z_label`` ``(b, k)`` and their latent gradients
        ``(b, k, d)`` at ``z + r`` for the classes ``classes`` ``(b, k)``."""
        zs = (self.z[idx] + r).detach().requires_grad_(True)
        logits = self.f(self.g(zs))
        self.forwards += 1
        lab = self.label[idx]
        m = logits.gather(1, classes) - logits.gather(1, lab[:, None])
        grads = []
        for j in range(classes.shape[1]):
            (gj,) = torch.autograd.grad(m[:, j].sum(), zs, retain_graph=j < classes.shape[1] - 1)
            grads.append(gj)
        return logits.detach(), m.detach(), torch.stack(grads, dim=1)


def _metric_solve(M: Tensor | None, a: Tensor) -> Tensor:
    """``M^{-1} a`` per sample, ``a`` ``(b, k, d)``; ``M`` ``(b, d, d)`` or ``None`` for the identity."""
    if M is None:
        return a
    return torch.linalg.solve(M[:, None], a.unsqueeze(-1)).squeeze(-1)


def _gram(J: Tensor) -> Tensor:
    M = J.transpose(1, 2) @ J  # (b, d, d)
    ridge = 1e-6 * M.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
    return M + ridge[:, None, None] * torch.eye(M.shape[1], dtype=M.dtype, device=M.device)


def _bisect_rays(prob: _Problem, idx: Tensor, ray: Tensor, hi: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Smallest ``t`` in ``(0, hi]`` with a label change at ``t · ray`` (``hi`` must change it);
    returns ``t_hi`` ``(b,)`` (changes the label) and ``t_lo`` (does not, unless the ray re-enters)."""
    lo = torch.zeros_like(hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        flip, _ = prob.flipped(idx, mid[:, None] * ray)
        hi = torch.where(flip, mid, hi)
        lo = torch.where(flip, lo, mid)
    return hi, lo


def latent_search(f: nn.Module, g: Generator, z: Tensor, *, label: Tensor | None = None,
                  metric: Literal["latent", "input"] = "latent", config: LatentSearch | None = None,
                  ) -> LatentSearchResult:
    """The smallest latent perturbation ``r`` found with ``f(g(z + r)) != f(g(z))``, per point.

    ``metric="latent"`` minimises ``||r||_2`` (the paper's robustness in Z-space);
    ``metric="input"`` minimises ``||g(z + r) - g(z)||_2``, the in-distribution robustness ``r_in``
    of eq. (2). Three phases, all batched:

    1. DeepFool (Moosavi-Dezfooli et al. 2016) in latent space: linearise the margins
       ``m_k = z_k - z_label`` of ``f ∘ g`` and step to the closest linearised boundary, closest in
       the metric: ``Δ = -m_l · M^{-1} ∇m_l / (∇m_l^T M^{-1} ∇m_l)``, ``M = I`` (latent) or
       ``J_g^T J_g`` at the current point (input); until the label changes or ``steps`` run out.
    2. Bisection on the scale ``t`` of the perturbation found: the smallest ``t · r`` (within
       ``2^-bisection_steps``) that still changes the label, which removes DeepFool's overshoot.
    3. ``refine_steps`` boundary refinements: at the current point ``r_b`` linearise the margin of
       the new class, ``m(r) ≈ m_b + n·(r - r_b)``, and the cost (``||r||``, or
       ``||g(z + r_b) - x + J (r - r_b)||``), move to the cheapest point of ``m = 0`` and bisect along
       its ray on ``[0, refine_reach]``; the new point is kept only if it changes the label and costs
       less.

    Every returned ``r`` changes the label by a clear margin (``found``); its cost is therefore an
    upper bound on the true minimum, and along its own ray it is minimal to the bisection's precision.

    Args:
        f: classifier on ``g``'s outputs, returning logits.
        g: generator ``(B, d) -> (B, ...)``.
        z: latent codes ``(B, d)``.
        label: the classes to move away from; default ``f(g(z)).argmax(1)``.
    """
    config = config or LatentSearch()
    check_choice("metric", metric, ("latent", "input"))
    check_model(f)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"z must be a float tensor of latent codes (B, d), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    with _frozen(f, _module_of(g)):
        if label is None:
            with torch.no_grad():
                label = f(g(z)).argmax(dim=1)
        prob = _Problem(f, g, z, label, metric)
        return _search(prob, config)


def _search(prob: _Problem, cfg: LatentSearch) -> LatentSearchResult:
    """The untargeted search, then one targeted search per class among the ``cfg.targets`` with the
    highest clean logits; per point, the cheapest label-changing perturbation of all runs."""
    best = _search_once(prob, cfg, None)
    if cfg.targets:
        with torch.no_grad():
            logits = prob.f(prob.x)
        prob.forwards += 1
        k = min(cfg.targets, logits.shape[1] - 1)
        ranked = logits.scatter(1, prob.label[:, None], -math.inf).topk(k, dim=1).indices  # (B, k)
        for j in range(k):
            run = _search_once(prob, cfg, ranked[:, j])
            better = run.cost < best.cost
            best = LatentSearchResult(r=torch.where(better[:, None], run.r, best.r),
                                      found=best.found | run.found,
                                      cost=torch.where(better, run.cost, best.cost), metric=best.metric,
                                      forwards=prob.forwards)
    return best


def _search_once(prob: _Problem, cfg: LatentSearch, target: Tensor | None) -> LatentSearchResult:
    """One run of the three phases of :func:`latent_search` (towards ``target`` when given)."""
    z = prob.z
    with torch.no_grad():
        num_classes = prob.f(prob.x[:1]).shape[1]
    k = num_classes - 1 if cfg.candidates is None else min(cfg.candidates, num_classes - 1)
    if target is not None:
        k = 1
    found, r_best = _deepfool(prob, cfg, target, k)
    cost = torch.full((z.shape[0],), math.inf, device=z.device)
    idx = found.nonzero().squeeze(1)
    if idx.numel():  # phase 2: bisection along each ray
        t_hi, _ = _bisect_rays(prob, idx, r_best[idx], torch.ones(idx.numel(), device=z.device),
                               cfg.bisection_steps)
        r_best[idx] = t_hi[:, None] * r_best[idx]
        cost[idx] = prob.cost(idx, r_best[idx])
    for _ in range(cfg.refine_steps if idx.numel() else 0):
        _refine(prob, cfg, idx, r_best, cost)
    return LatentSearchResult(r=r_best.detach(), found=found, cost=cost, metric=prob.metric,
                              forwards=prob.forwards)


def _deepfool(prob: _Problem, cfg: LatentSearch, target: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
    """Phase 1, DeepFool in latent space over ``k`` candidate classes: ``found`` ``(B,)`` and the
    first label-changing perturbation ``r`` ``(B, d)`` (zeros where none was found)."""
    z = prob.z
    b = z.shape[0]
    found = torch.zeros(b, dtype=torch.bool, device=z.device)
    r_best = torch.zeros_like(z)
    r_total = torch.zeros_like(z)
    active = torch.arange(b, device=z.device)
    for _ in range(cfg.steps):
        r_now = (1 + cfg.overshoot) * r_total[active]
        with torch.no_grad():
            logits = prob.f(prob.g(z[active] + r_now))
        prob.forwards += 1
        hit = _clearly_flipped(logits, prob.label[active])
        if bool(hit.any()):
            r_best[active[hit]] = r_now[hit]
            found[active[hit]] = True
        active, logits = active[~hit], logits[~hit]
        if active.numel() == 0:
            break
        lab = prob.label[active]
        if target is None:
            classes = logits.scatter(1, lab[:, None], -math.inf).topk(k, dim=1).indices  # (b', k)
        else:  # towards one class; any label change still counts as found
            classes = target[active][:, None]
        _, m, a = prob.margins(active, r_total[active] * (1 + cfg.overshoot), classes)
        M = _gram(prob.jacobian(z[active] + r_total[active] * (1 + cfg.overshoot))) \
            if prob.metric == "input" else None
        Ma = _metric_solve(M, a)  # (b', k, d)
        quad = (a * Ma).sum(dim=2).clamp_min(1e-30)  # a^T M^-1 a
        dist = m.abs() / quad.sqrt()
        best = dist.argmin(dim=1)
        rows = torch.arange(active.numel(), device=z.device)
        step = (m[rows, best].abs() / quad[rows, best] + 1e-4 / quad[rows, best].sqrt())[:, None] \
            * Ma[rows, best]
        r_total[active] = r_total[active] + step
    return found, r_best


def _refine(prob: _Problem, cfg: LatentSearch, idx: Tensor, r_best: Tensor, cost: Tensor) -> None:
    """Phase 3, one boundary refinement of the points ``idx``: linearise at the current boundary
    point, move to the cheapest point of the tangent plane, bisect along its ray, and keep the
    result (in ``r_best`` and ``cost``, in place) where it changes the label and costs less."""
    z = prob.z
    rb = r_best[idx]
    with torch.no_grad():
        new_class = prob.f(prob.g(z[idx] + rb)).argmax(dim=1)
    _, m, n = prob.margins(idx, rb, new_class[:, None])
    m, n = m[:, 0], n[:, 0]  # (b,), (b, d): margin of the new class, > 0 here
    if prob.metric == "latent":
        lam = (m - (n * rb).sum(dim=1)) / (n * n).sum(dim=1).clamp_min(1e-30)
        cand = -lam[:, None] * n
    else:
        J = prob.jacobian(z[idx] + rb)  # (b, D, d)
        M = _gram(J)
        with torch.no_grad():
            c = (prob.g(z[idx] + rb) - prob.x[idx]).reshape(idx.numel(), -1)  # (b, D)
        Jc = (J.transpose(1, 2) @ c[:, :, None]).squeeze(2)  # (b, d)
        Mn = _metric_solve(M, n[:, None])[:, 0]
        MJc = _metric_solve(M, Jc[:, None])[:, 0]
        lam = (m - (n * MJc).sum(dim=1)) / (n * Mn).sum(dim=1).clamp_min(1e-30)
        cand = rb - MJc - lam[:, None] * Mn
    reach = torch.full((idx.numel(),), float(cfg.refine_reach), device=z.device)
    ok, _ = prob.flipped(idx, reach[:, None] * cand)
    ok &= torch.isfinite(cand).all(dim=1)
    if not bool(ok.any()):
        return
    sub = idx[ok]
    t_hi, _ = _bisect_rays(prob, sub, cand[ok], reach[ok], cfg.bisection_steps)
    new_r = t_hi[:, None] * cand[ok]
    new_cost = prob.cost(sub, new_r)
    better = new_cost < cost[sub]
    r_best[sub[better]] = new_r[better]
    cost[sub[better]] = new_cost[better]
