"""Theorem 1 of Fawzi, Fawzi & Fawzi (NeurIPS 2018) in closed form: eq. (6), eq. (4) and the
medians they bound (see :mod:`advlab.evaluation.theory` for the setting)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

SQRT_HALF_PI = math.sqrt(math.pi / 2)
#: ``η / L`` at which eq. (6) equals 1/2: ``√(2 ln(2 √(π/2))) = √(ln 2π) ≈ 1.3557``.
MEDIAN_FACTOR = math.sqrt(math.log(2 * math.pi))



def _check_lipschitz(L: Any) -> float:
    if isinstance(L, bool) or not isinstance(L, (int, float, np.floating, np.integer)):
        raise TypeError(f"L must be a number (the generator's Lipschitz constant), got {type(L).__name__}")
    L = float(L)
    if not (math.isfinite(L) and L > 0):
        raise ValueError(f"L must be a finite number > 0 (the generator's Lipschitz constant), got {L!r}")
    return L


def _check_eta(eta: Any) -> tuple[np.ndarray, bool]:
    if isinstance(eta, Tensor):
        eta = eta.detach().cpu().double().numpy()
    scalar = np.ndim(eta) == 0
    try:
        arr = np.asarray(eta, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"eta must be a number or an array of numbers, got {type(eta).__name__}") from None
    if np.isnan(arr).any():
        raise ValueError("eta contains NaN; eta is a radius >= 0")
    if (arr < 0).any():
        raise ValueError(f"eta must be >= 0 (a radius), got min {arr.min():g}")
    return arr, scalar


def _out(values: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(values) if scalar else values


def fawzi_bound(eta: float | Sequence[float] | np.ndarray | Tensor, L: float) -> float | np.ndarray:
    """Theorem 1, eq. (6): ``P(r_in(x) <= η) >= max(0, 1 - √(π/2) · exp(-(η/L)² / 2))``.

    Holds for every classifier whose classes each have probability at most 1/2 under ``g``,
    when ``g`` is ``L``-Lipschitz. ``eta`` (``>= 0``, ``inf`` allowed) may be a number (a float is
    returned) or an array (an array is returned). With ``L = 1`` it bounds robustness in latent space.

    Example:
        >>> fawzi_bound(2.0, 1.0)                 # 1 - 1.2533 * exp(-2)
        0.8303...
    """
    L = _check_lipschitz(L)
    arr, scalar = _check_eta(eta)
    with np.errstate(over="ignore", under="ignore"):
        bound = 1.0 - SQRT_HALF_PI * np.exp(-0.5 * (arr / L) ** 2)
    return _out(np.clip(bound, 0.0, 1.0), scalar)


def _check_class_probs(class_probs: Any) -> np.ndarray:
    p = np.asarray(class_probs.detach().cpu() if isinstance(class_probs, Tensor) else class_probs,
                   dtype=float)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"class_probs must be K >= 2 probabilities P(f(g(z)) = i), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"class_probs must lie in [0, 1], got {p.tolist()}")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"class_probs must sum to 1, got {p.sum():.8g}")
    return p


def fawzi_bound_classwise(eta: float | Sequence[float] | np.ndarray | Tensor, L: float, *,
                          class_probs: Sequence[float] | np.ndarray | Tensor) -> float | np.ndarray:
    """Theorem 1, eq. (4), the general multi-class form (no balance assumption):

        P(r_in(x) <= η) >= Σ_i [Φ(a_i + η/L) - Φ(a_i)],   a_i = Φ^{-1}(P(f(g(z)) != i))

    ``class_probs[i] = P(f(g(z)) = i)`` (``K`` values summing to 1; estimate them by sampling). A
    class that is never predicted contributes 0; a classifier with a single class gets the bound 0.
    When every ``class_probs[i] <= 1/2`` this is at least :func:`fawzi_bound`.
    """
    L = _check_lipschitz(L)
    arr, scalar = _check_eta(eta)
    p = _check_class_probs(class_probs)
    a = _ndtri(np.clip(1.0 - p, 0.0, 1.0))  # ±inf for p in {0, 1}
    t = (arr / L)[..., None]
    with np.errstate(invalid="ignore"):
        terms = _ndtr(a + t) - _ndtr(a)
    terms = np.where(np.isnan(terms), 0.0, terms)  # inf - inf: a never-predicted class and η = inf
    return _out(np.clip(terms.sum(axis=-1), 0.0, 1.0), scalar)


def _ndtr(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF Φ in float64 (torch.special, so scipy is not a runtime dependency)."""
    return torch.special.ndtr(torch.as_tensor(x, dtype=torch.float64)).numpy()


def _ndtri(p: np.ndarray) -> np.ndarray:
    """Φ^{-1} in float64; ``-inf`` at 0 and ``inf`` at 1."""
    return torch.special.ndtri(torch.as_tensor(p, dtype=torch.float64)).numpy()


def median_upper_bound(L: float) -> float:
    """``L · √(ln 2π)``: the η at which eq. (6) equals 1/2, an upper bound on the median of ``r_in``
    over ``x = g(z)`` for every (balanced) classifier; ``L = 1`` gives the latent-space bound."""
    return _check_lipschitz(L) * MEDIAN_FACTOR


def median_upper_bound_classwise(L: float, *, class_probs: Sequence[float] | np.ndarray | Tensor) -> float:
    """The η at which eq. (4) reaches 1/2 for the given class frequencies (bisection to 1e-10
    relative); ``inf`` when it never does (a classifier that predicts one class only)."""
    L = _check_lipschitz(L)
    p = _check_class_probs(class_probs)
    if float(fawzi_bound_classwise(1e6, 1.0, class_probs=p)) < 0.5:
        return math.inf
    lo, hi = 0.0, 1.0
    while float(fawzi_bound_classwise(hi, 1.0, class_probs=p)) < 0.5:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(fawzi_bound_classwise(mid, 1.0, class_probs=p)) >= 0.5:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-10 * hi:
            break
    return L * hi



def _check_disagreement(delta: Any) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating, np.integer)):
        raise TypeError(f"delta must be a number (the disagreement P(f(g(z)) != h(g(z)))), "
                        f"got {type(delta).__name__}")
    delta = float(delta)
    if not (0.0 <= delta <= 1.0):
        raise ValueError(f"delta must be a probability in [0, 1] (the disagreement P(f(g(z)) != h(g(z)))), "
                         f"got {delta!r}")
    return delta


def transfer_bound(eta: float | Sequence[float] | np.ndarray | Tensor, L: float, *,
                   delta: float) -> float | np.ndarray:
    """Theorem 3 (transferability of perturbations):
    ``P(∃ v, ||v||_2 <= η: f(x + v) != f(x) and h(x + v) != h(x)) >= max(0, 1 - √(π/2) e^{-(η/L)²/2} - 2δ)``.

    Fawzi, Fawzi & Fawzi (NeurIPS 2018), Theorem 3, as stated in the seed review
    (``/work/shared/seeds``: "THEOREM 3. TRANSFERABILITY OF PERTURBATIONS"): for two classifiers
    ``f`` and ``h`` that disagree on generated data with probability at most ``δ``,
    ``P(f(g(z)) != h(g(z))) <= δ``, with balanced classes (every ``P(f = i) <= 1/2``) and an
    ``L``-Lipschitz generator (``ω^{-1}(η) = η / L``), a single perturbation ``v`` of norm at most
    ``η`` fools both at ``x = g(z)`` with at least this probability. It is eq. (6) of Theorem 1
    (:func:`fawzi_bound`) less ``2δ``: the price of the points where ``f`` and ``h`` disagree, at
    ``x`` and at ``x + v``. ``δ = 0`` (the same classifier twice) gives back eq. (6); it is vacuous
    (0) for ``δ >= 1/2``. ``L = 1`` bounds perturbations in latent space.

    Example:
        >>> transfer_bound(2.0, 1.0, delta=0.05)   # 1 - 1.2533 * exp(-2) - 0.1
        0.7303...
    """
    L = _check_lipschitz(L)
    delta = _check_disagreement(delta)
    arr, scalar = _check_eta(eta)
    with np.errstate(over="ignore", under="ignore"):
        bound = 1.0 - SQRT_HALF_PI * np.exp(-0.5 * (arr / L) ** 2) - 2.0 * delta
    return _out(np.clip(bound, 0.0, 1.0), scalar)
