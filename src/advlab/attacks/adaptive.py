"""Attacking obfuscated gradients (Athalye, Carlini & Wagner, ICML 2018): BPDA and EOT as model
wrappers that any gradient attack takes.

A defense that breaks the gradient (a non-differentiable preprocessing layer, a randomised
forward pass) makes gradient attacks fail without making the model robust. Both remedies change
only what the attack differentiates, never what the model answers:

* :class:`BPDA` (Backward Pass Differentiable Approximation, Sec. 4.1): the forward pass is the
  defended model's, ``f(g(x))`` exactly; the backward pass replaces the non-differentiable
  preprocessing ``g`` by a differentiable approximation ``ĝ`` (the identity by default, since
  ``g(x) ≈ x`` for quantisation, JPEG, denoisers): ``∇_x f(g(x)) ≈ ∇f(g(x)) · ∂ĝ(x)/∂x``.
* :class:`EOT` (Expectation over Transformation, Sec. 4.3; Athalye, Engstrom, Ilyas & Kwok 2018):
  for a randomised model ``f_t``, attack the expectation: ``∇_x E_t[f_t(x)] ≈ (1/k) Σ_i ∇_x
  f_{t_i}(x)``; the wrapper's logits are the mean of ``k`` forward passes (or the log of the mean
  softmax).

Both are ``nn.Module``s returning logits, so ``PGD(eps=0.1)(BPDA(g, f), x, y)`` and
``APGD(eps=0.1)(EOT(f_random, samples=20), x, y)`` are the adaptive attacks.

Example:
    >>> defended = nn.Sequential(Quantize(levels=4), classifier)      # gradient 0 almost everywhere
    >>> PGD(eps=0.1)(defended, x, y).success.float().mean()           # fails: masked
    >>> PGD(eps=0.1)(BPDA(defended[0], defended[1]), x, y).success.float().mean()   # falls
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor, nn


class BPDA(nn.Module):
    """``f(g(x))`` forward, gradients through ``f(ĝ(x))`` (Athalye et al. 2018, Sec. 4.1).

    Args:
        preprocess: ``g``, the non-differentiable part (a module or a function of the batch).
        model: ``f``, the differentiable rest, returning logits.
        approx: ``ĝ``, differentiable, with outputs of ``g``'s shape; ``None`` is the identity
            (then ``g`` must keep the input's shape).

    The forward value is exactly ``f(g(x))``: ``z = g(x).detach() + (ĝ(x) - ĝ(x).detach())``
    adds an exact zero, so every success an attack reports through the wrapper is a success on
    the defended model itself.
    """

    def __init__(self, preprocess: Callable[[Tensor], Tensor], model: nn.Module, *,
                 approx: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if not callable(preprocess):
            raise TypeError(f"BPDA: preprocess must be a module or a function, got {type(preprocess).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"BPDA: model must be an nn.Module returning logits, got {type(model).__name__}")
        if approx is not None and not callable(approx):
            raise TypeError(f"BPDA: approx must be a module or a function (or None: the identity), got "
                            f"{type(approx).__name__}")
        self.preprocess = preprocess
        self.model = model
        self.approx = approx
        self.train(model.training)   # the wrapper reports the wrapped model's mode

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            exact = self.preprocess(x)
        smooth = x if self.approx is None else self.approx(x)
        if not isinstance(exact, Tensor) or exact.shape != smooth.shape:
            what = "the input" if self.approx is None else "approx's output"
            raise ValueError(f"BPDA: the preprocessing returned shape "
                             f"{tuple(exact.shape) if isinstance(exact, Tensor) else type(exact).__name__} but "
                             f"{what} has shape {tuple(smooth.shape)}; the approximation must match the "
                             "preprocessing's output (give approx= when the preprocessing changes the shape)")
        return self.model(exact.detach() + (smooth - smooth.detach()))


class EOT(nn.Module):
    """The mean over ``samples`` forward passes of a randomised model (Athalye et al. 2018, Sec. 4.3).

    Args:
        model: a randomised ``nn.Module`` returning logits (each call draws its own randomness).
        samples: ``k`` ≥ 1 forward passes per call; gradients average over them.
        average: ``"logits"`` (the mean of the logits) or ``"probs"`` (the log of the mean softmax:
            logits of the expected prediction).
    """

    def __init__(self, model: nn.Module, *, samples: int = 10,
                 average: Literal["logits", "probs"] = "logits") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"EOT: model must be an nn.Module returning logits, got {type(model).__name__}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"EOT: samples must be an integer >= 1 (forward passes to average), got {samples!r}")
        if average not in ("logits", "probs"):
            raise ValueError(f"EOT: average must be 'logits' or 'probs', got {average!r}")
        self.model = model
        self.samples = samples
        self.average = average
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.model(x) for _ in range(self.samples)]
        if self.average == "logits":
            return torch.stack(outs).mean(0)
        probs = torch.stack([torch.softmax(o, dim=1) for o in outs]).mean(0)
        return probs.clamp_min(1e-30).log()


class Quantize(nn.Module):
    """Input quantisation to ``levels`` evenly spaced values of ``bounds`` (a gradient-masking
    preprocessing defense: its gradient is 0 almost everywhere; Guo et al. 2018's bit-depth
    reduction, the first BPDA target of Athalye et al.). ``x ↦ lo + round((x-lo)/s)·s``, ``s =
    (hi-lo)/(levels-1)``."""

    def __init__(self, *, levels: int = 8, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"Quantize: levels must be an integer >= 2, got {levels!r}")
        lo, hi = float(bounds[0]), float(bounds[1])
        if not lo < hi:
            raise ValueError(f"Quantize: bounds must be (lo, hi) with lo < hi, got {bounds!r}")
        self.levels, self.bounds = levels, (lo, hi)

    def forward(self, x: Tensor) -> Tensor:
        lo, hi = self.bounds
        step = (hi - lo) / (self.levels - 1)
        return (lo + torch.round((x - lo) / step) * step).clamp(lo, hi)


class RandomNoise(nn.Module):
    """A randomised defense: Gaussian noise N(0, σ²) added to the input at every forward pass,
    drawn from the module's own generator (seeded; the global RNG is untouched), then ``model``."""

    def __init__(self, model: nn.Module, *, sigma: float, seed: int = 0) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and sigma > 0):
            raise ValueError(f"RandomNoise: sigma must be a number > 0, got {sigma!r}")
        self.model, self.sigma, self.seed = model, float(sigma), int(seed)
        self._generators: dict[str, torch.Generator] = {}
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        key = str(x.device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=self._generators[key], device=x.device, dtype=x.dtype)
        return self.model(x + self.sigma * noise)
