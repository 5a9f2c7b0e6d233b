"""Fooling images (Nguyen, Yosinski & Clune, CVPR 2015; the CS231n lecture's noise that a model
calls "airplane"): inputs that look like nothing to a person and that the model assigns to a class
with high confidence.

:func:`fooling_images` starts from noise (uniform in the box, or Gaussian around its centre) and
runs a targeted PGD toward every class until the model's probability for it reaches ``level``
(the criterion :class:`~advlab.attacks.criteria.TargetConfidence`), the ball being the whole box:

    x_{t+1} = clip(x_t − α · sign(∇_x CE(f(x_t), t)))     until  p_t(x_t) ≥ level

:func:`noise_confidence` measures the other half of the lecture's point: how often plain noise,
unattacked, is already classified with confidence ``≥ level``.

Example:
    >>> r = fooling_images(model, input_shape=(1, 28, 28), per_class=2, level=0.99)
    >>> r.reached.float().mean(), r.confidence
    >>> noise_confidence(model, input_shape=(1, 28, 28), level=0.99).rate
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_model, check_number, eval_mode

STARTS = ("uniform", "gaussian")


def _noise(n: int, input_shape: Sequence[int], start: str, bounds: tuple[float, float], sigma: float,
           generator: torch.Generator, device: torch.device) -> Tensor:
    lo, hi = bounds
    shape = (n, *input_shape)
    if start == "uniform":
        return torch.empty(shape, device=device).uniform_(lo, hi, generator=generator)
    centre, width = (lo + hi) / 2, hi - lo
    noise = torch.randn(shape, generator=generator, device=device) * (sigma * width) + centre
    return noise.clamp(lo, hi)


def _check(model: nn.Module, input_shape: Sequence[int], start: str, level: float,
           bounds: tuple[float, float]) -> tuple[int, ...]:
    check_model(model)
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}: use one of {', '.join(STARTS)}")
    if not (isinstance(level, (int, float)) and not isinstance(level, bool) and 0 < level < 1):
        raise ValueError(f"level is a probability strictly between 0 and 1, got {level!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be one input's shape, e.g. (1, 28, 28); got {tuple(input_shape)}")
    lo, hi = bounds
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return shape


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass
class NoiseConfidence:
    """How often unattacked noise is classified with confidence ``>= level``."""

    rate: float                 # fraction of the n samples with max probability >= level
    per_class: list[int]        # of those, how many per predicted class
    n: int
    level: float
    start: str
    max_confidence: Tensor = field(repr=False)   # (n,) each sample's top probability


def noise_confidence(model: nn.Module, *, input_shape: Sequence[int], n: int = 1000, level: float = 0.99,
                     start: str = "uniform", sigma: float = 0.25, bounds: tuple[float, float] = (0.0, 1.0),
                     seed: int = 0, batch_size: int = 500) -> NoiseConfidence:
    """The fraction of ``n`` noise inputs the model classifies with probability ``>= level``."""
    shape = _check(model, input_shape, start, level, bounds)
    check_int("n", n)
    g = torch.Generator(device=_device(model)).manual_seed(seed)
    tops, preds = [], []
    with torch.no_grad(), eval_mode(model):
        for s in range(0, n, batch_size):
            x = _noise(min(batch_size, n - s), shape, start, bounds, sigma, g, _device(model))
            p = torch.softmax(model(x), dim=1)
            top, pred = p.max(dim=1)
            tops.append(top)
            preds.append(pred)
    top, pred = torch.cat(tops), torch.cat(preds)
    confident = top >= level
    k = int(pred.max()) + 1 if pred.numel() else 0
    per_class = torch.bincount(pred[confident], minlength=k).tolist()
    return NoiseConfidence(rate=float(confident.float().mean()), per_class=per_class, n=n, level=float(level),
                           start=start, max_confidence=top.cpu())


@dataclass
class FoolingResult:
    """Fooling images, ``per_class`` per class, in class order."""

    x: Tensor            # (K·m, *) the fooling images
    start: Tensor        # (K·m, *) the noise each started from
    target: Tensor       # (K·m,) the class it was pushed to
    confidence: Tensor   # (K·m,) p_target at x
    reached: Tensor      # (K·m,) bool, confidence >= level
    steps: Tensor        # (K·m,) gradient steps it took
    level: float
    start_kind: str

    def rate_per_class(self) -> list[float]:
        """Fraction of each class's images that reached ``level``."""
        k = int(self.target.max()) + 1
        return [float(self.reached[self.target == c].float().mean()) for c in range(k)]

    def summary(self) -> dict[str, Any]:
        return {"n": int(self.target.numel()), "level": self.level, "start": self.start_kind,
                "reached": float(self.reached.float().mean()), "rate_per_class": self.rate_per_class(),
                "median_steps": float(self.steps.float().median()),
                "median_confidence": float(self.confidence.median())}


def fooling_images(model: nn.Module, *, input_shape: Sequence[int], per_class: int = 4, level: float = 0.99,
                   start: str = "uniform", sigma: float = 0.25, steps: int = 200, step_size: float | None = None,
                   bounds: tuple[float, float] = (0.0, 1.0), classes: Sequence[int] | None = None,
                   seed: int = 0) -> FoolingResult:
    """Noise pushed to every class (or ``classes``) until the model is ``level`` sure of it.

    A targeted L∞ PGD whose ball is the whole box (``eps = hi − lo``), ``steps`` at most, step
    ``step_size`` (default ``(hi − lo) / 100``), each point stopping at its first iterate with
    ``p_target ≥ level``. ``reached`` says where it got there within the steps.
    """
    from advlab.attacks import PGD
    from advlab.attacks.criteria import TargetConfidence

    shape = _check(model, input_shape, start, level, bounds)
    check_int("per_class", per_class)
    check_int("steps", steps)
    if step_size is not None:
        check_number("step_size", step_size)
    dev = _device(model)
    g = torch.Generator(device=dev).manual_seed(seed)
    lo, hi = bounds
    if classes is None:
        with torch.no_grad(), eval_mode(model):
            k = int(model(_noise(1, shape, start, bounds, sigma, g, dev)).shape[1])
        classes = list(range(k))
    target = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long, device=dev)
    x0 = _noise(target.numel(), shape, start, bounds, sigma, g, dev)
    attack = PGD(eps=hi - lo, steps=steps, step_size=step_size if step_size is not None else (hi - lo) / 100,
                 random_start=False, early_stop=True, bounds=bounds)
    with torch.no_grad(), eval_mode(model):
        k = int(model(x0[:1]).shape[1])
    # noise has no true class; the criterion reads only the target's probability, and the attack
    # contract wants a label that differs from the target
    y = (target + 1) % k
    res = attack(model, x0, y, target=target, criterion=TargetConfidence(level),
                 generator=torch.Generator(device=dev).manual_seed(seed))
    with torch.no_grad(), eval_mode(model):
        p = torch.softmax(model(res.x_adv), dim=1).gather(1, target[:, None]).squeeze(1)
    return FoolingResult(x=res.x_adv, start=x0, target=target, confidence=p, reached=p >= level,
                         steps=res.num_grads, level=float(level), start_kind=start)


__all__ = ["FoolingResult", "NoiseConfidence", "STARTS", "fooling_images", "noise_confidence"]
