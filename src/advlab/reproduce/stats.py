"""The tests behind the verdicts: paired comparisons on the same points, and intervals for a rate.

* :func:`sign_test` — the exact two-sided sign (McNemar) test on paired outcomes: of the ``b``
  units where A did better (succeeded where B failed, or a higher per-unit rate) and the ``c``
  where B did, is the split further from ``b = c`` than chance (Binomial(b + c, ½))? The units
  are data points: replicates of one point (seeds, targets) are averaged into its rate first.
* :func:`paired_bootstrap` — a percentile 95% interval of ``mean(A) − mean(B)`` over units resampled
  with replacement (seeded, 2,000 resamples by default).
* :func:`wilson` — the Wilson score 95% interval of a binomial rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two attacks (or models) over the same units.

    ``a``, ``b``: the two rates; ``a_only``, ``b_only``: the discordant counts; ``p``: the exact
    two-sided sign-test p-value; ``low``, ``high``: the paired-bootstrap 95% interval of ``a − b``."""

    a: float
    b: float
    n: int
    a_only: int
    b_only: int
    p: float
    low: float
    high: float

    @property
    def diff(self) -> float:
        return self.a - self.b

    def greater(self, alpha: float = 0.05) -> bool:
        """A is higher than B, significantly (sign test, two-sided, at ``alpha``)."""
        return self.a_only > self.b_only and self.p < alpha

    def lower(self, alpha: float = 0.05) -> bool:
        """A is lower than B, significantly."""
        return self.a_only < self.b_only and self.p < alpha

    def text(self, name_a: str, name_b: str) -> str:
        return (f"{name_a} {100 * self.a:.1f}% vs {name_b} {100 * self.b:.1f}% (n = {self.n}; "
                f"{self.a_only} vs {self.b_only} discordant; sign test p {_p(self.p)}; paired bootstrap "
                f"95% CI of the difference [{100 * self.low:+.1f}, {100 * self.high:+.1f}] points)")


def _p(p: float) -> str:
    return f"= {p:.2g}" if p >= 1e-4 else "< 1e-4"


def sign_test(b: int, c: int) -> float:
    """Exact two-sided sign-test p-value for ``b`` vs ``c`` discordant pairs (1.0 when none)."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled (capped at 1); exact in integers
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, resamples: int = 2000,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of ``mean(a) − mean(b)``, resampling the paired units."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be paired 1-D arrays, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    d = (a[idx] - b[idx]).mean(axis=1)
    return float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, seed: int = 0) -> Paired:
    """Paired comparison of outcomes ``a`` and ``b`` on the same units.

    Binary outcomes (booleans) are McNemar's setting; real values per unit (a point's success
    averaged over replicates: seeds, targets; or a measured quantity such as a mean cosine) are
    compared by the sign of each unit's difference, the classical sign test, ties dropped. Either way ``a_only`` counts the units where A is
    higher, ``b_only`` those where B is."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be paired 1-D arrays, got shapes {a.shape} and {b.shape}")
    a, b = a.astype(float), b.astype(float)
    if a.size and (not np.isfinite(a).all() or not np.isfinite(b).all()):
        raise ValueError("a and b must be finite per-unit outcomes (booleans, rates or measured values), got NaN or inf")
    a_only, b_only = int((a > b).sum()), int((b > a).sum())
    low, high = paired_bootstrap(a, b, seed=seed)
    n = int(a.size)
    return Paired(a=float(a.mean()) if n else math.nan, b=float(b.mean()) if n else math.nan, n=n,
                  a_only=a_only, b_only=b_only, p=sign_test(a_only, b_only), low=low, high=high)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of ``successes / n``."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


__all__ = ["Paired", "compare", "paired_bootstrap", "sign_test", "wilson"]
