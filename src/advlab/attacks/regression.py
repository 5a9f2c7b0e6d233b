"""Attacks on regression models: push a regressor's output up, down, or by a chosen Δ within an
ε-ball ("input optimisation toward a goal").

The setting of the car-blueprint example: a model ``f`` predicts how good a design is (how fast a
car, how far a disease progresses); we optimise the design ``x`` until ``f`` believes it is good.
Under a threat model ``B_ε(x) ∩ [lo, hi]^d`` this is projected gradient ascent on the output
itself (Madry et al., ICLR 2018, with the regressor's output as the objective instead of a
classification loss):

    x_{t+1} = Π_{B_ε(x) ∩ [lo, hi]}(x_t + α_t · dir_p(∇_x J(x_t)))

with ``J = f(x')`` (``goal="up"``), ``J = −f(x')`` (``"down"``) or ``J = −|f(x') − f(x) − Δ|``
(``"delta"``), and ``dir_p`` the steepest-ascent direction of the norm (``sign`` for L∞,
``g/||g||_2`` for L2, sparse L1 descent for L1; :meth:`advlab.threat.ThreatModel.ascent_direction`).

The lesson the example draws: the optimum found is an adversarial example of the regressor, not a
better input. The model's belief ``f(x')`` rises far faster than along random directions of the
same norm, but a judge trained independently on the same data (another model, a k-NN) credits
only part of that gain; ``bench/REGRESSION.md`` measures how much.

Not the classification lifecycle (:func:`advlab.attacks.contract.execute`): there are no labels,
no success criterion and no logits, so the attack runs its own short loop over the same pieces
(the threat model's projection, direction and random start; the input checks of
:mod:`advlab._checks`; the eval-mode and autograd guards) and returns a
:class:`RegressionResult`, not an :class:`~advlab.attacks.AttackResult`.

Example:
    >>> attack = RegressionPGD(eps=0.05, norm="linf", goal="up", steps=20)
    >>> result = attack(regressor, x)
    >>> result.gain.mean(), (noise_gain(regressor, x, result).abs().mean())
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from advlab._checks import (bounds_field, check_batch, check_choice, check_int, check_model, check_number,
                            check_placement, eval_mode, input_grad, norm_field, warn)
from advlab.attacks._base import config_repr
from advlab.attacks.contract import _check_differentiable, needs_autograd
from advlab.threat import NORMS, Norm, ThreatModel, per_sample, random_direction

__all__ = ["GOALS", "RegressionPGD", "RegressionResult", "noise_gain"]

#: what a regression attack can aim at
GOALS: tuple[str, ...] = ("up", "down", "delta")


@dataclass(frozen=True)
class RegressionResult:
    """The outcome of one regression attack on a batch of ``N`` inputs.

    Attributes:
        x_adv: ``(N, *)`` the optimised inputs, inside ``threat`` (ball and box).
        y_before: ``(N,)`` the model's output on the clean inputs, ``f(x)``.
        y_after: ``(N,)`` the model's output at ``x_adv``, ``f(x_adv)``.
        gain: ``(N,)`` ``y_after − y_before`` (what the model *believes* changed).
        norms: ``(N,)`` ``||x_adv − x||`` in the threat model's norm.
        num_grads: ``(N,)`` int64, forward+backward passes spent on each point.
        num_forwards: ``(N,)`` int64, forward passes on each point (gradient steps included).
        threat: the threat model the attack ran under.
        goal: ``"up"``, ``"down"`` or ``"delta"``.
        delta: the aimed change Δ of ``goal="delta"``, else ``None``.
        attack: the attack's configuration, as ``repr``.
    """

    x_adv: Tensor
    y_before: Tensor
    y_after: Tensor
    gain: Tensor
    norms: Tensor
    num_grads: Tensor
    num_forwards: Tensor
    threat: ThreatModel
    goal: str
    delta: float | None
    attack: str

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    @property
    def objective(self) -> Tensor:
        """``(N,)`` what the attack maximised, at ``x_adv``: the gain (``"up"``), minus the gain
        (``"down"``), ``−|gain − Δ|`` (``"delta"``). Never below its value at ``x`` itself."""
        if self.goal == "up":
            return self.gain
        if self.goal == "down":
            return -self.gain
        return -(self.gain - float(self.delta)).abs()  # type: ignore[arg-type]

    @property
    def residual(self) -> Tensor | None:
        """``(N,)`` ``gain − Δ`` for ``goal="delta"`` (how far from the aimed change), else ``None``."""
        return None if self.delta is None else self.gain - self.delta

    def summary(self) -> dict[str, Any]:
        """Scalars for logs and reports."""
        out: dict[str, Any] = {
            "attack": self.attack, "goal": self.goal, "norm": self.threat.norm, "eps": self.threat.eps,
            "n": len(self), "mean_gain": float(self.gain.float().mean()),
            "median_gain": float(self.gain.float().median()), "mean_norm": float(self.norms.float().mean()),
            "max_norm": float(self.norms.float().max()),
            "grads_per_point": float(self.num_grads.float().mean()),
        }
        if self.residual is not None:
            out["delta"] = self.delta
            out["mean_abs_residual"] = float(self.residual.float().abs().mean())
        return out


# -- the model's outputs ----------------------------------------------------------------------------


def _outputs(model: nn.Module, x: Tensor, *, where: str, first: bool = False) -> Tensor:
    """``f(x)`` as ``(N,)``: the model must give one output per input, ``(N,)`` or ``(N, 1)``."""
    n = x.shape[0]
    if first:
        try:
            out = model(x)
        except (RuntimeError, IndexError) as err:
            raise ValueError(f"the model failed on inputs of shape {tuple(x.shape)} ({err}); check "
                             "that x has the (N, ...) shape the model expects") from err
    else:
        out = model(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"the model must return a torch.Tensor of shape (N,) or (N, 1), got "
                        f"{type(out).__name__}")
    if out.dim() == 2 and out.shape[0] == n and out.shape[1] > 1:
        raise ValueError(f"a regression attack needs one output per input, shape ({n},) or ({n}, 1); the "
                         f"model returned {tuple(out.shape)}, {out.shape[1]} outputs per input (a "
                         "classifier's logits?). Attack a classifier with PGD; for one output of a "
                         "multi-output regressor, wrap the model so it returns that column")
    if out.dim() == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.dim() != 1 or out.shape[0] != n:
        raise ValueError(f"a regression attack needs one output per input, shape ({n},) or ({n}, 1); "
                         f"the model returned shape {tuple(out.shape)} for {n} inputs")
    if not out.is_floating_point():
        raise TypeError(f"the model's outputs must be floating point (a regressor), got {out.dtype}")
    if first and not bool(torch.isfinite(out).all()):
        raise ValueError(f"the model returned NaN or Inf {where}; check the model and its input range")
    return out


# -- the attack -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegressionPGD:
    """Projected gradient ascent on a regressor's output (Madry et al., ICLR 2018; the output
    itself as the objective): push ``f(x')`` up, down, or by ``Δ``, with ``x'`` in the ε-ball.

    ``x_{t+1} = Π_{B_ε(x) ∩ [lo, hi]}(x_t + α_t · dir_p(∇_x J(x_t)))``, ``J = f`` (``"up"``),
    ``−f`` (``"down"``), ``−|f(x') − f(x) − Δ|`` (``"delta"``). The iterate with the best ``J``
    is returned (the clean input, the start and every step are candidates, so ``"up"`` never
    lowers the output, ``"down"`` never raises it and ``"delta"`` never ends farther from Δ than
    ``x``). For ``"delta"`` a point's step ``α_t`` halves each time its residual
    ``f(x_t) − f(x) − Δ`` changes sign, so it settles on the target instead of oscillating around
    it (a bisection along the path; not in Madry et al.).

    Args:
        eps: the radius ε of the ball, ``>= 0``, in input units.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        goal: ``"up"``, ``"down"`` or ``"delta"``.
        delta: the aimed change Δ of ``goal="delta"`` (required there, refused otherwise).
        steps: gradient steps.
        step_size: α; ``None`` means ``2.5 ε / steps`` (Madry et al., as :class:`PGD`).
        random_start: start from a uniformly random point of the ball (else from ``x``).
        l1_sparsity: the fraction of coordinates an L1 step moves (Tramèr & Boneh 2019).
        bounds: ``(lo, hi)``, the box every optimised input stays in.

    Calling it on ``(model, x, *, generator=None)``: ``model`` any ``torch.nn.Module`` mapping
    ``x`` ``(N, *)`` to ``(N,)`` or ``(N, 1)`` outputs (a model with ``K > 1`` outputs is
    refused); ``x`` inside ``bounds``. Returns a :class:`RegressionResult` and changes nothing it
    was given (weights, modes, ``requires_grad``, ``.grad``, ``x``, the global RNG); the random
    start draws from ``generator`` (default: a fresh one seeded with 0).

    Example:
        >>> attack = RegressionPGD(eps=0.1, norm="l2", goal="delta", delta=-0.5, steps=30)
        >>> result = attack(regressor, x)
        >>> result.gain, result.residual, result.norms     # (N,) each
    """

    #: not a classification attack: evaluations of robust accuracy refuse it by this
    kind: ClassVar[str] = "regression"
    access: ClassVar[str] = "gradients"

    eps: float
    norm: Norm = "linf"
    goal: str = "up"
    delta: float | None = None
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    l1_sparsity: float = 0.05
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        norm_field(self, NORMS)
        ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)  # raises on bad eps / bounds
        if not math.isfinite(float(self.eps)):
            raise ValueError("RegressionPGD needs a finite eps (the radius of the ball the input may "
                             "move in)")
        object.__setattr__(self, "eps", float(self.eps))
        bounds_field(self)
        check_choice("goal", self.goal, GOALS)
        if self.goal == "delta":
            if self.delta is None:
                raise ValueError("goal='delta' needs delta, the change of the output to aim at "
                                 "(f(x') - f(x) = delta)")
            if (isinstance(self.delta, bool) or not isinstance(self.delta, (int, float))
                    or not math.isfinite(self.delta)):
                raise ValueError(f"delta must be a finite number (the aimed change of the output), "
                                 f"got {self.delta!r}")
            object.__setattr__(self, "delta", float(self.delta))
        elif self.delta is not None:
            raise ValueError(f"delta is the aimed change of goal='delta'; goal={self.goal!r} pushes the "
                             "output as far as it goes: drop delta or use goal='delta'")
        check_int("steps", self.steps)
        if self.step_size is not None:
            check_number("step_size (a number > 0, or None for 2.5 eps / steps)", self.step_size)
        if not isinstance(self.random_start, bool):
            raise TypeError(f"random_start must be True or False, got {self.random_start!r}")
        check_number("l1_sparsity", self.l1_sparsity, high=1.0)

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds)

    def _score(self, f: Tensor, y0: Tensor) -> Tensor:
        """``J`` per point: what the attack maximises."""
        if self.goal == "up":
            return f - y0
        if self.goal == "down":
            return y0 - f
        return -(f - y0 - self.delta).abs()

    @needs_autograd
    def __call__(self, model: nn.Module, x: Tensor, *,
                 generator: torch.Generator | None = None) -> RegressionResult:
        check_model(model)
        _check_differentiable(self, model)
        threat = self.threat
        x = check_batch(x, bounds=threat.bounds)
        check_placement(model, x, generator=generator)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        x = x.detach()
        with eval_mode(model), torch.enable_grad():
            return self._run(model, x, threat, generator)

    def _run(self, model: nn.Module, x: Tensor, threat: ThreatModel,
             generator: torch.Generator) -> RegressionResult:
        n = x.shape[0]
        with torch.no_grad():
            y0 = _outputs(model, x, where="on the clean inputs", first=True)  # (N,)
        best_x, best_f = x.clone(), y0.clone()
        best_score = self._score(y0, y0)
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        alpha = torch.full((n,), step, dtype=x.dtype, device=x.device)
        x_adv = threat.random_start(x, generator=generator) if self.random_start else x.clone()
        prev: Tensor | None = None
        nonfinite = False

        def keep_best(xa: Tensor, f: Tensor) -> None:
            nonlocal best_score, nonfinite
            s = self._score(f, y0)
            finite = torch.isfinite(s)
            nonfinite |= not bool(finite.all())
            better = finite & (s > best_score)
            best_x[better] = xa[better]
            best_f[better] = f[better]
            best_score = torch.where(better, s, best_score)

        for _ in range(self.steps):
            xa = x_adv.detach().requires_grad_(True)
            f = _outputs(model, xa, where="at the iterates")
            score = self._score(f, y0)
            keep_best(xa.detach(), f.detach())
            grad = input_grad(score.sum(), xa)  # per point: the rows are independent
            if self.goal == "delta":
                resid = (f.detach() - y0 - self.delta)
                if prev is not None:
                    alpha = torch.where(resid * prev < 0, alpha / 2, alpha)
                prev = resid
            direction = threat.ascent_direction(grad, x_adv=xa.detach(), l1_sparsity=self.l1_sparsity)
            x_adv = threat.project(xa.detach() + per_sample(alpha, x) * direction, x)
        with torch.no_grad():
            keep_best(x_adv, _outputs(model, x_adv, where="at the iterates"))
        if nonfinite:
            warn("the model returned NaN or Inf at some iterates of the regression attack; those "
                 "iterates were skipped (the best finite one is returned). Check the model for "
                 "non-finite operations")
        norms, inside = threat.measure(best_x, x)
        if not bool(inside.all()):
            raise AssertionError(f"internal error: RegressionPGD returned {int((~inside).sum())} points "
                                 "outside its threat model; please report this")
        long = dict(dtype=torch.long, device=x.device)
        return RegressionResult(
            x_adv=best_x, y_before=y0, y_after=best_f, gain=best_f - y0, norms=norms,
            num_grads=torch.full((n,), self.steps, **long),
            num_forwards=torch.full((n,), self.steps + 2, **long),
            threat=threat, goal=self.goal, delta=self.delta, attack=config_repr(self))

    def __repr__(self) -> str:
        return config_repr(self)


# -- the baseline -----------------------------------------------------------------------------------


@needs_autograd
def noise_gain(model: nn.Module, x: Tensor, result: RegressionResult, *, trials: int = 1,
               generator: torch.Generator | None = None) -> Tensor:
    """How the output moves along random directions of the attack's own size: ``(trials, N)``
    signed changes ``f(clip(x + r_i · u)) − f(x)``, ``u`` uniform on the unit sphere of the
    result's norm (:func:`advlab.threat.random_direction`), ``r_i`` the attack's norm at point
    ``i`` (the box clip can only shorten ``u``).

    The baseline an attack on a regressor must beat: the mean signed change is near 0 (a random
    direction is as likely to lower ``f`` as to raise it), the mean ``|change|`` says how much a
    random design change of that size moves the output at all. Changes nothing it was given;
    without a generator a fresh one seeded with 0 is used.

    Example:
        >>> result = RegressionPGD(eps=0.05)(regressor, x)
        >>> result.gain.mean() / noise_gain(regressor, x, result, trials=8).abs().mean()
    """
    check_model(model)
    threat = result.threat
    x = check_batch(x, bounds=threat.bounds)
    check_placement(model, x, generator=generator)
    if tuple(x.shape) != tuple(result.x_adv.shape):
        raise ValueError(f"x has shape {tuple(x.shape)} but the result is for inputs of shape "
                         f"{tuple(result.x_adv.shape)}; pass the inputs the attack was run on")
    check_int("trials", trials)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    radius = per_sample(result.norms.to(x.dtype), x)
    with eval_mode(model), torch.no_grad():
        y0 = _outputs(model, x, where="on the clean inputs", first=True)
        rows = []
        for _ in range(trials):
            u = random_direction(x, threat.norm, generator=generator)
            rows.append(_outputs(model, threat.clip(x + radius * u), where="at the noisy inputs") - y0)
    return torch.stack(rows)
