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

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from advlab._checks import bounds_field, check_int, check_number
from advlab.attacks._loop import Schedule, run_schedule
from advlab.attacks.contract import Attack, Run, perturb
from advlab.losses import LossFn, get_loss
from advlab.threat import Norm, ThreatModel


def check_gradient_config(config: Any) -> None:
    """Validate the fields the gradient attacks share (called from ``__post_init__``)."""
    if ThreatModel(norm=config.norm, eps=0.0).norm == "l0":
        raise ValueError(f"{type(config).__name__} steps in an Lp norm (linf, l2, l1); for an L0 "
                         "budget (a count of changed features) use PGDL0 or JSMA")
    ThreatModel(norm=config.norm, eps=config.eps, bounds=config.bounds)  # raises on bad values
    bounds_field(config)  # per-feature bounds, mask and categorical features, canonical
    if not math.isfinite(config.eps):
        raise ValueError(f"{type(config).__name__} needs a finite eps; for minimal perturbations use "
                         "a minimal-norm attack")
    get_loss(config.loss)
    step_size = getattr(config, "step_size", None)
    if step_size is not None:
        check_number("step_size (a number > 0, or None for the default)", step_size)
    if hasattr(config, "steps"):
        check_int("steps", config.steps)


def _loop_core(attack: Attack, run: Run) -> None:
    """The core of every gradient-loop attack: its schedule through the shared loop."""
    run_schedule(run, attack.schedule(), get_loss(attack.loss))


@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, ICLR 2015) and, with
    ``norm="l2"``, the Fast Gradient Method (FGM).

    One step from the clean input: ``x' = Π(x + ε · dir_p(∇_x J(x, y)))``, ``dir_∞ = sign``,
    ``dir_2 = g/||g||_2``. Targeted (``target=t``): descend ``CE(x, t)`` instead.

    Example:
        >>> result = FGSM(eps=0.1)(model, x, y)
        >>> result.x_adv.shape == x.shape, result.success.float().mean()
    """

    clean_pass: ClassVar[bool] = False
    eps: float
    norm: Norm = "linf"
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories

    def __post_init__(self) -> None:
        check_gradient_config(self)

    def schedule(self) -> Schedule:
        return Schedule(steps=1, step_size=self.eps)

    _core = _loop_core


@dataclass(frozen=True, kw_only=True)
class FGM(FGSM):
    """The L2 fast gradient method: ``x' = Π(x + ε · ∇J / ||∇J||_2)`` (Goodfellow et al. 2015),
    :class:`FGSM` with ``norm="l2"``: the same points, bit for bit.

    Example:
        >>> result = FGM(eps=1.5)(model, x, y)
    """

    norm: ClassVar[Norm] = "l2"


@dataclass(frozen=True, kw_only=True)
class IFGSM(Attack):
    """Iterative FGSM / Basic Iterative Method (Kurakin, Goodfellow & Bengio, ICLR 2017 workshop).

    From the clean input, ``steps`` times: ``x_{t+1} = Π_{B_ε(x)}(x_t + α · dir_p(∇J(x_t, y)))``,
    with ``α = ε / steps`` by default (so that T steps can reach the ball's surface, as in
    Dong et al. 2018). ``norm="l2"`` gives the iterative FGM.

    Example:
        >>> result = IFGSM(eps=0.1, steps=10)(model, x, y)
    """

    clean_pass: ClassVar[bool] = False
    eps: float
    steps: int = 10
    step_size: float | None = None
    norm: Norm = "linf"
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories
    early_stop: bool = False

    def __post_init__(self) -> None:
        check_gradient_config(self)

    def schedule(self) -> Schedule:
        step_size = self.step_size if self.step_size is not None else self.eps / self.steps
        return Schedule(steps=self.steps, step_size=step_size, early_stop=self.early_stop)

    _core = _loop_core


BIM = IFGSM

__all__ = ["BIM", "FGM", "FGSM", "IFGSM", "MIFGM", "MIFGSM", "PGD", "perturb"]


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
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

    clean_pass: ClassVar[bool] = False
    eps: float
    norm: Norm = "linf"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str | LossFn = "ce"
    bounds: tuple[float, float] = (0.0, 1.0)
    mask: Any = None  # bool, shaped like one input: True where a feature may change
    categorical: Any = None  # feature indices (or a bool mask) that are categories
    early_stop: bool = False
    l1_sparsity: float = 0.05

    def __post_init__(self) -> None:
        check_gradient_config(self)
        check_int("restarts", self.restarts)
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True: restarts from the same point "
                             "repeat the same deterministic run")
        if not (0 < self.l1_sparsity <= 1):
            raise ValueError(f"l1_sparsity must be in (0, 1], got {self.l1_sparsity!r}")

    def schedule(self) -> Schedule:
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        return Schedule(steps=self.steps, step_size=step_size, early_stop=self.early_stop,
                        l1_sparsity=self.l1_sparsity, random_start=self.random_start,
                        restarts=self.restarts)

    _core = _loop_core


@dataclass(frozen=True, kw_only=True)
class MIFGSM(IFGSM):
    """Momentum Iterative FGSM (Dong et al., CVPR 2018, Algorithm 1); ``norm="l2"`` gives MI-FGM.

    ``g_{t+1} = μ · g_t + ∇_x J(x_t, y) / ||∇_x J(x_t, y)||_1``,
    ``x_{t+1} = Π_{B_ε(x)}(x_t + α · sign(g_{t+1}))`` (L2: ``α · g/||g||_2``), ``α = ε / T`` by
    default. With ``decay=0`` it is exactly I-FGSM. On an :class:`advlab.models.Ensemble` this is
    Algorithm 2. (The L1 normalisation uses the mean ``|∇|``, which differs from the sum by the
    constant ``d`` and so leaves every update unchanged.)

    Example:
        >>> result = MIFGSM(eps=16 / 255, steps=10, decay=1.0)(model, x, y, target=t)
    """

    decay: float = 1.0

    def __post_init__(self) -> None:
        check_gradient_config(self)
        check_number("decay", self.decay, low=0.0, low_open=False)

    def schedule(self) -> Schedule:
        return dataclasses.replace(super().schedule(), momentum=float(self.decay))


@dataclass(frozen=True, kw_only=True)
class MIFGM(MIFGSM):
    """MI-FGM, the L2 form of MI-FGSM (Dong et al. 2018, Sec. 3.3): ``g_{t+1} = μ g_t + ∇/||∇||_1``,
    ``x_{t+1} = Π(x_t + α · g_{t+1} / ||g_{t+1}||_2)``; :class:`MIFGSM` with ``norm="l2"``.

    Example:
        >>> result = MIFGM(eps=1.5, steps=10)(model, x, y)
    """

    norm: ClassVar[Norm] = "l2"
