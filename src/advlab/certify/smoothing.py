"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier ``g(x) = argmax_c P(f(x + δ) = c)``, ``δ ~ N(0, σ²I)``, is robust around
``x``: if the top class has probability ``p_A ≥ p̲_A > ½``, no perturbation of L2 norm below

    R = σ · Φ⁻¹(p̲_A)

changes ``g(x)`` (Theorem 1, with the runner-up bounded by ``1 - p̲_A``). ``certify`` is the
paper's CERTIFY: ``n0`` noise samples guess the class ``ĉ``, ``n`` fresh samples give the
one-sided Clopper-Pearson lower bound ``p̲_A`` at level ``α``; if ``p̲_A ≤ ½`` it abstains
(``pred = -1``, radius 0). ``predict`` is PREDICT: the top two counts of ``n`` samples, a
two-sided binomial test at ``α``, abstaining when it cannot tell them apart. As in the paper the
noise is not clipped to the input box. With probability at least ``1 - α`` per point, a returned
class and radius are correct for the smoothed classifier.

Example:
    >>> cert = SmoothedClassifier(sigma=0.25, n=10_000).certify(model, x, generator=g)
    >>> cert.certified_accuracy(y, radius=0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_model, eval_mode


@dataclass(frozen=True)
class Certificate:
    """Per point: the smoothed class (-1: abstained), the certified L2 radius, the lower bound
    on the top class's probability, and the noise counts per class."""

    pred: Tensor     # (B,) int64
    radius: Tensor   # (B,) float64, input units
    p_lower: Tensor  # (B,) float64
    counts: Tensor   # (B, C) int64, of the n estimation samples
    sigma: float
    n: int
    n0: int
    alpha: float

    def certified_accuracy(self, y: Tensor, radius: float) -> float:
        """The fraction of points classified ``y`` with a certified radius ≥ ``radius``
        (abstentions count as wrong)."""
        ok = (self.pred == y.to(self.pred.device)) & (self.radius >= radius)
        return float(ok.double().mean())

    def accuracy_curve(self, y: Tensor, radii: list[float]) -> list[tuple[float, float]]:
        """``[(r, certified accuracy at r), ...]``."""
        return [(float(r), self.certified_accuracy(y, float(r))) for r in radii]


@dataclass(frozen=True, kw_only=True)
class SmoothedClassifier:
    """The Gaussian-smoothed classifier of Cohen et al. (2019): its prediction and its
    certificate. ``sigma``: noise standard deviation (input units); ``n0``: samples to pick the
    class; ``n``: samples to bound its probability; ``alpha``: failure probability per point;
    ``batch_size``: noisy inputs per forward pass."""

    sigma: float
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not (
                math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0 (the noise's standard deviation), got {self.sigma!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be a confidence level strictly between 0 and 1, got {self.alpha!r}")
        check_int("n0", self.n0)
        check_int("n", self.n)
        check_int("batch_size", self.batch_size)

    def _counts(self, model: nn.Module, x: Tensor, num: int, generator: torch.Generator) -> Tensor:
        """``(B, C)`` class counts of ``num`` noisy copies of each point.

        The ``B · num`` noisy inputs are drawn in order (point 0's copies first) and classified in
        forward passes of ``batch_size`` rows that may span several points, so ``n0 = 100``
        selection samples do not cost a small forward pass per point."""
        b, c = x.shape[0], None
        total = b * num
        counts: Tensor | None = None
        with torch.no_grad(), eval_mode(model):
            for start in range(0, total, self.batch_size):
                rows = torch.arange(start, min(start + self.batch_size, total), device=x.device)
                owner = rows // num                                   # (k,) the point of each row
                xb = x[owner]
                noise = torch.randn(xb.shape, generator=generator, device=x.device, dtype=x.dtype)
                logits = model(xb + self.sigma * noise)
                pred = logits.argmax(1)
                if counts is None:
                    c = int(logits.shape[1])
                    counts = torch.zeros(b * c, dtype=torch.int64, device=x.device)
                counts += torch.bincount(owner * c + pred, minlength=b * c)
        assert counts is not None and c is not None
        return counts.view(b, c)

    def _check(self, model: nn.Module, x: Tensor) -> None:
        check_model(model)
        if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor (B, ...) of inputs, got "
                             f"{type(x).__name__ if not isinstance(x, Tensor) else tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf")

    def certify(self, model: nn.Module, x: Tensor, *, generator: torch.Generator | None = None) -> Certificate:
        """Cohen et al.'s CERTIFY for each point of ``x`` (see the module docstring)."""
        from scipy.stats import beta, norm

        self._check(model, x)
        gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        guess = self._counts(model, x, self.n0, gen).argmax(1)
        counts = self._counts(model, x, self.n, gen)
        k = counts.gather(1, guess[:, None]).squeeze(1).cpu().numpy()
        # one-sided (1 - alpha) Clopper-Pearson lower bound: Beta(alpha; k, n - k + 1), 0 when k = 0
        lower = torch.tensor([0.0 if ki == 0 else float(beta.ppf(self.alpha, ki, self.n - ki + 1)) for ki in k],
                             dtype=torch.float64, device=x.device)
        certified = lower > 0.5
        radius = torch.where(certified, self.sigma * torch.tensor(norm.ppf(lower.clamp(0.5, 1 - 1e-16).cpu().numpy()),
                                                                  dtype=torch.float64, device=x.device),
                             torch.zeros_like(lower))
        pred = torch.where(certified, guess, torch.full_like(guess, -1))
        return Certificate(pred=pred, radius=radius, p_lower=lower, counts=counts, sigma=float(self.sigma),
                           n=self.n, n0=self.n0, alpha=float(self.alpha))

    def predict(self, model: nn.Module, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Cohen et al.'s PREDICT: the top class of ``n`` noisy samples if a two-sided binomial
        test separates it from the runner-up at level ``alpha``, else -1 (abstain)."""
        from scipy.stats import binomtest

        self._check(model, x)
        gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        counts = self._counts(model, x, self.n, gen)
        top2 = counts.topk(2, dim=1)
        out = top2.indices[:, 0].clone()
        for i in range(x.shape[0]):
            a, b = int(top2.values[i, 0]), int(top2.values[i, 1])
            if binomtest(a, a + b, 0.5).pvalue > self.alpha:
                out[i] = -1
        return out
