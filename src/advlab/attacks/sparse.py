"""Sparse (L0) attacks: change few input features, by as much as the box allows.

* :class:`JSMA`, the Jacobian-based saliency map attack (Papernot, McDaniel, Jha, Fredrikson,
  Celik & Swami, EuroS&P 2016, Algorithm 3, the pair version). With ``α_i = ∂F_t/∂x_i`` (the
  target's output) and ``β_i = Σ_{j≠t} ∂F_j/∂x_i`` (every other output), each step picks the
  pair of features still in the search domain

      (p, q) = argmax  (α_p + α_q) · |β_p + β_q|   over  α_p + α_q > 0,  β_p + β_q < 0

  (for ``theta < 0``, the features are decreased and the signs flip), moves both by ``theta``
  (clipped to the box) and drops a feature from the domain once it reaches the bound. A point
  stops when it is adversarial or when its budget of features has changed. ``F`` is the
  softmax, as in the paper (``saliency="probabilities"``): its outputs sum to 1, so ``β = −α``
  and the pair is the two features of largest ``α``, found in O(d) from one backward pass.
  ``saliency="logits"`` (``F = Z``, "JSMA-Z" of Carlini & Wagner 2017) searches all pairs
  (O(d²) per point and step, two backward passes); on the Fashion-MNIST CNN of bench_jsma.py it
  was both weaker (42% vs 62% targeted at 5% of the features) and 30× slower.
* :class:`PGDL0`, L0 projected gradient descent (Croce & Hein, ICCV 2019, "Sparse and
  imperceivable adversarial attacks"): ``x_{t+1} = Π_{‖·‖₀≤k ∩ box}(x_t + α · g / mean|g|)``, the
  shared gradient loop of :mod:`advlab.attacks._loop` under the L0 threat model
  (:func:`advlab.threat.project_l0_box` keeps the ``k`` coordinates, or pixels, that moved most).

Both work in the threat model ``ThreatModel(norm="l0", eps=k)``: ``eps`` is a whole number of
changed features (``pixels=True``: of changed pixels, all channels of a position counting once).

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y`` and ``target`` ``(B,)`` int64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from advlab._checks import bounds_field, check_choice, check_int, check_number, input_grad
from advlab.attacks._loop import Schedule, run_schedule
from advlab.attacks.contract import Attack, Run, feature_fields
from advlab.losses import LossFn, get_loss
from advlab.threat import ThreatModel

#: rows of the (d × d) pair-score matrix built at once: (chunk, d, d) floats
_PAIR_BUDGET = 2 ** 24


def _check_budget(name: str, value: object) -> float:
    """A whole number of features >= 0 (a float such as 10.0 is accepted), or ``math.inf``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a whole number of features, got {value!r}")
    v = float(value)
    if math.isnan(v) or v < 0 or (math.isfinite(v) and not v.is_integer()):
        raise ValueError(f"{name} counts changed features: a whole number >= 0 (or math.inf), "
                         f"got {value!r}")
    return v


@dataclass(frozen=True, kw_only=True)
class JSMA(Attack):
    """The Jacobian-based saliency map attack (Papernot et al. 2016), targeted, L0.

    Args:
        eps: the most features the attack may change (a whole number; ``None``: ``gamma · d``).
        gamma: the most features the attack may change as a fraction of ``d`` (the paper's
            ``Υ``); the budget is ``min(eps, floor(gamma · d))``.
        theta: how much a chosen feature moves per step (the paper's ``θ``; ``+1`` saturates it
            at the upper bound of [0, 1] in one step, a negative value decreases features).
        saliency: ``"probabilities"`` (the paper's softmax outputs) or ``"logits"`` (see the
            module docstring).
        steps: the most iterations (``None``: enough for every feature of the budget to reach
            the bound: ``ceil(budget / 2) · ceil((hi − lo) / |theta|)``).
        bounds: the input box.

    Untargeted calls aim at the class with the highest clean logit besides ``y`` and stop at any
    misclassification. Each iteration costs one forward and one backward pass (``"logits"``: two
    backward passes, the target's gradient and the other classes' summed one, counted as 2).

    Example:
        >>> result = JSMA(gamma=0.1)(model, x, y, target=t)
        >>> result.norms          # features changed per point, at most 10% of them
    """

    norm: ClassVar[str] = "l0"
    display_name: ClassVar[str] = "JSMA"

    eps: float | None = None
    gamma: float = 1.0
    theta: float = 1.0
    saliency: str = "probabilities"
    steps: int | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        check_choice("saliency", self.saliency, ("probabilities", "logits"))
        if self.eps is not None:
            object.__setattr__(self, "eps", _check_budget("eps", self.eps))
        check_number("gamma (the largest fraction of features changed)", self.gamma, high=1.0)
        if isinstance(self.theta, bool) or not isinstance(self.theta, (int, float)) \
                or not math.isfinite(self.theta) or self.theta == 0:
            raise ValueError(f"theta must be a finite nonzero number (the change per step), got "
                             f"{self.theta!r}")
        if self.steps is not None:
            check_int("steps", self.steps)
        bounds_field(self)

    def threat_model(self, *, targeted: bool = False) -> ThreatModel:
        eps = math.inf if self.eps is None else self.eps
        return ThreatModel(norm="l0", eps=eps, bounds=self.bounds, targeted=targeted,
                           **feature_fields(self))

    def budget(self, d: int) -> int:
        """The most features changed on an input of ``d`` features."""
        k = math.floor(self.gamma * d + 1e-9)
        return int(min(k, self.eps if self.eps is not None else k))

    def _core(self, run: Run) -> None:
        idx = run.todo
        x = run.x[idx]
        b = x.shape[0]
        d = x[0].numel()
        threat = run.threat
        lo, hi = threat.box(x)
        if isinstance(lo, Tensor):  # per-feature bounds against the flat (b, d) rows
            lo, hi = lo.reshape(1, d), hi.reshape(1, d)
            span = float((hi - lo).max())
        else:
            span = hi - lo
        budget = self.budget(d)
        steps = self.steps if self.steps is not None else \
            math.ceil(budget / 2) * math.ceil(span / abs(self.theta) - 1e-9)
        if run.target is not None:
            aim = run.target[idx]
        else:  # the most likely wrong class at the clean point
            clean = run.extras["clean_logits"][idx].detach().clone()
            clean.scatter_(1, run.y[idx][:, None], -math.inf)
            aim = clean.argmax(dim=1)
        up = self.theta > 0
        xf = x.reshape(b, d).clone()
        x0 = xf.clone()
        domain = (xf < hi) if up else (xf > lo)                      # (b, d) features still movable
        if threat.mask is not None:                                   # frozen features never are
            domain &= threat.free(x).reshape(1, d)
        active = torch.arange(b, device=x.device)
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        grads = torch.zeros(b, dtype=torch.long, device=x.device)
        forwards = torch.zeros(b, dtype=torch.long, device=x.device)
        last_logits: Tensor | None = None
        for it in range(steps + 1):
            leaf = xf[active].view(-1, *x.shape[1:]).requires_grad_(True)
            logits = run.model(leaf)
            forwards[active] += 1
            if last_logits is None:
                last_logits = torch.zeros(b, logits.shape[1], dtype=logits.dtype, device=x.device)
            last_logits[active] = logits.detach()
            hit = run.adversarial(logits.detach(), idx[active])
            done[active] = hit
            changed = (xf[active] != x0[active]).sum(dim=1)
            left = budget - changed
            go = ~hit & (left > 0) & (it < steps) & domain[active].any(dim=1)
            if not bool(go.any()):
                break
            t = aim[active]
            rows = go.nonzero().squeeze(1)
            if self.saliency == "probabilities":
                # F = softmax: Σ_j ∂F_j/∂x = 0, so β = −α and the pair search is the top two α
                # (ranked by ∂ log F_t, the same order as ∂F_t = F_t · ∂ log F_t)
                log_p = torch.log_softmax(logits, dim=1).gather(1, t[:, None]).squeeze(1)
                alpha = input_grad(log_p.sum(), leaf).view(-1, d)[rows]
                grads[active] += 1
                pick, found = self._top_two(alpha, domain[active[rows]], left[rows], up)
            else:
                z_t = logits.gather(1, t[:, None]).squeeze(1)
                g_t = input_grad(z_t.sum(), leaf, retain_graph=True).view(-1, d)
                g_all = input_grad(logits.sum(), leaf).view(-1, d)
                grads[active] += 2
                alpha, beta = g_t[rows], (g_all - g_t)[rows]
                pick, found = self._pairs(alpha, beta, domain[active[rows]],
                                          (xf[active[rows]] != x0[active[rows]]), left[rows], up)
            sel, pick = active[rows][found], pick[found]
            if sel.numel() == 0:
                break
            # (a pair (p, p) moves one feature: the last of the budget, or of the domain)
            moved = xf[sel].scatter(1, pick, xf[sel].gather(1, pick) + float(self.theta))
            xf[sel] = torch.clamp(moved, min=lo, max=hi)
            at_bound = (xf[sel] >= hi) if up else (xf[sel] <= lo)
            domain[sel] &= ~at_bound
            active = sel
        run.record.charge(idx, grads=grads, forwards=forwards)
        assert last_logits is not None
        run.record.record(idx, xf.view_as(x), last_logits, done)

    @staticmethod
    def _top_two(alpha: Tensor, domain: Tensor, left: Tensor, up: bool) -> tuple[Tensor, Tensor]:
        """The saliency map on probabilities: the two domain features of largest ``α`` (``−α``
        when decreasing); one feature, twice, where only one more may change or only one is
        left. ``(k, 2)`` indices and ``(k,)`` whether the domain had any."""
        score = alpha if up else -alpha
        score = torch.where(domain, score, torch.full_like(score, -math.inf))
        if score.shape[1] < 2:
            top = score.topk(1, dim=1).indices.repeat(1, 2)
        else:
            top = score.topk(2, dim=1).indices
        one = (left < 2) | (domain.sum(dim=1) < 2)
        top[:, 1] = torch.where(one, top[:, 0], top[:, 1])
        return top, torch.isfinite(score.gather(1, top[:, :1]).squeeze(1))

    @staticmethod
    def _pairs(alpha: Tensor, beta: Tensor, domain: Tensor, changed: Tensor, left: Tensor,
               up: bool) -> tuple[Tensor, Tensor]:
        """``(k, 2)`` feature indices and ``(k,)`` whether a row has any: each row's best pair in
        its domain (see the class docstring) that changes at most ``left`` new features (a pair
        ``(p, p)``, one feature, where only one more may change or only one is left); where no pair
        meets the paper's sign conditions, the pair that moves the target's logit most relative to
        the others'."""
        k, d = alpha.shape
        sign = 1.0 if up else -1.0
        out = torch.empty(k, 2, dtype=torch.long, device=alpha.device)
        found = torch.zeros(k, dtype=torch.bool, device=alpha.device)
        chunk = max(1, _PAIR_BUDGET // max(1, d * d))
        eye = torch.eye(d, dtype=torch.bool, device=alpha.device)
        for s in range(0, k, chunk):
            a = sign * alpha[s:s + chunk]
            bb = sign * beta[s:s + chunk]
            A = a[:, :, None] + a[:, None, :]                           # (c, d, d)
            B = bb[:, :, None] + bb[:, None, :]
            new = (~changed[s:s + chunk]).to(torch.int64)
            allowed = (domain[s:s + chunk, :, None] & domain[s:s + chunk, None, :]) & ~eye
            allowed &= (new[:, :, None] + new[:, None, :]) <= left[s:s + chunk, None, None]
            dom = domain[s:s + chunk]
            single = (dom.sum(dim=1) == 1) | (left[s:s + chunk] == 1)  # one more feature: (p, p)
            if bool(single.any()):
                allowed[single] |= eye & dom[single][:, :, None]
            valid = allowed & (A > 0) & (B < 0)
            paper = torch.where(valid, A * -B, torch.full_like(A, -math.inf)).flatten(1)
            fallback = torch.where(allowed, A - B, torch.full_like(A, -math.inf)).flatten(1)
            best = paper.argmax(dim=1)
            none = ~torch.isfinite(paper.gather(1, best[:, None]).squeeze(1))
            best = torch.where(none, fallback.argmax(dim=1), best)
            found[s:s + chunk] = torch.isfinite(fallback.gather(1, best[:, None]).squeeze(1))
            out[s:s + chunk, 0] = best // d
            out[s:s + chunk, 1] = best % d
        return out, found


@dataclass(frozen=True, kw_only=True)
class PGDL0(Attack):
    """L0 projected gradient descent (Croce & Hein, ICCV 2019): at most ``eps`` features change.

    From a random sparse start (``random_start``: a uniform point of the box, of which the ``eps``
    coordinates that moved most are kept), ``steps`` times:
    ``x_{t+1} = Π_{‖x'−x‖₀≤ε ∩ [lo, hi]}(x_t + α · g_t / mean|g_t|)``, ``g_t = ∇_x J(x_t, y)``,
    with the Euclidean projection onto the L0 ball ∩ box (:func:`advlab.threat.project_l0_box`).
    ``restarts`` re-runs from new random starts on the points still robust. ``pixels=True``
    counts a pixel of a ``(B, C, H, W)`` input once over its channels.

    Args:
        eps: the most changed features (or pixels), a whole number.
        step_size: ``α`` in input units (the average coordinate's move per step); default
            ``(hi − lo) / 2``. No one value is best: success at 0.1/0.25/0.5/1 of the range was
            74/77/59/46% (Fashion-MNIST CNN, targeted, 39 of 784 features) but 57/69/96/98%
            (digits CNN, untargeted, 4 of 64); half the range was never far from the best.

    Example:
        >>> result = PGDL0(eps=10, steps=50, restarts=3)(model, x, y)
        >>> result.norms          # changed features per point, <= 10
    """

    clean_pass: ClassVar[bool] = False
    norm: ClassVar[str] = "l0"
    display_name: ClassVar[str] = "PGD-L0"

    eps: float
    steps: int = 50
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    pixels: bool = False
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories
    early_stop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", _check_budget("eps", self.eps))
        if not math.isfinite(self.eps):
            raise ValueError("PGDL0 needs a finite eps (a number of features)")
        ThreatModel(norm="l0", eps=self.eps, bounds=self.bounds, pixels=self.pixels)
        bounds_field(self)
        get_loss(self.loss)
        check_int("steps", self.steps)
        check_int("restarts", self.restarts)
        if self.step_size is not None:
            check_number("step_size (a number > 0, or None for the default)", self.step_size)
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True: restarts from the same point "
                             "repeat the same deterministic run")

    def threat_model(self, *, targeted: bool = False) -> ThreatModel:
        return ThreatModel(norm="l0", eps=self.eps, bounds=self.bounds, targeted=targeted,
                           pixels=self.pixels, **feature_fields(self))

    def schedule(self) -> Schedule:
        # per-feature bounds: half the mean width
        step = self.step_size if self.step_size is not None else self.threat_model().width / 2
        return Schedule(steps=self.steps, step_size=step, early_stop=self.early_stop,
                        random_start=self.random_start, restarts=self.restarts)

    def _core(self, run: Run) -> None:
        run_schedule(run, self.schedule(), get_loss(self.loss))


__all__ = ["JSMA", "PGDL0"]
