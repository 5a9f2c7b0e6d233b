"""NES gradient estimation with projected steps (Ilyas, Engstrom, Athalye & Lin, ICML 2018),
score-based.

A natural-evolution-strategies estimate of the objective's gradient from antithetic Gaussian
samples drives projected gradient steps. Takes an :class:`advlab.oracle.Oracle` answering scores;
see :mod:`advlab.attacks.score` for the conventions every score-based attack shares.

Example:
    >>> result = NES(eps=0.05, samples=50, budget=10000)(Oracle(model, output="scores"), x, y)
    >>> result.queries            # (B,) samples + 1 per step, plus the clean query
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advlab._checks import bounds_field, check_int, check_number, norm_field
from advlab.attacks._blackbox import budget_alias, score_margin
from advlab.attacks._score import hand_over, loss_field, rows, score_objective, start
from advlab.attacks.contract import Attack, Run

log = logging.getLogger(__name__)

__all__ = ["NES"]


@budget_alias
@dataclass(frozen=True, kw_only=True)
class NES(Attack):
    """NES gradient estimation with projected steps (Ilyas, Engstrom, Athalye & Lin, ICML 2018).

    "Black-box Adversarial Attacks with Limited Queries and Information", the query-limited
    setting. The gradient of the objective ``L`` (the C&W margin ``"cw"`` or the cross-entropy on
    the scores, to maximise) at the current point is estimated from ``samples`` queries with antithetic Gaussian
    sampling (``samples / 2`` pairs ``±u_i``, ``u_i ~ N(0, I)``), and drives a PGD step projected
    onto the threat model:

        g = 1 / (σ · samples) · Σ_i u_i (L(x_t + σu_i) − L(x_t − σu_i))
        x_{t+1} = Π_{ε-ball ∩ box}(x_t + step_size · dir(g)),  dir = sign (L∞) or g/‖g‖₂ (L2)

    The sample points ``x_t ± σu_i`` are clipped to the box (the model's domain). After each step
    the new point is queried once (its answer decides success and is the one reported), so a step
    costs ``samples + 1`` queries per point, after the clean query; a point stops when it is
    adversarial, after ``steps`` steps, or when fewer than ``samples + 1`` queries are left (then it
    is reported as budget-exhausted). The returned point is the first adversarial iterate, else
    the iterate with the highest margin. ``steps=None`` runs as many steps as the query budget
    allows. Paper defaults (ImageNet, L∞ ε = 0.05): σ = 0.001, 50 samples, learning rate 0.01,
    hence ``step_size = eps / 5`` by default. The paper's plain NES step is used (no momentum).

    Args:
        eps: radius of the ball (required).
        norm: ``"linf"`` or ``"l2"``.
        steps: most PGD steps, or ``None`` for as many as ``budget`` allows.
        step_size: PGD step length, ``None`` for ``eps / 5``.
        samples: queries per gradient estimate, even (antithetic pairs).
        sigma: standard deviation of the search distribution, in input units.
        budget: most queries per point, the clean query included (``queries=`` is its
            deprecated name).
        loss: ``"cw"`` (the C&W margin; ``"margin"`` is its deprecated name) or ``"ce"``.
        bounds: the input box.

    Example:
        >>> result = NES(eps=0.05, samples=50, budget=10000)(Oracle(model, output="scores"), x, y)
        >>> result.queries            # (B,) samples + 1 per step, plus the clean query
    """

    access: ClassVar[str] = "scores"
    kind: ClassVar[str] = "bounded"

    eps: float
    norm: str = "linf"
    steps: int | None = None
    step_size: float | None = None
    samples: int = 50
    sigma: float = 0.001
    budget: int = 10000
    loss: str = "cw"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        norm_field(self, ("linf", "l2"))
        check_number("eps", self.eps)
        if self.steps is not None:
            check_int("steps", self.steps)
        if self.step_size is not None:
            check_number("step_size", self.step_size)
        check_int("samples", self.samples, 2)
        if self.samples % 2:
            raise ValueError(f"samples must be even (antithetic pairs ±u), got {self.samples!r}")
        check_number("sigma", self.sigma)
        check_int("budget (queries per point, the clean query included)", self.budget)
        loss_field(self)
        bounds_field(self)

    def _core(self, run: Run) -> None:
        limit, best, scores = start(run, self.budget, self.loss)
        session, threat, gen, probs = run.session, run.threat, run.generator, run.probabilities
        x, y, target = run.x, run.y, run.target
        best.objective = score_margin(scores, y, target)   # NES returns the iterate with the best margin
        b = x.shape[0]
        dev = x.device
        half = self.samples // 2
        step_size = self.step_size if self.step_size is not None else self.eps / 5
        steps = self.steps if self.steps is not None else math.inf
        cost = self.samples + 1
        x_cur = x.clone()
        done = best.adv.clone()
        taken = torch.zeros(b, dtype=torch.long, device=dev)
        out_of_budget = torch.zeros(b, dtype=torch.bool, device=dev)
        while True:
            left = limit - session.queries.to(dev)
            can = left >= cost
            want = ~done & (taken < steps)
            out_of_budget |= want & ~can
            active = want & can
            if not bool(active.any()):
                break
            a = active.nonzero().squeeze(1)
            k = a.numel()
            xa, ya, ta = x_cur[a], y[a], rows(target, a)
            u = torch.randn((k, half, *x.shape[1:]), generator=gen, device=dev, dtype=x.dtype)
            if threat.mask is not None:  # search the free features only
                u = threat.restrict(u.view(k * half, *x.shape[1:])).view_as(u)
            probe = torch.cat([xa[:, None] + self.sigma * u, xa[:, None] - self.sigma * u], dim=1)
            probe = threat.clip(probe.reshape(k * self.samples, *x.shape[1:]))
            owner = a.repeat_interleave(self.samples)
            owner_row = torch.arange(k, device=dev).repeat_interleave(self.samples)
            ans = session(probe, owner)
            obj = score_objective(ans, ya[owner_row], rows(ta, owner_row), self.loss, probs)
            obj = obj.view(k, self.samples)
            diff = obj[:, :half] - obj[:, half:]                               # (A, samples/2)
            grad = (diff.view(k, half, *([1] * (x.dim() - 1))) * u).sum(dim=1)
            grad = grad / (self.sigma * self.samples)                           # (A, *)
            x_new = threat.project(xa + step_size * threat.ascent_direction(grad), x[a])
            ans_new = session(x_new, a)
            x_cur[a] = x_new
            taken[a] += 1
            adv_new = run.adversarial(ans_new, a)
            best.offer(a, x_new, ans_new, adv_new, score_margin(ans_new, ya, ta))
            done[a] |= adv_new
            log.debug("nes step %d: %d active, %d adversarial", int(taken.max()), k,
                      int(best.adv.sum()))
        hand_over(run, best, out_of_budget)
