"""Threat models: the norm ball around an input, intersected with the valid input box.

A :class:`ThreatModel` is a small immutable value that owns every piece of geometry an attack
needs: the perturbation norm, projection onto ``{x' : ||x' - x||_p <= eps} ∩ [lo, hi]^d``, the
steepest-ascent direction of a gradient under that norm, a uniformly random starting point, and
the membership check used by tests and evaluations. Attacks use these instead of their own copies.

Shapes: ``x`` and ``x_adv`` are ``(B, *)`` with the batch first; per-sample quantities are ``(B,)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2", "l1", "l0"]
#: the Lp norms every norm-generic attack takes; ``"l0"`` (a count of changed features) is a
#: threat model of its own, taken only by the sparse attacks (JSMA, PGD-L0)
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
L0_ATTACKS = "JSMA, PGD-L0"

_ALIASES = {
    "linf": "linf", "inf": "linf", "l_inf": "linf", "li": "linf", "infinity": "linf",
    "l2": "l2", "2": "l2", "l_2": "l2",
    "l1": "l1", "1": "l1", "l_1": "l1",
}
_L0_ALIASES = {"l0": "l0", "0": "l0", "l_0": "l0"}

# Norms are computed in float32; a projected point can exceed eps by a few units in the last
# place. ``contains`` accepts this much slack (relative to eps, plus an absolute floor).
RTOL = 1e-5
ATOL = 1e-6
#: dtypes whose rounding of ``x + delta`` can leave the ball (see ThreatModel.project)
LOW_PRECISION = (torch.float16, torch.bfloat16)


def canonical_norm(norm: str | float, *, allow_l0: bool = False) -> str:
    """Map a user's spelling of a norm (``"Linf"``, ``"inf"``, ``2``, ``"L1"``) to ``linf|l2|l1``.

    ``"l0"`` (and ``0``) is accepted only with ``allow_l0=True``: it is not a norm the Lp attacks
    can step in, and an attack that is not sparse refuses it with a message naming those that are.
    """
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        key = "linf" if math.isinf(norm) else str(int(norm)) if float(norm).is_integer() else "?"
    elif isinstance(norm, str):
        key = norm.strip().lower()
    else:
        key = "?"
    if key in _L0_ALIASES:
        if allow_l0:
            return "l0"
        raise ValueError(f"norm {norm!r} (a count of changed features) is taken only by the sparse "
                         f"attacks ({L0_ATTACKS}); this one takes {', '.join(NORMS)}")
    if key not in _ALIASES:
        raise ValueError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}"
                         + (" (or l0, for the sparse attacks)" if allow_l0 else ""))
    return _ALIASES[key]


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample ``(B,)`` vector so it broadcasts against ``like`` ``(B, *)``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


_view = per_sample  # the old private name, for modules not yet moved over


def l0_count(delta: Tensor, *, pixels: bool = False) -> Tensor:
    """Per-sample number of changed features of ``delta`` ``(B, *)`` -> ``(B,)`` (in its float
    dtype, so it compares with ``eps``). With ``pixels=True`` ``delta`` is ``(B, C, *spatial)`` and
    a pixel counts once when any of its channels changed."""
    changed = delta != 0
    if pixels:
        if delta.dim() < 3:
            raise ValueError(f"an L0 count per pixel needs (B, C, H, W) (or (B, C, T)) inputs, got "
                             f"shape {tuple(delta.shape)}")
        changed = changed.any(dim=1)
    dtype = delta.dtype if delta.is_floating_point() else torch.float32
    return _flat(changed).sum(dim=1).to(dtype)


def project_l0_box(delta: Tensor, x: Tensor, k: float, bounds: tuple[float, float], *,
                   pixels: bool = False) -> Tensor:
    """Euclidean projection of ``x + delta`` onto ``{x' : ||x' - x||_0 <= k} ∩ [lo, hi]^d``,
    returned as the perturbation.

    Each coordinate either keeps its box-clipped change ``c_i`` (cost ``(δ_i - c_i)²``) or is
    reset to ``x_i`` (cost ``δ_i²``); keeping saves ``δ_i² - (δ_i - c_i)² = c_i (2δ_i - c_i) >= 0``,
    so the projection keeps the ``k`` coordinates (or pixels, their savings summed over channels)
    that save most and resets the rest (Croce & Hein 2019, the L0 projection of PGD-L0).
    """
    lo, hi = bounds
    c = torch.clamp(x + delta, min=lo, max=hi) - x
    if not math.isfinite(k):
        return c
    saving = c * (2 * delta - c)
    if pixels:
        saving = saving.sum(dim=1)
    flat = _flat(saving)
    kk = int(k)
    if kk >= flat.shape[1]:
        return c
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if kk > 0:
        top = flat.topk(kk, dim=1).indices
        keep.scatter_(1, top, True)
    keep &= flat > 0
    keep = keep.view(saving.shape)
    if pixels:
        keep = keep.unsqueeze(1)
    return torch.where(keep, c, torch.zeros_like(c))


def lp_norm(delta: Tensor, norm: str) -> Tensor:
    """Per-sample norm of ``delta`` ``(B, *)`` -> ``(B,)`` (``"l0"``: the count of changed
    coordinates)."""
    if norm == "l0":
        return l0_count(delta)
    flat = _flat(delta)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}: use one of {', '.join(NORMS)}")


def project_l1_ball(delta: Tensor, eps: float) -> Tensor:
    """Euclidean projection of each sample of ``delta`` onto the L1 ball of radius ``eps``.

    Duchi, Shalev-Shwartz, Singer & Chandra (2008), the sort-based O(d log d) algorithm:
    ``w_i = sign(v_i) * max(|v_i| - theta, 0)`` with ``theta`` chosen so that ``||w||_1 = eps``.
    Computed in float64 so the radius is met to float32 precision for large ``d``.
    """
    flat = _flat(delta)
    norms = flat.abs().sum(dim=1)
    outside = norms > eps
    if not bool(outside.any()):
        return delta
    v = flat[outside].double()
    a = v.abs()
    mu, _ = torch.sort(a, dim=1, descending=True)
    cssv = mu.cumsum(dim=1) - eps
    ks = torch.arange(1, mu.shape[1] + 1, device=mu.device, dtype=mu.dtype)
    cond = mu - cssv / ks > 0
    rho = cond.to(torch.int64).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last True index
    theta = cssv.gather(1, rho) / (rho + 1).to(mu.dtype)
    w = torch.sign(v) * (a - theta).clamp_min(0)
    out = flat.clone()
    out[outside] = w.to(flat.dtype)
    return out.view_as(delta)


def project_l1_ball_box(delta: Tensor, x: Tensor, eps: float, lo: float, hi: float) -> Tensor:
    """Euclidean projection of each ``delta[i]`` onto ``{δ : ||δ||_1 <= eps, lo <= x[i] + δ <= hi}``.

    Not the L1-ball projection followed by a clip, which is in the set but in general not its
    nearest point. The set is separable but for the one L1 constraint, so the KKT conditions give
    (Croce & Hein 2021, Sec. 3; the box caps ``u_i = hi - x_i`` where ``δ_i > 0``, ``x_i - lo``
    where ``δ_i < 0``)::

        δ_i = sign(v_i) · clamp(|v_i| − λ, 0, u_i),   λ >= 0 the root of Σ_i clamp(|v_i| − λ, 0, u_i) = eps

    (``λ = 0`` when the box clip alone is inside the ball). The left side is piecewise linear and
    non-increasing in ``λ`` with kinks at ``|v_i| − u_i`` and ``|v_i|``: sorting the ``2d`` kinks
    and accumulating the slopes finds ``λ`` exactly, in O(d log d), computed in float64.

    ``delta`` and ``x`` are ``(B, *)``; ``x`` is expected inside the box (a cap below zero counts
    as zero). Returns ``(B, *)`` in ``delta``'s dtype; rows already in the set come back unchanged.
    """
    shape, dtype = delta.shape, delta.dtype
    v = _flat(delta).double()
    xf = _flat(x).double().expand_as(v)
    mag = v.abs()
    cap = torch.where(v > 0, hi - xf, xf - lo).clamp_min(0)
    clipped = torch.minimum(mag, cap)  # λ = 0: the box alone
    if eps <= 0:
        return torch.zeros_like(delta)
    over = clipped.sum(dim=1) > eps
    out = clipped
    if bool(over.any()):
        m, c = mag[over], cap[over]
        kinks = torch.cat([m - c, m], dim=1)  # (R, 2d): a coordinate leaves its cap, reaches 0
        change = torch.cat([-torch.ones_like(m), torch.ones_like(m)], dim=1)  # slope changes
        kinks, order = kinks.sort(dim=1)
        slope = change.gather(1, order).cumsum(dim=1)  # slope of Σ on [kinks_j, kinks_{j+1}]
        # value of Σ at each kink, from Σ c at the first (every coordinate at its cap)
        gaps = (kinks[:, 1:] - kinks[:, :-1]) * slope[:, :-1]
        value = torch.cat([c.sum(dim=1, keepdim=True), c.sum(dim=1, keepdim=True) + gaps.cumsum(dim=1)], 1)
        # first kink where Σ <= eps: j >= 1 since Σ(λ=0) > eps; λ lies in [kinks_{j-1}, kinks_j]
        j = (value <= eps).to(torch.int64).argmax(dim=1, keepdim=True).clamp_min(1)
        lam = kinks.gather(1, j - 1) + (value.gather(1, j - 1) - eps) / (-slope.gather(1, j - 1)).clamp_min(1)
        lam = lam.clamp_min(0)
        out = clipped.clone()
        out[over] = torch.minimum((m - lam).clamp_min(0), c)
    return (torch.sign(v) * out).to(dtype).view(shape)


def sparse_l1_direction(grad: Tensor, k: Tensor, *, x_adv: Tensor | None = None,
                        bounds: tuple[float, float] | None = None) -> Tensor:
    """The sparse L1 steepest-ascent direction with ``k[i]`` coordinates for sample ``i``.

    The ``k[i]`` coordinates of largest ``|g|``, leaving out those at a box bound that the step
    would push past (with ``x_adv`` and ``bounds``), each moved by ``sign(g) / (number chosen)``:
    L1 norm 1 (0 where no coordinate can move). :meth:`ThreatModel.ascent_direction` is the same
    with one fraction of ``d`` for every sample; APGD-L1 adapts ``k`` per sample. Ties in ``|g|``
    are broken by position (a stable sort), so exactly ``min(k, #movable)`` coordinates move.
    """
    flat = _flat(grad)
    score = flat.abs()
    if x_adv is not None and bounds is not None:
        xf = _flat(x_adv)
        blocked = ((xf <= bounds[0]) & (flat < 0)) | ((xf >= bounds[1]) & (flat > 0))
        score = score.masked_fill(blocked, -1.0)
    order = score.sort(dim=1, descending=True, stable=True).indices
    rank_ok = torch.arange(flat.shape[1], device=flat.device)[None, :] < k.view(-1, 1)
    chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, rank_ok)
    chosen &= score > 0
    count = chosen.sum(dim=1, keepdim=True).clamp_min(1)
    return (torch.where(chosen, flat.sign(), torch.zeros_like(flat)) / count).view_as(grad)


def _sphere_draw(like: Tensor, norm: str, generator: torch.Generator | None) -> Tensor:
    """L2/L1: the unnormalised draw whose direction is uniform on the sphere (Gaussian; Laplace,
    ``sign · Exp(1)``); L∞: a point of the sphere itself (see :func:`random_direction`)."""
    if norm == "l2":
        return torch.empty_like(like).normal_(generator=generator)
    if norm == "l1":
        u = torch.empty_like(like).uniform_(generator=generator).clamp_min(1e-12)
        sign = torch.empty_like(like).bernoulli_(0.5, generator=generator) * 2 - 1
        return -torch.log(u) * sign
    if norm == "linf":
        flat = torch.empty_like(_flat(like)).uniform_(-1.0, 1.0, generator=generator)
        face = torch.randint(0, flat.shape[1], (flat.shape[0], 1), generator=generator,
                             device=like.device)
        side = torch.empty(flat.shape[0], 1, dtype=like.dtype, device=like.device).bernoulli_(
            0.5, generator=generator) * 2 - 1
        return flat.scatter(1, face, side).view_as(like)
    raise ValueError(f"random directions are drawn for {', '.join(NORMS)}, got norm {norm!r}")


def random_direction(like: Tensor, norm: str, *, generator: torch.Generator | None = None) -> Tensor:
    """Directions ``(B, *)`` shaped like ``like``, each drawn uniformly from the unit ``norm`` sphere.

    * L2: a Gaussian vector, normalised;
    * L1: Laplace coordinates (``sign · Exp(1)``), normalised (uniform on the L1 sphere);
    * L∞: one coordinate chosen uniformly is set to ``±1``, the others drawn from ``U[-1, 1]``
      (the sphere is the cube's surface: its ``2d`` faces have equal area).

    :meth:`ThreatModel.random_start` scales the same draws by a random radius; noise baselines
    that compare an attack with random perturbations of the same norm scale them by its norms.
    """
    draw = _sphere_draw(like, norm, generator)
    if norm == "linf":
        return draw
    return draw / per_sample(lp_norm(draw, norm).clamp_min(1e-12), draw)


def project_balls(delta: Tensor, radius: Tensor, norm: str) -> Tensor:
    """Project each ``delta[i]`` onto the ``norm`` ball of radius ``radius[i]`` (``inf`` allowed).

    Projection onto a ball commutes with scaling, ``Π_{rB}(v) = r · Π_B(v / r)``, so the per-point
    radii reuse the unit-ball projections.
    """
    finite = torch.isfinite(radius) & (radius > 0)
    r = torch.where(finite, radius, torch.ones_like(radius))
    unit = delta / per_sample(r, delta)
    if norm == "linf":
        unit = unit.clamp(-1.0, 1.0)
    elif norm == "l2":
        n = lp_norm(unit, "l2")
        unit = unit * per_sample(torch.where(n > 1, 1 / n.clamp_min(1e-30), torch.ones_like(n)), unit)
    else:
        unit = project_l1_ball(unit, 1.0)
    out = torch.where(per_sample(finite, delta), unit * per_sample(r, delta), delta)
    return torch.where(per_sample(radius == 0, delta), torch.zeros_like(delta), out)



@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, inside the input box ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (aliases such as ``"inf"``, ``2`` are accepted),
            or ``"l0"``: the number of changed features (the sparse attacks' threat model).
        eps: the radius, ``>= 0``, in input units (for images in [0, 1], 8/255 ≈ 0.031);
            ``math.inf`` for minimal-perturbation attacks, which are bounded only by the box.
            For ``"l0"`` a whole number of features (or ``math.inf``).
        bounds: ``(lo, hi)``, the box every adversarial input must stay in.
        targeted: whether the attacker aims at a chosen class (recorded for reports).
        pixels: ``"l0"`` only: count a pixel (all channels at one position of a ``(B, C, H, W)``
            input) as one feature, as the sparse attacks on colour images do.

    Example:
        >>> tm = ThreatModel(norm="linf", eps=0.1)
        >>> x_adv = tm.project(x + noise, x)       # inside the ball and the box
        >>> bool(tm.contains(x_adv, x).all())
        True
    """

    norm: Norm = "linf"
    eps: float = 0.0
    bounds: tuple[float, float] = (0.0, 1.0)
    targeted: bool = False
    pixels: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", canonical_norm(self.norm, allow_l0=True))
        if isinstance(self.eps, Tensor) and self.eps.dim() == 0 and self.eps.dtype != torch.bool:
            object.__setattr__(self, "eps", self.eps.item())
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real):
            # (True is not 1.0, and "0.1" is not a number: both were read as numbers)
            raise TypeError(f"eps must be a number, got {self.eps!r} ({type(self.eps).__name__})")
        eps = float(self.eps)
        if math.isnan(eps) or eps < 0:
            raise ValueError(f"eps must be a number >= 0 (math.inf for an unbounded, minimal-norm "
                             f"attack), got {self.eps!r}")
        if self.norm == "l0" and math.isfinite(eps) and not eps.is_integer():
            raise ValueError(f"an L0 budget counts changed features: eps must be a whole number "
                             f"(or math.inf), got {self.eps!r}")
        if not isinstance(self.pixels, bool):
            raise TypeError(f"pixels must be True or False, got {self.pixels!r}")
        if self.pixels and self.norm != "l0":
            raise ValueError(f"pixels=True counts changed pixels, an L0 notion; norm is {self.norm!r}")
        object.__setattr__(self, "eps", eps)
        pair = self.bounds
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or any(isinstance(b, bool) or not isinstance(b, numbers.Real) for b in pair)):
            # ("01" was read as (0, 1))
            raise ValueError(f"bounds must be a pair of numbers (lo, hi), got {self.bounds!r}")
        lo, hi = float(pair[0]), float(pair[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with lo < hi, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))

    # -- geometry -------------------------------------------------------------------------

    def norm_of(self, delta: Tensor) -> Tensor:
        """``||delta||_p`` per sample, ``(B, *)`` -> ``(B,)`` (L0: the count of changed features)."""
        if self.norm == "l0":
            return l0_count(delta, pixels=self.pixels)
        return lp_norm(delta, self.norm)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``||x_adv - x||_p`` per sample ``(B,)``; half and bfloat16 inputs are measured exactly
        in float32 (and the norms returned as float32: bf16 cannot even hold 0.1)."""
        if x_adv.dtype in LOW_PRECISION:
            x_adv, x = x_adv.float(), x.float()
        return self.norm_of(x_adv - x)

    def clip(self, x: Tensor) -> Tensor:
        """Clamp into the input box ``bounds``."""
        return x.clamp(self.bounds[0], self.bounds[1])

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Map ``x_adv`` into the ball around ``x`` and then into the box.

        For L∞ this is the exact Euclidean projection onto the intersection (both are boxes).
        For L2 and L1 the ball projection is exact and the box clip keeps the norm bound, since
        clipping (with ``x`` inside the box) only shrinks each coordinate of the perturbation.
        The arithmetic follows the common reference loop (``delta = clamp(x_adv - x)``, then
        ``clamp(x + delta)``) so results agree bit for bit with peers that use it.
        """
        if self.norm == "l0":
            # a kept coordinate takes its clipped value, every other one is x itself (exactly, in
            # any dtype: a count of changes cannot be broken by rounding)
            low = x_adv.dtype in LOW_PRECISION
            xa, xx = (x_adv.float(), x.float()) if low else (x_adv, x)
            kept = project_l0_box(xa - xx, xx, self.eps, self.bounds, pixels=self.pixels) != 0
            out = torch.where(kept, self.clip(xa), xx)
            return out.to(x_adv.dtype) if low else out
        if x_adv.dtype in LOW_PRECISION and math.isfinite(self.eps):
            return self._project_low_precision(x_adv, x)
        delta = x_adv - x
        eps = self.eps
        if self.norm == "linf":
            delta = torch.clamp(delta, min=-eps, max=eps)
        elif self.norm == "l2":
            norms = lp_norm(delta, "l2")
            # == min(eps / n, 1), without 0/0 when eps = 0 and n = 0
            factor = torch.where(norms > eps, eps / norms.clamp_min(1e-30), torch.ones_like(norms))
            delta = delta * _view(factor, delta)
        else:
            delta = project_l1_ball(delta, eps)
        return torch.clamp(x + delta, min=self.bounds[0], max=self.bounds[1])

    def _project_low_precision(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Half and bfloat16. Forming ``x + delta`` in the low precision rounds, and can round a
        coordinate past the ball (bf16 L∞ at ε = 0.1 gave ‖δ‖∞ = 0.1016; for L2 the roundings of
        every coordinate add up). So the projection is computed in float32, on a radius a hair
        smaller than ε, and each coordinate is then rounded to the dtype *towards x*: no
        coordinate of the returned perturbation is larger than the float32 one, so the point lies
        in the ball (and, x being inside it, in the box) exactly, in the dtype it is returned in."""
        dtype, xf = x_adv.dtype, x.float()
        inner = ThreatModel(norm=self.norm, eps=self.eps * (1 - 1e-6), bounds=self.bounds)
        t = inner.project(x_adv.float(), xf)
        c = t.to(dtype)
        cf = c.float()
        away = (cf - xf).abs() > (t - xf).abs()  # rounded outwards
        if bool(away.any()):
            bits = {torch.float16: 11, torch.bfloat16: 8}[dtype]
            _, e = torch.frexp(cf)
            step = torch.ldexp(torch.ones_like(cf), e - bits) * torch.sign(cf - xf)
            inward = cf - step
            # one unit in the last place towards x, never past it
            inward = torch.where((inward - xf) * (cf - xf) < 0, xf, inward)
            c = torch.where(away, inward.to(dtype), c)
        return c

    def contains(self, x_adv: Tensor, x: Tensor, *, rtol: float = RTOL, atol: float = ATOL) -> Tensor:
        """``(B,)`` bool: inside the box and within ``eps * (1 + rtol) + atol + rounding`` of ``x``.

        ``rounding`` is the float error of forming ``x + delta`` at the box's magnitude (a few ulp
        of ``max(|lo|, |hi|)`` per coordinate, summed as the norm sums them), so a point projected
        correctly in a box like ``(0, 255)`` with a tiny ε is not rejected.
        """
        return self.measure(x_adv, x, rtol=rtol, atol=atol)[1]

    def measure(self, x_adv: Tensor, x: Tensor, *, rtol: float = RTOL,
                atol: float = ATOL) -> tuple[Tensor, Tensor]:
        """:meth:`distance` and :meth:`contains` in one pass: ``(B,)`` norms and ``(B,)`` bool."""
        lo, hi = self.bounds
        if x_adv.dtype in LOW_PRECISION:  # measured exactly: the difference of two halves is a float
            x_adv, x = x_adv.float(), x.float()
        flat = _flat(x_adv)
        in_box = ((flat >= lo) & (flat <= hi)).all(dim=1)
        ulp = torch.finfo(x_adv.dtype).eps if x_adv.is_floating_point() else 0.0
        d = flat.shape[1]
        per_norm = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d), "l0": 0.0}[self.norm]
        rounding = 2.0 * ulp * max(abs(lo), abs(hi)) * per_norm
        norms = self.norm_of(x_adv - x)
        return norms, in_box & (norms <= self.eps * (1 + rtol) + atol + rounding)

    def ascent_direction(self, grad: Tensor, *, x_adv: Tensor | None = None,
                         l1_sparsity: float = 0.05) -> Tensor:
        """The steepest-ascent direction of unit norm for a linearised objective.

        * L∞: ``sign(g)`` (FGSM's direction);
        * L2: ``g / ||g||_2``;
        * L1: sparse L1 descent (Tramèr & Boneh 2019): the top ``l1_sparsity`` fraction of
          coordinates by ``|g|``, excluding those already at a bound the step would push past
          (needs ``x_adv``), each moved by ``sign(g) / k`` so the direction has L1 norm 1.
        * L0: ``g / mean|g|`` (Croce & Hein 2019's PGD-L0 step, the gradient scaled so that an
          average coordinate moves by the step size); the L0 projection then keeps the ``eps``
          coordinates that moved most.
        """
        if self.norm == "linf":
            return grad.sign()
        if self.norm == "l0":
            scale = _flat(grad).abs().mean(dim=1).clamp_min(1e-30)
            return grad / _view(scale, grad)
        if self.norm == "l2":
            norms = lp_norm(grad, "l2")
            tiny = norms < 1e-12
            if bool(tiny.any()):
                # a saturated softmax gives gradients of 1e-20 and less: the clamp below would
                # shorten the step to a vanishing fraction of the step size, and the square in
                # the norm underflows to 0. Rescaled by its largest entry first, every non-zero
                # gradient gives a unit direction (as sign() does under L∞); zero stays zero.
                # (Only those rows: the others keep their bits.)
                peak = _flat(grad).abs().amax(dim=1)
                scale = torch.where(tiny & (peak > 0), peak, torch.ones_like(peak))
                grad = grad / _view(scale, grad)
                norms = torch.where(tiny, lp_norm(grad, "l2"), norms)
            return grad / _view(norms.clamp_min(1e-12), grad)
        flat = _flat(grad)
        score = flat.abs()
        if x_adv is not None:
            xf = _flat(x_adv)
            blocked = ((xf <= self.bounds[0]) & (flat < 0)) | ((xf >= self.bounds[1]) & (flat > 0))
            score = score.masked_fill(blocked, -1.0)
        k = max(1, min(flat.shape[1], int(round(l1_sparsity * flat.shape[1]))))
        top = score.topk(k, dim=1).indices
        chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
        chosen &= score > 0
        count = chosen.sum(dim=1, keepdim=True).clamp_min(1)
        direction = torch.where(chosen, flat.sign(), torch.zeros_like(flat)) / count
        return direction.view_as(grad)

    def random_start(self, x: Tensor, *, generator: torch.Generator | None) -> Tensor:
        """A point drawn uniformly from the ball around each ``x``, then clipped to the box.

        L∞ draws ``U[-eps, eps]`` per coordinate (as Madry et al.); L2 and L1 draw a direction
        uniform on the sphere (Gaussian / Laplace, normalised) and a radius ``eps * u^(1/d)``.
        L0 draws a point uniformly in the box and keeps ``eps`` of its coordinates (those that
        moved most, by :meth:`project`): a random sparse start.
        """
        eps = self.eps
        if not math.isfinite(eps):
            raise ValueError("a random start needs a finite eps")
        if self.norm == "l0":
            lo, hi = self.bounds
            point = torch.empty_like(x).uniform_(lo, hi, generator=generator)
            return self.project(point, x)
        if self.norm == "linf":
            noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
            start = self.clip(x + noise)
            # in half/bf16, x + noise rounds and can land outside the ball (APGD returned such a
            # start as its best point: a hypothesis case of the registry property test)
            return self.project(start, x) if x.dtype in LOW_PRECISION else start
        b = x.shape[0]
        d = x[0].numel()
        direction = _sphere_draw(x, self.norm, generator)  # (the arithmetic of the reference loop)
        norms = lp_norm(direction, self.norm).clamp_min(1e-12)
        radius = eps * torch.empty(b, device=x.device, dtype=x.dtype).uniform_(
            generator=generator) ** (1.0 / d)
        noise = direction * _view(radius / norms, x)
        return self.project(x + noise, x)
