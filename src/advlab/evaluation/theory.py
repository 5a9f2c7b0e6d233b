"""Fawzi, Fawzi & Fawzi (NeurIPS 2018), "Adversarial vulnerability for any classifier": the bounds
and the measurements that test them.

Setting. Data are ``x = g(z)`` with ``z ~ N(0, I_d)`` and a generator ``g: R^d -> [0, 1]^D`` that is
``L``-Lipschitz, ``||g(z) - g(z')||_2 <= L ||z - z'||_2``. For a classifier ``f`` the paper defines,
at ``x = g(z)``,

* the in-distribution robustness ``r_in(x) = min_r ||g(z + r) - x||_2  s.t.  f(g(z + r)) != f(x)``,
  the distance to the closest *generated* image of another class (eq. 2 of the seed);
* the unconstrained robustness ``r_unc(x) = min_r ||r||_2  s.t.  f(x + r) != f(x)`` (eq. 3); since
  ``g(z + r)`` is itself an input, ``r_unc(x) <= r_in(x)``;
* and, in its experiments, the robustness in latent space ``min_r ||r||_2 s.t. f(g(z + r)) != f(x)``.

Theorem 1 bounds ``r_in`` for *every* ``f``: with ``a_i = Φ^{-1}(P(f(g(z)) != i))``,

    P(r_in(x) <= η) >= Σ_i [Φ(a_i + η/L) - Φ(a_i)]                       (eq. 4, fawzi_bound_classwise)
    P(r_in(x) <= η) >= 1 - √(π/2) · exp(-(η/L)² / 2)    if every P(f = i) <= 1/2   (eq. 6, fawzi_bound)

so the median of ``r_in`` is at most ``L · √(ln 2π) ≈ 1.3557 L`` (where eq. 6 reaches 1/2). In latent
space the same theorem with the identity generator (``L = 1``) bounds the latent robustness.

What this module computes, and how each number relates to the quantity it names:

* :func:`fawzi_bound`, :func:`fawzi_bound_classwise`, :func:`median_upper_bound`: closed forms.
* :func:`lipschitz_estimate`: an empirical *lower* estimate of ``L`` (every number it reports is a
  ratio or a Jacobian norm the generator really attains). Using it in the bound makes the bound
  larger than the one with the true ``L`` (the bound decreases in ``L``).
* :func:`latent_search`, :func:`measure_robustness`: every reported robustness is the size of a
  perturbation that was found and *verified* to change the label, so it is an *upper* bound on the
  true minimum (like any attack), made tight along its direction by bisection.
* :func:`bounds_table`: the seed's table (latent, in-distribution and unconstrained robustness per
  classifier next to the theorem's upper bounds) as a :class:`BoundsTable` with provenance, the
  empirical CDFs of ``r_in`` and the bound curves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab._checks import check_model, eval_mode, model_device
from advlab.losses import cw_margin
from advlab.threat import _view, lp_norm

log = logging.getLogger(__name__)

__all__ = [
    "MEDIAN_FACTOR", "ROWS", "BoundsTable", "GenerativeRobustness", "LatentSearch", "LatentSearchResult",
    "LipschitzEstimate", "bounds_table", "default_unconstrained_attacks", "fawzi_bound",
    "fawzi_bound_classwise", "latent_search", "lipschitz_estimate", "measure_robustness",
    "median_upper_bound", "median_upper_bound_classwise", "pgd_radius_search",
]

Generator = Callable[[Tensor], Tensor]

SQRT_HALF_PI = math.sqrt(math.pi / 2)
#: ``η / L`` at which eq. (6) equals 1/2: ``√(2 ln(2 √(π/2))) = √(ln 2π) ≈ 1.3557``.
MEDIAN_FACTOR = math.sqrt(math.log(2 * math.pi))

# A point counts as misclassified only when its margin exceeds this fraction of its largest |logit|,
# so that re-evaluating it in another batch (float32 noise ~1e-6 relative) gives the same label.
MARGIN_RTOL = 1e-5


# -- the closed forms -----------------------------------------------------------------------------


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


# -- generator helpers ----------------------------------------------------------------------------


def _check_latent_dim(latent_dim: Any) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
    return latent_dim


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _module_of(g: Any) -> nn.Module | None:
    if isinstance(g, nn.Module):
        return g
    owner = getattr(g, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _generator_device(g: Generator) -> torch.device:
    module = _module_of(g)
    dev = model_device(module) if module is not None else None
    return dev if dev is not None else torch.device("cpu")


@contextlib.contextmanager
def _frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode for each module (restored afterwards), gradients enabled for the inputs."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            if m is not None:
                stack.enter_context(eval_mode(m))
        stack.enter_context(torch.enable_grad())
        yield


def _check_generator(g: Any, latent_dim: int, device: torch.device) -> tuple[int, ...]:
    """Run ``g`` on two codes; return its sample shape. Raises a ValueError a person can act on."""
    if not callable(g):
        raise TypeError(f"g must be a callable mapping latent codes (B, d) to inputs (B, ...), "
                        f"got {type(g).__name__}")
    z = torch.zeros(2, latent_dim, device=device)
    try:
        with torch.no_grad():
            x = g(z)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(f"the generator failed on latent codes of shape (2, {latent_dim}) ({err}); "
                         "check latent_dim") from err
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"the generator must return a batch (B, ...) for codes (B, {latent_dim}), got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the generator returned NaN or Inf")
    return tuple(x.shape[1:])


def _classifier_shape(f: nn.Module) -> tuple[int, ...] | None:
    for m in (f, getattr(f, "model", None)):
        shape = getattr(m, "in_shape", None)
        if shape is not None:
            return tuple(int(s) for s in shape)
    return None


def _clearly_flipped(logits: Tensor, label: Tensor) -> Tensor:
    """``(B,)`` bool: the predicted class differs from ``label`` by a margin that survives rounding."""
    margin = cw_margin(logits, label)
    return margin > MARGIN_RTOL * logits.detach().abs().amax(dim=1)


# -- the Lipschitz constant -----------------------------------------------------------------------


@dataclass(frozen=True)
class LipschitzEstimate:
    """An empirical lower estimate of the generator's Lipschitz constant (see :func:`lipschitz_estimate`).

    Attributes:
        value: ``max(pair_ratio, jacobian_norm)``; ``float(estimate)`` gives it.
        pair_ratio: the largest ``||g(z) - g(z')|| / ||z - z'||`` over the random pairs.
        jacobian_norm: the largest ``||J_g(z) v||`` (unit ``v``, after power iteration) over the
            start points and every gradient-ascent iterate.
        z_argmax: ``(d,)`` where ``jacobian_norm`` was attained.
        settings: the arguments of the run.
    """

    value: float
    pair_ratio: float
    jacobian_norm: float
    z_argmax: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "pair_ratio": self.pair_ratio, "jacobian_norm": self.jacobian_norm,
                "z_argmax": self.z_argmax.tolist(), "settings": dict(self.settings)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LipschitzEstimate:
        return cls(value=float(data["value"]), pair_ratio=float(data["pair_ratio"]),
                   jacobian_norm=float(data["jacobian_norm"]), z_argmax=torch.tensor(data["z_argmax"]),
                   settings=dict(data.get("settings", {})))


def _flat_norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)


def _power_iteration(g: Generator, z: Tensor, v: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """``iterations`` steps of ``v <- J^T J v / ||J^T J v||`` per sample (one jvp and one vjp each);
    returns the unit vectors ``(B, d)`` and ``||J v||`` ``(B,)``, each a lower bound on σ_max(J)."""
    z = z.detach()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    for _ in range(iterations):
        _, jv = torch.func.jvp(g, (z,), (v,))
        _, vjp_fn = torch.func.vjp(g, z)
        (w,) = vjp_fn(jv.detach())
        w = w.detach()
        norm = w.norm(dim=1, keepdim=True)
        v = torch.where(norm > 1e-30, w / norm.clamp_min(1e-30), v)
    _, jv = torch.func.jvp(g, (z,), (v,))
    return v, _flat_norm(jv.detach())


def lipschitz_estimate(g: Generator, *, latent_dim: int, samples: int = 256,
                       generator: torch.Generator | None = None, ascent_starts: int = 16,
                       ascent_steps: int = 30, step_size: float = 0.1, power_iterations: int = 30,
                       batch_size: int = 256) -> LipschitzEstimate:
    """An empirical lower estimate of ``L = sup_{z != z'} ||g(z) - g(z')||_2 / ||z - z'||_2``.

    For a differentiable ``g`` on ``R^d`` this supremum equals ``sup_z σ_max(J_g(z))`` (the mean-value
    inequality bounds every ratio by it, and ratios over shrinking pairs approach it). The estimate is
    the largest value actually attained by

    1. ratios over ``samples`` random pairs at three scales: independent ``z, z' ~ N(0, I)``, and
       ``z' = z + s u`` with ``u`` a random unit vector and ``s = 1`` and ``s = 0.01``;
    2. ``σ(z) = ||J_g(z) v||`` at ``samples`` points ``z ~ N(0, I)``, ``v`` from ``power_iterations``
       steps of power iteration on ``J^T J`` (autograd jvp/vjp, no Jacobian is formed);
    3. normalised gradient ascent of ``σ(z)`` (``z <- z + step_size · ∇σ / ||∇σ||``, ``ascent_steps``
       steps, power iteration warm-started, 3 steps per iterate) from the ``ascent_starts`` best
       points of (2), recording ``σ`` at every iterate.

    Every recorded number is attained by ``g``, so the estimate is a lower bound on the true ``L``
    over ``R^d`` (the ascent may leave the Gaussian bulk; that is allowed, Theorem 1 needs the global
    constant). On an affine ``g(z) = A z + b`` it returns ``σ_max(A)`` to power-iteration accuracy.
    ``g`` must act on each sample independently (no batch-norm in training mode); a module or a bound
    method of a module is put in eval mode for the call and restored. Nothing of ``g`` is changed and
    the global RNG is not used.

    Args:
        g: maps ``(B, latent_dim)`` to ``(B, ...)``.
        latent_dim: ``d >= 1``.
        samples: random pairs and Jacobian start points.
        generator: draws the codes and directions; default: a new one seeded with 0.
    """
    latent_dim = _check_latent_dim(latent_dim)
    _positive_int("samples", samples)
    _positive_int("ascent_starts", ascent_starts, 0)
    _positive_int("ascent_steps", ascent_steps, 0)
    _positive_int("power_iterations", power_iterations)
    _positive_int("batch_size", batch_size)
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a number > 0, got {step_size!r}")
    device = _generator_device(g)
    _check_generator(g, latent_dim, device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    settings = {"samples": samples, "ascent_starts": ascent_starts, "ascent_steps": ascent_steps,
                "step_size": float(step_size), "power_iterations": power_iterations}

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=device)

    pair_best = 0.0
    jac_best, z_best = 0.0, torch.zeros(latent_dim)
    starts: list[tuple[float, Tensor, Tensor]] = []
    with _frozen(_module_of(g)):
        for i in range(0, samples, batch_size):
            b = min(batch_size, samples - i)
            z = randn(b, latent_dim)
            u = randn(b, latent_dim)
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-30)
            with torch.no_grad():
                gz = g(z)
                for z2 in (randn(b, latent_dim), z + u, z + 0.01 * u):
                    ratio = _flat_norm(g(z2) - gz) / (z2 - z).norm(dim=1).clamp_min(1e-30)
                    pair_best = max(pair_best, float(ratio.max()))
            v, sigma = _power_iteration(g, z, randn(b, latent_dim), power_iterations)
            k = int(sigma.argmax())
            if float(sigma[k]) > jac_best:
                jac_best, z_best = float(sigma[k]), z[k].detach().cpu()
            starts.extend((float(s), zz, vv) for s, zz, vv in zip(sigma, z, v))
        starts.sort(key=lambda t: -t[0])
        starts = starts[:ascent_starts]
        if starts and ascent_steps:
            z = torch.stack([s[1] for s in starts])
            v = torch.stack([s[2] for s in starts])
            for _ in range(ascent_steps):
                z = z.detach().requires_grad_(True)
                _, jv = torch.func.jvp(g, (z,), (v,))
                (grad,) = torch.autograd.grad(_flat_norm(jv).sum(), z)
                step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
                z = (z + step_size * step).detach()
                v, sigma = _power_iteration(g, z, v, 3)
                k = int(sigma.argmax())
                if float(sigma[k]) > jac_best:
                    jac_best, z_best = float(sigma[k]), z[k].detach().cpu()
    return LipschitzEstimate(value=max(pair_best, jac_best), pair_ratio=pair_best, jacobian_norm=jac_best,
                             z_argmax=z_best, settings=settings)


# -- minimal perturbations in latent space --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LatentSearch:
    """How :func:`latent_search` looks for the smallest label-changing latent perturbation.

    Attributes:
        steps: DeepFool iterations in latent space (phase 1).
        candidates: classes (besides the current one) linearised per DeepFool step, those with
            the highest logits; ``None`` for all.
        targets: after the untargeted search, restart the three phases aimed at each of the
            ``targets`` classes with the highest clean logits (the boundary has several local
            minima of the distance; each restart can only lower the result); 0 for none.
        overshoot: DeepFool's overshoot (removed again by the bisection).
        bisection_steps: halvings of the scale along each ray (phase 2 and after each refinement):
            the result is within ``2^-bisection_steps`` (relative) of the ray's first label change.
        refine_steps: boundary refinements (phase 3): linearise at the current boundary point and
            move to the cheapest point of that tangent plane, keep it if a bisection along its ray
            finds a smaller label-changing perturbation.
        refine_reach: the refinement's ray is searched on ``[0, refine_reach]`` times the
            tangent-plane point.
    """

    steps: int = 50
    candidates: int | None = 4
    targets: int = 3
    overshoot: float = 0.02
    bisection_steps: int = 12
    refine_steps: int = 10
    refine_reach: float = 1.25

    def __post_init__(self) -> None:
        _positive_int("steps", self.steps)
        if self.candidates is not None:
            _positive_int("candidates", self.candidates)
        _positive_int("targets", self.targets, 0)
        if not (isinstance(self.overshoot, (int, float)) and math.isfinite(self.overshoot)
                and self.overshoot >= 0):
            raise ValueError(f"overshoot must be a number >= 0, got {self.overshoot!r}")
        _positive_int("bisection_steps", self.bisection_steps)
        _positive_int("refine_steps", self.refine_steps, 0)
        if not (isinstance(self.refine_reach, (int, float)) and self.refine_reach >= 1):
            raise ValueError(f"refine_reach must be a number >= 1, got {self.refine_reach!r}")


@dataclass(frozen=True)
class LatentSearchResult:
    """Per point: the latent perturbation found ``r`` ``(B, d)`` (zeros where none), whether it
    changes the label ``found`` ``(B,)``, and its ``cost`` ``(B,)`` (``inf`` where not found):
    ``||r||_2`` for ``metric="latent"``, ``||g(z + r) - g(z)||_2`` for ``metric="input"``."""

    r: Tensor
    found: Tensor
    cost: Tensor
    metric: str
    forwards: int


class _Problem:
    """``f ∘ g`` around fixed codes ``z`` with fixed labels; costs of latent perturbations."""

    def __init__(self, f: nn.Module, g: Generator, z: Tensor, label: Tensor, metric: str) -> None:
        self.f, self.g, self.z, self.label, self.metric = f, g, z.detach(), label, metric
        with torch.no_grad():
            self.x = g(self.z)
        self.forwards = 0

    def flipped(self, idx: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Clearly flipped ``(b,)`` and the images ``g(z + r)`` for the points ``idx``."""
        with torch.no_grad():
            xs = self.g(self.z[idx] + r)
            logits = self.f(xs)
        self.forwards += 1
        return _clearly_flipped(logits, self.label[idx]), xs

    def cost(self, idx: Tensor, r: Tensor, xs: Tensor | None = None) -> Tensor:
        if self.metric == "latent":
            return r.norm(dim=1)
        if xs is None:
            with torch.no_grad():
                xs = self.g(self.z[idx] + r)
        return _flat_norm(xs - self.x[idx])

    def jacobian(self, zs: Tensor) -> Tensor:
        """``J_g`` at ``zs``: ``(b, D, d)``, one jvp per latent direction."""
        d = zs.shape[1]
        cols = []
        for i in range(d):
            e = torch.zeros_like(zs)
            e[:, i] = 1.0
            _, jv = torch.func.jvp(self.g, (zs.detach(),), (e,))
            cols.append(jv.detach().reshape(zs.shape[0], -1))
        return torch.stack(cols, dim=2)

    def margins(self, idx: Tensor, r: Tensor, classes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Logits ``(b, K)``, margins ``z_k - z_label`` ``(b, k)`` and their latent gradients
        ``(b, k, d)`` at ``z + r`` for the classes ``classes`` ``(b, k)``."""
        zs = (self.z[idx] + r).detach().requires_grad_(True)
        logits = self.f(self.g(zs))
        self.forwards += 1
        lab = self.label[idx]
        m = logits.gather(1, classes) - logits.gather(1, lab[:, None])
        grads = []
        for j in range(classes.shape[1]):
            (gj,) = torch.autograd.grad(m[:, j].sum(), zs, retain_graph=j < classes.shape[1] - 1)
            grads.append(gj)
        return logits.detach(), m.detach(), torch.stack(grads, dim=1)


def _metric_solve(M: Tensor | None, a: Tensor) -> Tensor:
    """``M^{-1} a`` per sample, ``a`` ``(b, k, d)``; ``M`` ``(b, d, d)`` or ``None`` for the identity."""
    if M is None:
        return a
    return torch.linalg.solve(M[:, None], a.unsqueeze(-1)).squeeze(-1)


def _gram(J: Tensor) -> Tensor:
    M = J.transpose(1, 2) @ J  # (b, d, d)
    ridge = 1e-6 * M.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
    return M + ridge[:, None, None] * torch.eye(M.shape[1], dtype=M.dtype, device=M.device)


def _bisect_rays(prob: _Problem, idx: Tensor, ray: Tensor, hi: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Smallest ``t`` in ``(0, hi]`` with a label change at ``t · ray`` (``hi`` must change it);
    returns ``t_hi`` ``(b,)`` (changes the label) and ``t_lo`` (does not, unless the ray re-enters)."""
    lo = torch.zeros_like(hi)
    for _ in range(steps):
        mid = (lo + hi) / 2
        flip, _ = prob.flipped(idx, mid[:, None] * ray)
        hi = torch.where(flip, mid, hi)
        lo = torch.where(flip, lo, mid)
    return hi, lo


def latent_search(f: nn.Module, g: Generator, z: Tensor, *, label: Tensor | None = None,
                  metric: Literal["latent", "input"] = "latent", config: LatentSearch | None = None,
                  ) -> LatentSearchResult:
    """The smallest latent perturbation ``r`` found with ``f(g(z + r)) != f(g(z))``, per point.

    ``metric="latent"`` minimises ``||r||_2`` (the paper's robustness in Z-space);
    ``metric="input"`` minimises ``||g(z + r) - g(z)||_2``, the in-distribution robustness ``r_in``
    of eq. (2). Three phases, all batched:

    1. DeepFool (Moosavi-Dezfooli et al. 2016) in latent space: linearise the margins
       ``m_k = z_k - z_label`` of ``f ∘ g`` and step to the closest linearised boundary, closest in
       the metric: ``Δ = -m_l · M^{-1} ∇m_l / (∇m_l^T M^{-1} ∇m_l)``, ``M = I`` (latent) or
       ``J_g^T J_g`` at the current point (input); until the label changes or ``steps`` run out.
    2. Bisection on the scale ``t`` of the perturbation found: the smallest ``t · r`` (within
       ``2^-bisection_steps``) that still changes the label, which removes DeepFool's overshoot.
    3. ``refine_steps`` boundary refinements: at the current point ``r_b`` linearise the margin of
       the new class, ``m(r) ≈ m_b + n·(r - r_b)``, and the cost (``||r||``, or
       ``||g(z + r_b) - x + J (r - r_b)||``), move to the cheapest point of ``m = 0`` and bisect along
       its ray on ``[0, refine_reach]``; the new point is kept only if it changes the label and costs
       less.

    Every returned ``r`` changes the label by a clear margin (``found``); its cost is therefore an
    upper bound on the true minimum, and along its own ray it is minimal to the bisection's precision.

    Args:
        f: classifier on ``g``'s outputs, returning logits.
        g: generator ``(B, d) -> (B, ...)``.
        z: latent codes ``(B, d)``.
        label: the classes to move away from; default ``f(g(z)).argmax(1)``.
    """
    config = config or LatentSearch()
    if metric not in ("latent", "input"):
        raise ValueError(f"metric must be 'latent' or 'input', got {metric!r}")
    check_model(f)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError(f"z must be a float tensor of latent codes (B, d), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    with _frozen(f, _module_of(g)):
        if label is None:
            with torch.no_grad():
                label = f(g(z)).argmax(dim=1)
        prob = _Problem(f, g, z, label, metric)
        return _search(prob, config)


def _search(prob: _Problem, cfg: LatentSearch) -> LatentSearchResult:
    """The untargeted search, then one targeted search per class among the ``cfg.targets`` with the
    highest clean logits; per point, the cheapest label-changing perturbation of all runs."""
    best = _search_once(prob, cfg, None)
    if cfg.targets:
        with torch.no_grad():
            logits = prob.f(prob.x)
        prob.forwards += 1
        k = min(cfg.targets, logits.shape[1] - 1)
        ranked = logits.scatter(1, prob.label[:, None], -math.inf).topk(k, dim=1).indices  # (B, k)
        for j in range(k):
            run = _search_once(prob, cfg, ranked[:, j])
            better = run.cost < best.cost
            best = LatentSearchResult(r=torch.where(better[:, None], run.r, best.r),
                                      found=best.found | run.found,
                                      cost=torch.where(better, run.cost, best.cost), metric=best.metric,
                                      forwards=prob.forwards)
    return best


def _search_once(prob: _Problem, cfg: LatentSearch, target: Tensor | None) -> LatentSearchResult:
    z = prob.z
    b, d = z.shape
    with torch.no_grad():
        num_classes = prob.f(prob.x[:1]).shape[1]
    k = num_classes - 1 if cfg.candidates is None else min(cfg.candidates, num_classes - 1)
    if target is not None:
        k = 1
    found = torch.zeros(b, dtype=torch.bool, device=z.device)
    r_best = torch.zeros_like(z)
    cost = torch.full((b,), math.inf, device=z.device)

    # phase 1: DeepFool in latent space
    r_total = torch.zeros_like(z)
    active = torch.arange(b, device=z.device)
    for _ in range(cfg.steps):
        r_now = (1 + cfg.overshoot) * r_total[active]
        with torch.no_grad():
            logits = prob.f(prob.g(z[active] + r_now))
        prob.forwards += 1
        hit = _clearly_flipped(logits, prob.label[active])
        if bool(hit.any()):
            r_best[active[hit]] = r_now[hit]
            found[active[hit]] = True
        active, logits = active[~hit], logits[~hit]
        if active.numel() == 0:
            break
        lab = prob.label[active]
        if target is None:
            classes = logits.scatter(1, lab[:, None], -math.inf).topk(k, dim=1).indices  # (b', k)
        else:  # towards one class; any label change still counts as found
            classes = target[active][:, None]
        _, m, a = prob.margins(active, r_total[active] * (1 + cfg.overshoot), classes)
        M = _gram(prob.jacobian(z[active] + r_total[active] * (1 + cfg.overshoot))) \
            if prob.metric == "input" else None
        Ma = _metric_solve(M, a)  # (b', k, d)
        quad = (a * Ma).sum(dim=2).clamp_min(1e-30)  # a^T M^-1 a
        dist = m.abs() / quad.sqrt()
        best = dist.argmin(dim=1)
        rows = torch.arange(active.numel(), device=z.device)
        step = (m[rows, best].abs() / quad[rows, best] + 1e-4 / quad[rows, best].sqrt())[:, None] \
            * Ma[rows, best]
        r_total[active] = r_total[active] + step
    # phase 2: bisection along each ray
    idx = found.nonzero().squeeze(1)
    if idx.numel():
        t_hi, _ = _bisect_rays(prob, idx, r_best[idx], torch.ones(idx.numel(), device=z.device),
                               cfg.bisection_steps)
        r_best[idx] = t_hi[:, None] * r_best[idx]
        cost[idx] = prob.cost(idx, r_best[idx])
    # phase 3: boundary refinements
    for _ in range(cfg.refine_steps if idx.numel() else 0):
        rb = r_best[idx]
        with torch.no_grad():
            new_class = prob.f(prob.g(z[idx] + rb)).argmax(dim=1)
        _, m, n = prob.margins(idx, rb, new_class[:, None])
        m, n = m[:, 0], n[:, 0]  # (b,), (b, d): margin of the new class, > 0 here
        if prob.metric == "latent":
            lam = (m - (n * rb).sum(dim=1)) / (n * n).sum(dim=1).clamp_min(1e-30)
            cand = -lam[:, None] * n
        else:
            J = prob.jacobian(z[idx] + rb)  # (b, D, d)
            M = _gram(J)
            with torch.no_grad():
                c = (prob.g(z[idx] + rb) - prob.x[idx]).reshape(idx.numel(), -1)  # (b, D)
            Jc = (J.transpose(1, 2) @ c[:, :, None]).squeeze(2)  # (b, d)
            Mn = _metric_solve(M, n[:, None])[:, 0]
            MJc = _metric_solve(M, Jc[:, None])[:, 0]
            lam = (m - (n * MJc).sum(dim=1)) / (n * Mn).sum(dim=1).clamp_min(1e-30)
            cand = rb - MJc - lam[:, None] * Mn
        reach = torch.full((idx.numel(),), float(cfg.refine_reach), device=z.device)
        ok, _ = prob.flipped(idx, reach[:, None] * cand)
        ok &= torch.isfinite(cand).all(dim=1)
        if not bool(ok.any()):
            continue
        sub = idx[ok]
        t_hi, _ = _bisect_rays(prob, sub, cand[ok], reach[ok], cfg.bisection_steps)
        new_r = t_hi[:, None] * cand[ok]
        new_cost = prob.cost(sub, new_r)
        better = new_cost < cost[sub]
        r_best[sub[better]] = new_r[better]
        cost[sub[better]] = new_cost[better]
    return LatentSearchResult(r=r_best.detach(), found=found, cost=cost, metric=prob.metric,
                              forwards=prob.forwards)


# -- minimal perturbations in input space ---------------------------------------------------------


def default_unconstrained_attacks() -> dict[str, Any]:
    """The L2 minimal-norm attacks used for ``r_unc``: DeepFool and FMN from
    :mod:`advlab.attacks.minimal` when it is installed, else ``{}`` (then
    :func:`pgd_radius_search` is used)."""
    try:
        from advlab.attacks.minimal import FMN, DeepFool
        return {"DeepFool": DeepFool(norm="l2", steps=50), "FMN": FMN(norm="l2", steps=100)}
    except (ImportError, TypeError, ValueError) as err:
        log.warning("advlab.attacks.minimal is unavailable (%s); r_unc falls back to a bisection over "
                    "the PGD-L2 radius (pgd_radius_search)", err)
        return {}


def _project_l2(delta: Tensor, radius: Tensor) -> Tensor:
    norms = lp_norm(delta, "l2")
    factor = torch.where(norms > radius, radius / norms.clamp_min(1e-30), torch.ones_like(norms))
    return delta * _view(factor, delta)


def pgd_radius_search(f: nn.Module, x: Tensor, label: Tensor, *, upper: Tensor, iterations: int = 10,
                      steps: int = 20, bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Per point, the smallest L2 radius (bisection over ``[0, upper]``, ``iterations`` halvings) at
    which PGD-L2 (``steps`` steps of ``2.5 ε / steps`` along ``∇CE / ||∇CE||``, from ``x``, projected
    on the per-point ball and the box) changes the label; returns the norm ``(B,)`` of the smallest
    successful perturbation, ``inf`` where PGD never succeeded. ``upper`` ``(B,)``: radii known to
    suffice (e.g. ``r_in``), the bisection's starting bracket."""
    lo_b, hi_b = bounds
    lo = torch.zeros_like(upper)
    hi = upper.clone()
    best = torch.full_like(upper, math.inf)
    with _frozen(f):
        for _ in range(iterations):
            eps = (lo + hi) / 2
            delta = torch.zeros_like(x)
            success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            norm_at = torch.full_like(upper, math.inf)
            for _s in range(steps):
                xa = (x + delta).detach().requires_grad_(True)
                logits = f(xa)
                flip = _clearly_flipped(logits.detach(), label)
                new = flip & ~success
                norm_at = torch.where(new, lp_norm(delta, "l2"), norm_at)
                success |= flip
                loss = nn.functional.cross_entropy(logits, label, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xa)
                direction = grad / _view(lp_norm(grad, "l2").clamp_min(1e-12), grad)
                step = (2.5 * eps / steps)
                delta = _project_l2(delta + _view(step, x) * direction, eps)
                delta = ((x + delta).clamp(lo_b, hi_b) - x).detach()
            with torch.no_grad():
                flip = _clearly_flipped(f(x + delta), label)
            norm_at = torch.where(flip & ~success, lp_norm(delta, "l2"), norm_at)
            success |= flip
            best = torch.minimum(best, norm_at)
            hi = torch.where(success, torch.minimum(eps, norm_at), hi)
            lo = torch.where(success, lo, eps)
    return best


def _bisect_input(f: nn.Module, x: Tensor, delta: Tensor, label: Tensor, steps: int) -> Tensor:
    """Shrink each input-space perturbation along its ray to the first label change (``delta``
    must change the label); returns the shrunk perturbations."""
    lo = torch.zeros(x.shape[0], device=x.device)
    hi = torch.ones(x.shape[0], device=x.device)
    with torch.no_grad():
        for _ in range(steps):
            mid = (lo + hi) / 2
            flip = _clearly_flipped(f(x + _view(mid, x) * delta), label)
            hi = torch.where(flip, mid, hi)
            lo = torch.where(flip, lo, mid)
    return _view(hi, x) * delta


# -- one classifier -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerativeRobustness:
    """Robustness of one classifier at the points ``x = g(z)``; every tensor is ``(n,)`` unless noted.

    Attributes:
        name: the classifier's name.
        z: ``(n, d)`` the codes; ``label``: ``f(g(z))``.
        latent: smallest latent ``||r||_2`` found that changes the label (``inf`` if none found).
        r_in: in-distribution robustness: the smallest ``||g(z + r) - g(z)||_2`` over the label-changing
            latent perturbations found (the input-metric search and the latent-minimal one).
        r_unc: unconstrained robustness: the smallest input-space ``||δ||_2`` found, over the
            L2 attacks *and* the straight segment to the in-distribution point, each shrunk along its
            ray by bisection; so ``r_unc <= r_in`` by construction.
        r_unc_attack: the attacks alone (``inf`` where none succeeded).
        r_in_latent_minimal: ``||g(z + r) - g(z)||_2`` for the latent-minimal ``r`` alone (what
            ``r_in`` would be without the input-metric search; ``r_in`` is the smaller of the two).
        x_norm, z_norm: ``||g(z)||_2`` and ``||z||_2``, for relative values.
        class_probs: ``(K,)`` frequency of each predicted class over the ``n`` samples.
        seconds: wall time of the measurement; config: the settings.
    """

    name: str
    z: Tensor
    label: Tensor
    latent: Tensor
    r_in: Tensor
    r_unc: Tensor
    r_unc_attack: Tensor
    r_in_latent_minimal: Tensor
    x_norm: Tensor
    z_norm: Tensor
    class_probs: tuple[float, ...]
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @property
    def attack_alone_le_r_in(self) -> float:
        """Fraction of points where the input-space attacks alone already give ``r_unc <= r_in``."""
        return float((self.r_unc_attack <= self.r_in).float().mean())

    def values(self, quantity: str) -> Tensor:
        return {"latent": self.latent, "r_in": self.r_in, "r_unc": self.r_unc,
                "r_unc_attack": self.r_unc_attack, "r_in_latent_minimal": self.r_in_latent_minimal}[quantity]

    def stats(self, quantity: str, *, relative: bool = False) -> dict[str, float]:
        """``median``, ``mean`` (over the points where something was found) and ``found`` count."""
        v = self.values(quantity).double()
        if relative:
            v = v / (self.z_norm if quantity == "latent" else self.x_norm).double().clamp_min(1e-30)
        ok = torch.isfinite(v)
        return {"median": float(np.median(v.cpu().numpy())),  # mean of the middle two for even n
                "mean": float(v[ok].mean()) if bool(ok.any()) else math.nan, "found": int(ok.sum())}

    _TENSORS = ("label", "latent", "r_in", "r_unc", "r_unc_attack", "r_in_latent_minimal", "x_norm", "z_norm")

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("name", "class_probs", "seconds", "config")}
        for k in self._TENSORS:
            out[k] = getattr(self, k).tolist()
        out["z"] = self.z.tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerativeRobustness:
        """Inverse of :meth:`to_dict` (JSON's ``Infinity`` for points where nothing was found)."""
        tensors = {k: torch.tensor(data[k], dtype=torch.long if k == "label" else torch.float32)
                   for k in cls._TENSORS}
        return cls(name=str(data["name"]), z=torch.tensor(data["z"], dtype=torch.float32),
                   class_probs=tuple(float(p) for p in data["class_probs"]), seconds=float(data["seconds"]),
                   config=dict(data.get("config", {})), **tensors)


def _check_shapes(f: nn.Module, sample_shape: tuple[int, ...], input_shape: Sequence[int] | None,
                  name: str) -> None:
    want = tuple(input_shape) if input_shape is not None else _classifier_shape(f)
    if want is not None and tuple(want) != tuple(sample_shape):
        raise ValueError(f"the generator makes inputs of shape {tuple(sample_shape)} but classifier "
                         f"{name!r} takes {tuple(want)}; use a generator trained on the classifier's data")


def measure_robustness(f: nn.Module, g: Generator, z: Tensor, *, name: str = "classifier",
                       search: LatentSearch | None = None, attacks: Mapping[str, Any] | None = None,
                       input_shape: Sequence[int] | None = None, num_classes: int | None = None,
                       batch_size: int = 256,
                       bounds: tuple[float, float] = (0.0, 1.0)) -> GenerativeRobustness:
    """Latent, in-distribution and unconstrained robustness of ``f`` at ``x = g(z)`` (see
    :class:`GenerativeRobustness` for what each number is).

    The reference label is ``f(g(z))`` (the generated points have no ground truth). ``attacks``:
    L2 minimal-norm attacks ``attack(model, x, y) -> AttackResult`` (default
    :func:`default_unconstrained_attacks`; when that is empty, :func:`pgd_radius_search` bracketed by
    ``r_in``). The model, ``g`` and ``z`` are left unchanged.
    """
    check_model(f)
    _positive_int("batch_size", batch_size)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError("z must be a float tensor of latent codes (n, d)")
    _check_latent_dim(int(z.shape[1]))
    sample_shape = _check_generator(g, int(z.shape[1]), z.device)
    _check_shapes(f, sample_shape, input_shape, name)
    dev = model_device(f)
    if dev is not None and dev != z.device:
        raise ValueError(f"classifier {name!r} is on {dev} but z is on {z.device}; put both on one device")
    search = search or LatentSearch()
    attacks = default_unconstrained_attacks() if attacks is None else dict(attacks)
    t0 = time.perf_counter()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("label", "latent", "r_in", "r_unc", "attack", "x_norm",
                                                      "r_in_lat")}
    with _frozen(f, _module_of(g)):
        for i in range(0, z.shape[0], batch_size):
            zb = z[i:i + batch_size].detach()
            with torch.no_grad():
                xb = g(zb)
                lo, hi = float(xb.min()), float(xb.max())
                if lo < bounds[0] or hi > bounds[1]:
                    raise ValueError(f"the generator's outputs span [{lo:.4g}, {hi:.4g}], outside the input "
                                     f"box {bounds}; end the generator with a sigmoid or pass bounds=")
                try:
                    logits = f(xb)
                except (RuntimeError, ValueError, IndexError) as err:
                    raise ValueError(f"classifier {name!r} failed on generated inputs of shape "
                                     f"{tuple(xb.shape)} ({err})") from err
            label = logits.argmax(dim=1)
            lat = _search(_Problem(f, g, zb, label, "latent"), search)
            inp = _search(_Problem(f, g, zb, label, "input"), search)
            with torch.no_grad():
                x_lat = g(zb + lat.r)
                x_inp = g(zb + inp.r)
            r_in_lat = torch.where(lat.found, _flat_norm(x_lat - xb), torch.full_like(lat.cost, math.inf))
            use_lat = r_in_lat < inp.cost
            r_in = torch.where(use_lat, r_in_lat, inp.cost)
            x_in = torch.where(_view(use_lat, xb), x_lat, x_inp)
            have_in = torch.isfinite(r_in)
            # unconstrained: the attacks, and the segment from x to the in-distribution point
            attack_norm = torch.full_like(r_in, math.inf)
            best_unc = torch.full_like(r_in, math.inf)
            for attack in attacks.values():
                res = attack(f, xb, label)
                delta = (res.x_adv - xb).detach()
                with torch.no_grad():
                    ok = _clearly_flipped(f(xb + delta), label)
                    shrunk = _bisect_input(f, xb, delta, label, search.bisection_steps)
                    delta = torch.where(_view(ok, xb), shrunk, delta)
                    norms = torch.where(ok, lp_norm(delta, "l2"), torch.full_like(attack_norm, math.inf))
                attack_norm = torch.minimum(attack_norm, norms)
            if not attacks:
                far = lp_norm(torch.maximum(xb - bounds[0], bounds[1] - xb), "l2")
                attack_norm = pgd_radius_search(f, xb, label, upper=torch.where(have_in, r_in, far),
                                                bounds=bounds)
            best_unc = torch.minimum(best_unc, attack_norm)
            with torch.no_grad():
                verified = _clearly_flipped(f(x_in), label)  # again, in this batch
            r_in = torch.where(verified, r_in, torch.full_like(r_in, math.inf))
            have_in &= verified
            with torch.no_grad():
                seg = _bisect_input(f, xb, (x_in - xb) * _view(have_in.to(xb.dtype), xb), label,
                                    search.bisection_steps)
                seg_norm = torch.where(have_in, lp_norm(seg, "l2"), torch.full_like(r_in, math.inf))
            best_unc = torch.minimum(best_unc, seg_norm)
            parts["label"].append(label)
            parts["latent"].append(lat.cost)
            parts["r_in"].append(r_in)
            parts["r_unc"].append(best_unc)
            parts["attack"].append(attack_norm)
            parts["x_norm"].append(_flat_norm(xb))
            parts["r_in_lat"].append(r_in_lat)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    k = num_classes if num_classes is not None else int(logits.shape[1])
    probs = torch.bincount(cat["label"], minlength=k).double() / cat["label"].numel()
    config = {"search": dataclasses.asdict(search),
              "attacks": {n_: _config_str(a) for n_, a in attacks.items()} or
              {"pgd_radius_search": "PGD-L2, 20 steps, 10 bisection iterations on [0, r_in]"}}
    return GenerativeRobustness(
        name=name, z=z.detach().clone(), label=cat["label"], latent=cat["latent"], r_in=cat["r_in"],
        r_unc=cat["r_unc"], r_unc_attack=cat["attack"], r_in_latent_minimal=cat["r_in_lat"],
        x_norm=cat["x_norm"], z_norm=z.detach().norm(dim=1),
        class_probs=tuple(float(p) for p in probs), seconds=time.perf_counter() - t0, config=config)


def _config_str(attack: Any) -> str:
    from advlab.attacks._base import config_repr
    return config_repr(attack) if dataclasses.is_dataclass(attack) else repr(attack)


# -- the table ------------------------------------------------------------------------------------

#: The rows of :class:`BoundsTable`, in order: (key, label).
ROWS: tuple[tuple[str, str], ...] = (
    ("error_rate", "Error rate (real test data)"),
    ("latent", "Robustness in the Z-space ‖r‖₂"),
    ("r_in", "In-distribution robustness r_in"),
    ("r_unc", "Unconstrained robustness r_unc"),
)
BOUND_COLUMN = "Upper bound (Thm 1, median)"


@dataclass
class BoundsTable:
    """The seed's table for several classifiers, with the data behind it.

    Attributes:
        lipschitz: the ``L`` used in the bounds; ``lipschitz_estimate`` how it was obtained (or None
            when ``L`` was given).
        results: classifier name -> :class:`GenerativeRobustness` (the columns, in order).
        error_rates: classifier name -> error on real test data (optional row).
        provenance: versions, revision, seed and settings (see :func:`advlab.evaluation.provenance`).
    """

    lipschitz: float
    results: dict[str, GenerativeRobustness]
    lipschitz_estimate: LipschitzEstimate | None = None
    error_rates: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [BOUND_COLUMN, *self.results]

    @property
    def rows(self) -> list[str]:
        return [label for key, label in ROWS if key != "error_rate" or self.error_rates]

    def bound(self, quantity: str) -> float:
        """The Theorem 1 upper bound on the median of ``quantity`` (``latent``: L = 1)."""
        if quantity == "latent":
            return median_upper_bound(1.0)
        if quantity in ("r_in", "r_unc"):
            return median_upper_bound(self.lipschitz)
        raise KeyError(quantity)

    def classwise_bound(self, name: str, quantity: str = "r_in") -> float:
        """Eq. (4)'s median bound for classifier ``name`` with its class frequencies under ``g``."""
        probs = self.results[name].class_probs
        return median_upper_bound_classwise(1.0 if quantity == "latent" else self.lipschitz,
                                            class_probs=probs)

    def cdf(self, name: str, etas: Sequence[float] | np.ndarray | None = None, *,
            quantity: str = "r_in") -> tuple[np.ndarray, np.ndarray]:
        """The empirical CDF ``P(quantity <= η)`` of one classifier at ``etas`` (default: 200 points
        up to twice the bound); points where nothing was found count as never below η."""
        if etas is None:
            etas = np.linspace(0.0, 2.0 * self.bound(quantity), 200)
        etas = np.asarray(etas, dtype=float)
        v = self.results[name].values(quantity).double().cpu().numpy()
        return etas, (v[None, :] <= etas[:, None]).mean(axis=1)

    def bound_curve(self, etas: Sequence[float] | np.ndarray, *, quantity: str = "r_in") -> np.ndarray:
        """Eq. (6) at ``etas``: the lower bound on ``P(r_in <= η)`` (``latent``: with L = 1)."""
        return np.asarray(fawzi_bound(np.asarray(etas, dtype=float),
                                      1.0 if quantity == "latent" else self.lipschitz))

    def fraction_below_bound(self, name: str, quantity: str = "r_in") -> float:
        """Empirical ``P(quantity <= median bound)``; Theorem 1 says the true value is >= 1/2."""
        v = self.results[name].values(quantity)
        return float((v <= self.bound(quantity)).float().mean())

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        for name, res in self.results.items():
            summary[name] = {q: res.stats(q) for q in ("latent", "r_in", "r_unc", "r_unc_attack",
                                                       "r_in_latent_minimal")}
            summary[name]["relative"] = {q: res.stats(q, relative=True) for q in ("latent", "r_in", "r_unc")}
            summary[name]["classwise_bound_r_in"] = self.classwise_bound(name)
            summary[name]["classwise_bound_latent"] = self.classwise_bound(name, "latent")
            summary[name]["fraction_r_in_below_bound"] = self.fraction_below_bound(name)
            summary[name]["fraction_latent_below_bound"] = self.fraction_below_bound(name, "latent")
            summary[name]["attack_alone_le_r_in"] = res.attack_alone_le_r_in
            summary[name]["max_class_prob"] = max(res.class_probs)
            if name in self.error_rates:
                summary[name]["error_rate"] = self.error_rates[name]
        return {"lipschitz": self.lipschitz,
                "lipschitz_estimate": self.lipschitz_estimate.to_dict() if self.lipschitz_estimate else None,
                "bounds": {"latent": self.bound("latent"), "r_in": self.bound("r_in"),
                           "r_unc": self.bound("r_unc")},
                "summary": summary, "per_point": {k: v.to_dict() for k, v in self.results.items()},
                "provenance": self.provenance}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=_json_default)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoundsTable:
        """Rebuild a table from :meth:`to_dict` output, so reports render stored numbers."""
        est = data.get("lipschitz_estimate")
        summary = data.get("summary", {})
        return cls(lipschitz=float(data["lipschitz"]),
                   results={name: GenerativeRobustness.from_dict(v) for name, v in data["per_point"].items()},
                   lipschitz_estimate=LipschitzEstimate.from_dict(est) if est else None,
                   error_rates={name: float(v["error_rate"]) for name, v in summary.items() if "error_rate" in v},
                   provenance=dict(data.get("provenance", {})))

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> BoundsTable:
        """Read :meth:`to_json` output: a JSON string or the path of a file holding one."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))

    def to_markdown(self, *, relative: bool = False) -> str:
        """The seed's table: median (mean) per classifier, the bound column first.

        ``relative=True`` divides each point's value by ``||x||_2`` (latent: ``||z||_2``) before the
        median, as normalised robustness; the bound column is then divided by the median norm
        (approximate, marked ≈).
        """
        if not self.results:
            return "(no classifiers)"
        names = list(self.results)
        first = next(iter(self.results.values()))
        head = [f"| | {BOUND_COLUMN} | " + " | ".join(names) + " |",
                "|---|---:|" + "---:|" * len(names)]
        lines = []
        if self.error_rates:
            lines.append(f"| {ROWS[0][1]} | – | " + " | ".join(
                f"{100 * self.error_rates[n]:.1f}%" if n in self.error_rates else "–" for n in names) + " |")
        for key, label in ROWS[1:]:
            cells = []
            for n in names:
                s = self.results[n].stats(key, relative=relative)
                cell = _cell(s)
                if s["found"] < self.results[n].n:
                    cell += f" [{s['found']}/{self.results[n].n} found]"
                cells.append(cell)
            b = self.bound(key)
            if relative:
                norm = first.z_norm if key == "latent" else first.x_norm
                bcell = f"≈{_fmt(b / float(norm.median()))}"
            else:
                bcell = _fmt(b)
            lines.append(f"| {label} | {bcell} | " + " | ".join(cells) + " |")
        if not relative:
            lines.append("| Median bound, eq. (4) with f's class frequencies (r_in) | – | " + " | ".join(
                _fmt(self.classwise_bound(n)) for n in names) + " |")
            lines.append("| P(r_in ≤ bound) measured (theorem: ≥ 0.5) | – | " + " | ".join(
                f"{self.fraction_below_bound(n):.2f}" for n in names) + " |")
            lines.append("| r_in from the latent-minimal r alone (no input-metric search) | – | " + " | ".join(
                _cell(self.results[n].stats("r_in_latent_minimal")) for n in names) + " |")
            lines.append("| median r_in / r_unc | – | " + " | ".join(
                _fmt(float(np.median((self.results[n].r_in / self.results[n].r_unc).cpu().numpy())))
                for n in names) + " |")
            lines.append("| r_unc ≤ r_in by the attacks alone | – | " + " | ".join(
                f"{100 * self.results[n].attack_alone_le_r_in:.0f}%" for n in names) + " |")
            lines.append("| largest class frequency under g (eq. 6 needs ≤ 0.5) | – | " + " | ".join(
                f"{max(self.results[n].class_probs):.2f}" for n in names) + " |")
        est = self.lipschitz_estimate
        how = (f"empirical lower estimate (pairs {est.pair_ratio:.4g}, Jacobian {est.jacobian_norm:.4g})"
               if est is not None else "given")
        kind = "relative (‖r‖/‖x‖, latent ‖r‖/‖z‖)" if relative else "absolute L2"
        note = (f"Median (mean) of {kind} robustness over n = {first.n} samples x = g(z), z ~ N(0, I); "
                f"label = f(g(z)). L = {self.lipschitz:.4g} ({how}); bound = L·√(ln 2π) "
                f"(Z-space: L = 1).\n\n")
        return note + "\n".join(head + lines) + "\n"


def _cell(s: dict[str, float]) -> str:
    return f"{_fmt(s['median'])} ({_fmt(s['mean'])})"


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:.3g}"


def _json_default(o: Any) -> Any:
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def bounds_table(classifiers: Mapping[str, nn.Module], g: Generator, *, latent_dim: int, n: int = 200,
                 seed: int = 0, lipschitz: float | LipschitzEstimate | None = None,
                 lipschitz_samples: int = 256, test_data: tuple[Tensor, Tensor] | None = None,
                 input_shape: Sequence[int] | None = None, search: LatentSearch | None = None,
                 attacks: Mapping[str, Any] | None = None, batch_size: int = 256, progress: bool = True,
                 extra_provenance: Mapping[str, Any] | None = None) -> BoundsTable:
    """Measure the seed's table: for each classifier, latent, in-distribution and unconstrained
    robustness at ``n`` points ``g(z)``, ``z ~ N(0, I)`` (the same ``z`` for every classifier, drawn
    from a generator seeded with ``seed``), next to Theorem 1's upper bounds.

    Args:
        classifiers: name -> model returning logits on ``g``'s outputs (trained on real data).
        g: the generator, ``(B, latent_dim) -> (B, *input_shape)`` in ``[0, 1]``.
        latent_dim: ``d >= 1``.
        lipschitz: ``L`` for the bound; ``None`` estimates it with :func:`lipschitz_estimate`
            (``lipschitz_samples`` samples, seeded with ``seed + 1``).
        test_data: ``(x, y)`` real test data for the error-rate row.
        input_shape: the data shape; default: each classifier's ``in_shape`` when it has one.
        search, attacks: see :func:`measure_robustness`.

    Example:
        >>> table = bounds_table({"cnn": cnn}, vae.decoder, latent_dim=8, n=200)
        >>> print(table.to_markdown()); bound_cdf_figure(table, path="cdf.png")
    """
    latent_dim = _check_latent_dim(latent_dim)
    _positive_int("n", n)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not isinstance(classifiers, Mapping) or not classifiers:
        raise ValueError("classifiers must be a non-empty mapping name -> nn.Module")
    device = _generator_device(g)
    sample_shape = _check_generator(g, latent_dim, device)
    if input_shape is not None and tuple(input_shape) != sample_shape:
        raise ValueError(f"the generator makes inputs of shape {sample_shape} but the data have shape "
                         f"{tuple(input_shape)}")
    for name, f in classifiers.items():
        check_model(f)
        _check_shapes(f, sample_shape, input_shape, name)
    if lipschitz is None:
        est: LipschitzEstimate | None = lipschitz_estimate(
            g, latent_dim=latent_dim, samples=lipschitz_samples,
            generator=torch.Generator(device=device).manual_seed(seed + 1))
        L = est.value
        log.info("Lipschitz estimate %.4g (pairs %.4g, Jacobian %.4g)", L, est.pair_ratio, est.jacobian_norm)
    elif isinstance(lipschitz, LipschitzEstimate):
        est, L = lipschitz, _check_lipschitz(lipschitz.value)
    else:
        est, L = None, _check_lipschitz(lipschitz)
    z = torch.randn(n, latent_dim, generator=torch.Generator(device=device).manual_seed(seed), device=device)
    results: dict[str, GenerativeRobustness] = {}
    errors: dict[str, float] = {}
    bar = tqdm(list(classifiers.items()), desc="bounds", disable=not progress)
    search = search or LatentSearch()
    for name, f in bar:
        bar.set_postfix_str(name)
        results[name] = measure_robustness(f, g, z, name=name, search=search, attacks=attacks,
                                           input_shape=input_shape, batch_size=batch_size)
        if test_data is not None:
            from advlab.evaluation.robustness import clean_predictions
            pred = clean_predictions(f, test_data[0])
            errors[name] = float((pred != test_data[1]).float().mean())
        log.info("%s: median latent %.4g, r_in %.4g, r_unc %.4g (%.0fs)", name,
                 results[name].stats("latent")["median"], results[name].stats("r_in")["median"],
                 results[name].stats("r_unc")["median"], results[name].seconds)
    from advlab.evaluation.robustness import provenance
    first = next(iter(results.values()))
    prov = provenance(seed=seed, n=n, latent_dim=latent_dim, lipschitz=L,
                      lipschitz_settings=est.settings if est is not None else "given",
                      classifiers=list(results), measurement=first.config,
                      **dict(extra_provenance or {}))
    for name, res in results.items():
        if max(res.class_probs) > 0.5:
            log.warning("%s predicts one class on %.0f%% of the samples: eq. (6) assumes every class "
                        "has probability <= 1/2; compare with the class-wise bound (eq. 4)",
                        name, 100 * max(res.class_probs))
    return BoundsTable(lipschitz=L, results=results, lipschitz_estimate=est, error_rates=errors,
                       provenance=prov)
