"""The box-constrained L-BFGS attack of Szegedy et al. (ICLR 2014, "Intriguing properties of
neural networks"): the first adversarial examples.

For a constant ``c`` per point, L-BFGS-B (scipy; the box is a bound constraint, no change of
variables) minimises over ``x' ∈ [lo, hi]``

    ||x' - x||_2^2 - c · J(x')      J = CE(f(x'), y)  (untargeted: ascend the loss on y)
                                    J = -CE(f(x'), t) (targeted: descend the loss on t)

for at most ``steps`` iterations from ``x' = x``. Szegedy et al. search for the smallest
perturbation by a line search over ``c``; here a per-point binary search as in C&W: ×10 while no
round has succeeded, then bisection between the largest failing and the smallest succeeding
``c``. The smallest-L2 point that is (clearly) adversarial over all rounds is returned; points
never broken return ``x`` with ``success=False``. Every function evaluation is one forward and
one backward pass of the whole batch (the objective is a sum of per-point terms, so one L-BFGS-B
run optimises all points at once; its curvature pairs mix points, which only changes the path).

Example:
    >>> result = LBFGS(steps=50, binary_search_steps=6)(model, x, y, target=t)
    >>> result.norms[result.success].median()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from advlab._checks import bounds_field, check_int, check_number, input_grad
from advlab.attacks.contract import Attack, Run
from advlab.attacks.minimal import _clearly_adversarial, _store
from advlab.losses import get_loss, objective
from advlab.threat import ThreatModel


@dataclass(frozen=True, kw_only=True)
class LBFGS(Attack):
    """Szegedy et al. (2014)'s box-constrained L-BFGS attack, L2, untargeted or targeted (see the
    module docstring for the objective and the search over ``c``).

    Args:
        c_init: the first weight of the loss term.
        binary_search_steps: rounds of the search over ``c``.
        steps: L-BFGS-B iterations per round.
        bounds: the input box (L-BFGS-B's bound constraint).
    """

    kind: ClassVar[str] = "minimal"
    norm: ClassVar[str] = "l2"

    c_init: float = 1e-2
    binary_search_steps: int = 8
    steps: int = 50
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        check_number("c_init", self.c_init)
        check_int("binary_search_steps", self.binary_search_steps)
        check_int("steps", self.steps)
        bounds_field(self)

    def _core(self, run: Run) -> None:
        idx = run.todo
        x, y = run.x[idx], run.y[idx]
        target = run.target[idx] if run.target is not None else None
        n = x.shape[0]
        c = torch.full((n,), float(self.c_init), dtype=torch.float64, device=x.device)
        c_lo, c_hi = torch.zeros_like(c), torch.full_like(c, math.inf)
        best_l2 = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        best = x.clone()
        evals = 0
        for _ in range(self.binary_search_steps):
            x_new, spent = self._minimise(run.model, x, y, target, c, run.threat)
            evals += spent
            with torch.no_grad():
                logits = run.model(x_new)
            adv, _ = _clearly_adversarial(logits, y, target)
            l2 = (x_new - x).flatten(1).double().norm(dim=1)
            better = adv & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best[better] = x_new[better]
            c_hi = torch.where(adv, torch.minimum(c_hi, c), c_hi)
            c_lo = torch.where(adv, c_lo, torch.maximum(c_lo, c))
            c = torch.where(torch.isfinite(c_hi), (c_lo + c_hi) / 2, c * 10)
        run.record.charge(idx, grads=evals, forwards=evals + self.binary_search_steps)
        _store(run, idx, best)

    def _minimise(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None,
                  c: Tensor, threat: ThreatModel) -> tuple[Tensor, int]:
        """One L-BFGS-B run on all points at once; the final iterate and the evaluations spent.
        Per-feature bounds are L-BFGS-B's own per-coordinate bounds, and a frozen feature (the
        threat model's ``mask``) is a coordinate whose bounds are ``[x_i, x_i]``."""
        from scipy.optimize import Bounds, minimize

        lo, hi = threat.box(x)
        if isinstance(lo, Tensor) or threat.mask is not None:
            xd = x.detach().double()
            lo_t = torch.broadcast_to(torch.as_tensor(lo, dtype=torch.float64, device=x.device), x.shape)
            hi_t = torch.broadcast_to(torch.as_tensor(hi, dtype=torch.float64, device=x.device), x.shape)
            frozen = ~threat.free(x).expand_as(x) if threat.mask is not None else None
            if frozen is not None:
                lo_t, hi_t = torch.where(frozen, xd, lo_t), torch.where(frozen, xd, hi_t)
            lo, hi = lo_t.cpu().numpy().ravel(), hi_t.cpu().numpy().ravel()
        loss = get_loss("ce")
        shape, dtype = x.shape, x.dtype
        x0 = x.detach().double().cpu().numpy().ravel()
        weight = c.to(device=x.device)
        count = [0]

        def f(v: np.ndarray) -> tuple[float, np.ndarray]:
            count[0] += 1
            xv = torch.from_numpy(v).to(device=x.device).view(shape).to(dtype).requires_grad_(True)
            obj, _ = objective(model, xv, y, target, loss)
            if count[0] == 1:   # a loss with no gradient in x (a masked model): warn, as every attack does
                input_grad(obj.sum(), xv, retain_graph=True)
            dist = (xv - x).flatten(1).double().pow(2).sum(dim=1)
            total = (dist - weight * obj.double()).sum()
            g, = torch.autograd.grad(total, xv)
            return float(total.detach()), g.detach().double().cpu().numpy().ravel()

        res = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=Bounds(lo, hi),
                       options={"maxiter": self.steps})
        out = torch.from_numpy(np.clip(res.x, lo, hi)).to(device=x.device).view(shape).to(dtype)
        return threat.keep_frozen(threat.clip(out), x), count[0]
