"""White-box gradient attacks: FGSM/FGM, I-FGSM (BIM), PGD (L∞, L2, L1) and MI-FGSM/MI-FGM.

Each attack is a frozen configuration with keyword-only hyperparameters; calling it on
``(model, x, y)`` returns an :class:`~advlab.attacks.AttackResult` and changes nothing it was given
(weights, train/eval modes, ``requires_grad``, ``.grad``, the inputs, the global RNG, the device).
All of them are one :class:`~advlab.attacks._loop.Schedule` of the shared step loop.

Shapes: ``x`` ``(B, *)`` floats inside ``bounds``; ``y`` and ``target`` ``(B,)`` int64 class indices.
``model`` is any ``torch.nn.Module`` returning logits ``(B, C)`` (an
:class:`advlab.models.Ensemble` included).
"""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import check_inputs, check_model, eval_mode
from advlab.attacks._base import AttackResult, config_repr
from advlab.attacks._loop import LoopState, Schedule, gradient_loop
from advlab.losses import LossFn, get_loss
from advlab.threat import Norm, ThreatModel


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_common(config: Any) -> None:
    """Validate the fields the gradient attacks share (called from ``__post_init__``)."""
    ThreatModel(norm=config.norm, eps=config.eps, bounds=config.bounds)  # raises on bad values
    if not math.isfinite(config.eps):
        raise ValueError(f"{type(config).__name__} needs a finite eps; for minimal perturbations use "
                         "a minimal-norm attack")
    get_loss(config.loss)
    step_size = getattr(config, "step_size", None)
    if step_size is not None and not (isinstance(step_size, (int, float)) and math.isfinite(step_size)
                                      and step_size > 0):
        raise ValueError(f"step_size must be a number > 0 (or None for the default), got {step_size!r}")
    if hasattr(config, "steps"):
        _positive_int("steps", config.steps)


# Set only by :func:`perturb`: the caller wants x_adv alone, so the fixed-budget loop may skip its
# scoring pass on the last iterate.
_X_ADV_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("advlab_x_adv_only", default=False)


def perturb(attack: Any, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
            generator: torch.Generator | None = None) -> Tensor:
    """Only the adversarial inputs of a gradient attack, ``(B, *)``, for adversarial training.

    The same points as ``attack(model, x, y, ...).x_adv`` (bit for bit), without the forward pass
    on the last iterate that fills ``success``/``pred``/``confidence``: a fixed-budget k-step
    attack then costs exactly k forward+backward passes (for PGD-7 training that pass is ~8% of a
    training step). Attacks that need predictions to run (``early_stop``, ``restarts > 1``) and
    non-gradient attacks are simply called.

    Example:
        >>> x_adv = perturb(PGD(eps=0.1, steps=7), model, x, y, generator=g)
    """
    token = _X_ADV_ONLY.set(True)
    try:
        return attack(model, x, y, target=target, generator=generator).x_adv
    finally:
        _X_ADV_ONLY.reset(token)


def run_gradient_attack(config: Any, model: nn.Module, x: Tensor, y: Tensor, *,
                        target: Tensor | None, generator: torch.Generator | None,
                        schedule: Schedule, random_start: bool = False,
                        restarts: int = 1) -> AttackResult:
    """Validate, run the shared loop (with restarts on the points still robust), package."""
    check_model(model)
    threat = ThreatModel(norm=config.norm, eps=config.eps, bounds=config.bounds,
                         targeted=target is not None)
    check_inputs(model, x, y, bounds=threat.bounds, target=target, generator=generator)
    loss: LossFn = get_loss(config.loss)
    if random_start and generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    x = x.detach()
    state = LoopState.empty(x)
    todo = torch.arange(x.shape[0], device=x.device)
    score = not (_X_ADV_ONLY.get() and restarts == 1 and not schedule.early_stop)
    with eval_mode(model), torch.enable_grad():
        for restart in range(restarts):
            xs, ys = x[todo], y[todo]
            ts = target[todo] if target is not None else None
            x_init = threat.random_start(xs, generator=generator) if random_start else xs
            gradient_loop(model, xs, ys, ts, x_init=x_init, threat=threat, loss=loss,
                          schedule=schedule, state=state, idx=todo, check_first=restart == 0,
                          score=score)
            todo = todo[~state.success[todo]]
            if todo.numel() == 0:
                break
    if not bool(torch.isfinite(state.x_adv).all()):
        raise FloatingPointError("the attack produced NaN/Inf inputs: the model's gradient is NaN or "
                                 "Inf on some points; check the model for non-finite operations")
    return AttackResult(x_adv=state.x_adv, success=state.success, pred=state.pred,
                        confidence=state.confidence, norms=threat.norm_of(state.x_adv - x),
                        num_grads=state.num_grads, num_forwards=state.num_forwards,
                        threat=threat, attack=config_repr(config),
                        target=target.detach().clone() if target is not None else None)


@dataclass(frozen=True, kw_only=True)
class FGSM:
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015) and, with
    ``norm="l2"``, the Fast Gradient Method (FGM).

    One step from the clean input: ``x' = Π(x + ε · dir_p(∇_x J(x, y)))``, ``dir_∞ = sign``,
    ``dir_2 = g/||g||_2``. Targeted (``target=t``): descend ``CE(x, t)`` instead.

    Example:
        >>> result = FGSM(eps=0.1)(model, x, y)
        >>> result.x_adv.shape == x.shape, result.success.float().mean()
    """

    eps: float
    norm: Norm = "linf"
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_common(self)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        schedule = Schedule(steps=1, step_size=self.eps)
        return run_gradient_attack(self, model, x, y, target=target, generator=generator,
                                   schedule=schedule)


def FGM(*, eps: float, loss: str | LossFn = "ce", bounds: tuple[float, float] = (0.0, 1.0)) -> FGSM:
    """The L2 fast gradient method: ``x' = Π(x + ε · ∇J / ||∇J||_2)`` (Goodfellow et al. 2015)."""
    return FGSM(eps=eps, norm="l2", loss=loss, bounds=bounds)


@dataclass(frozen=True, kw_only=True)
class IFGSM:
    """Iterative FGSM / Basic Iterative Method (Kurakin, Goodfellow & Bengio, ICLR 2017 workshop).

    From the clean input, ``steps`` times: ``x_{t+1} = Π_{B_ε(x)}(x_t + α · dir_p(∇J(x_t, y)))``,
    with ``α = ε / steps`` by default (so that T steps can reach the ball's surface, as in
    Dong et al. 2018). ``norm="l2"`` gives the iterative FGM.

    Example:
        >>> result = IFGSM(eps=0.1, steps=10)(model, x, y)
    """

    eps: float
    steps: int = 10
    step_size: float | None = None
    norm: Norm = "linf"
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    early_stop: bool = False

    def __post_init__(self) -> None:
        _check_common(self)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        step_size = self.step_size if self.step_size is not None else self.eps / self.steps
        schedule = Schedule(steps=self.steps, step_size=step_size, early_stop=self.early_stop)
        return run_gradient_attack(self, model, x, y, target=target, generator=generator,
                                   schedule=schedule)


BIM = IFGSM


@dataclass(frozen=True, kw_only=True)
class PGD:
    """Projected Gradient Descent (Madry et al., ICLR 2018) under L∞, L2 or L1.

    From a uniformly random point of the ε-ball (``random_start``), ``steps`` times:
    ``x_{t+1} = Π_{B_ε(x) ∩ [lo, hi]}(x_t + α · dir_p(∇_x J(x_t, y)))`` with ``dir_∞ = sign``,
    ``dir_2 = g/||g||_2`` and, for L1, sparse L1 descent over the top ``l1_sparsity`` fraction of
    coordinates (Tramèr & Boneh 2019). ``restarts`` re-runs from new random points on the points
    still robust, keeping the first success. Default ``α = 2.5 ε / steps`` (Madry et al.).

    Example:
        >>> result = PGD(eps=0.1, norm="linf", steps=20, step_size=0.01)(model, x, y)
        >>> robust_acc = 1 - result.success.float().mean()
    """

    eps: float
    norm: Norm = "linf"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    early_stop: bool = False
    l1_sparsity: float = 0.05

    def __post_init__(self) -> None:
        _check_common(self)
        _positive_int("restarts", self.restarts)
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True: restarts from the same point "
                             "repeat the same deterministic run")
        if not (0 < self.l1_sparsity <= 1):
            raise ValueError(f"l1_sparsity must be in (0, 1], got {self.l1_sparsity!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        schedule = Schedule(steps=self.steps, step_size=step_size, early_stop=self.early_stop,
                            l1_sparsity=self.l1_sparsity)
        return run_gradient_attack(self, model, x, y, target=target, generator=generator,
                                   schedule=schedule, random_start=self.random_start,
                                   restarts=self.restarts)


@dataclass(frozen=True, kw_only=True)
class MIFGSM:
    """Momentum Iterative FGSM (Dong et al., CVPR 2018, Algorithm 1); ``norm="l2"`` gives MI-FGM.

    ``g_{t+1} = μ · g_t + ∇_x J(x_t, y) / ||∇_x J(x_t, y)||_1``,
    ``x_{t+1} = Π_{B_ε(x)}(x_t + α · sign(g_{t+1}))`` (L2: ``α · g/||g||_2``), ``α = ε / T`` by
    default. With ``decay=0`` it is exactly I-FGSM. On an :class:`advlab.models.Ensemble` this is
    Algorithm 2. (The L1 normalisation uses the mean ``|∇|``, which differs from the sum by the
    constant ``d`` and so leaves every update unchanged.)

    Example:
        >>> result = MIFGSM(eps=16 / 255, steps=10, decay=1.0)(model, x, y, target=t)
    """

    eps: float
    steps: int = 10
    decay: float = 1.0
    step_size: float | None = None
    norm: Norm = "linf"
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    early_stop: bool = False

    def __post_init__(self) -> None:
        _check_common(self)
        if not (isinstance(self.decay, (int, float)) and math.isfinite(self.decay) and self.decay >= 0):
            raise ValueError(f"decay must be a finite number >= 0, got {self.decay!r}")

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, target: Tensor | None = None,
                 generator: torch.Generator | None = None) -> AttackResult:
        step_size = self.step_size if self.step_size is not None else self.eps / self.steps
        schedule = Schedule(steps=self.steps, step_size=step_size, momentum=float(self.decay),
                            early_stop=self.early_stop)
        return run_gradient_attack(self, model, x, y, target=target, generator=generator,
                                   schedule=schedule)


def MIFGM(*, eps: float, steps: int = 10, decay: float = 1.0, step_size: float | None = None,
          loss: str | LossFn = "ce", bounds: tuple[float, float] = (0.0, 1.0),
          early_stop: bool = False) -> MIFGSM:
    """MI-FGM, the L2 form of MI-FGSM: steps along ``g / ||g||_2`` (Dong et al. 2018, Sec. 3.3)."""
    return MIFGSM(eps=eps, steps=steps, decay=decay, step_size=step_size, norm="l2", loss=loss,
                  bounds=bounds, early_stop=early_stop)
