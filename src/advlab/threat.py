"""Threat models: the norm ball around an input, intersected with the valid input box.

A :class:`ThreatModel` is a small immutable value that owns every piece of geometry an attack
needs: the perturbation norm, projection onto ``{x' : ||x' - x||_p <= eps} ∩ [lo, hi]^d``, the
steepest-ascent direction of a gradient under that norm, a uniformly random starting point, and
the membership check used by tests and evaluations. Attacks use these instead of their own copies.

Shapes: ``x`` and ``x_adv`` are ``(B, *)`` with the batch first; per-sample quantities are ``(B,)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Union

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
    """``(B, ...)`` as ``(B, D)``; an empty batch too (``reshape(0, -1)`` is ambiguous: a cascade
    resumed with no broken point in a batch checked an empty selection)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


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


def _flat_bound(b: float | Tensor, like: Tensor) -> float | Tensor:
    """A bound against flattened rows ``(B, D)`` of ``like`` ``(B, *)``: a float as it is, a
    per-feature tensor (shaped like one input, or broadcasting to it) as ``(1, D)``."""
    if isinstance(b, Tensor):
        return b.expand(like.shape[1:]).reshape(1, -1)
    return b


def project_l1_ball_box(delta: Tensor, x: Tensor, eps: float, lo: float | Tensor,
                        hi: float | Tensor) -> Tensor:
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
    lo, hi = _flat_bound(lo, x), _flat_bound(hi, x)  # per-feature bounds: (1, D)
    lo = lo.double() if isinstance(lo, Tensor) else lo
    hi = hi.double() if isinstance(hi, Tensor) else hi
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
                        bounds: tuple[Any, Any] | None = None, free: Tensor | None = None) -> Tensor:
    """The sparse L1 steepest-ascent direction with ``k[i]`` coordinates for sample ``i``.

    The ``k[i]`` coordinates of largest ``|g|``, leaving out those at a box bound that the step
    would push past (with ``x_adv`` and ``bounds``), each moved by ``sign(g) / (number chosen)``:
    L1 norm 1 (0 where no coordinate can move). :meth:`ThreatModel.ascent_direction` is the same
    with one fraction of ``d`` for every sample; APGD-L1 adapts ``k`` per sample. Ties in ``|g|``
    are broken by position (a stable sort), so exactly ``min(k, #movable)`` coordinates move.
    ``bounds`` may be per-feature tensors shaped like one input; ``free`` (bool, shaped like one
    input) leaves out the frozen features of a masked threat model.
    """
    flat = _flat(grad)
    score = flat.abs()
    if x_adv is not None and bounds is not None:
        xf = _flat(x_adv)
        lo, hi = _flat_bound(bounds[0], x_adv), _flat_bound(bounds[1], x_adv)
        blocked = ((xf <= lo) & (flat < 0)) | ((xf >= hi) & (flat > 0))
        score = score.masked_fill(blocked, -1.0)
    if free is not None:
        score = score.masked_fill(~_flat_bound(free, grad), -1.0)
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



# -- per-feature bounds, masks and categorical features ---------------------------------------------


class PerFeature:
    """An immutable per-feature tensor of a threat model (a bound, a mask), with value semantics.

    Holds a CPU copy of what was given (so later changes to the user's tensor do not reach it),
    compares and hashes by value (so a :class:`ThreatModel` or an attack configuration holding one
    stays a value), prints as a short summary with a digest (so provenance strings stay short and
    still tell two tensors apart), and hands out copies on an input's device and dtype
    (:meth:`like`, cached). A bound tensor is configuration, so moving it to ``x``'s device is
    advlab's job, not the user's.
    """

    __slots__ = ("_t", "_digest", "_cache")

    def __init__(self, t: Tensor) -> None:
        self._t = t.detach().to("cpu").clone().contiguous()
        self._t.requires_grad_(False)
        raw = self._t.numpy().tobytes() if self._t.numel() else b""
        self._digest = hashlib.sha1(raw + str(tuple(self._t.shape)).encode()
                                    + str(self._t.dtype).encode()).hexdigest()[:10]
        self._cache: dict[tuple[Any, ...], Tensor] = {}

    @property
    def tensor(self) -> Tensor:
        """The values, on the CPU (a copy: the held tensor stays as it was)."""
        return self._t.clone()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._t.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self._t.dtype

    def like(self, x: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
        """The values expanded to the shape of one example of ``x`` ``(B, *)``, on ``x``'s device
        (in ``x``'s dtype for a numeric tensor, or ``dtype``). Read-only by convention."""
        dt = dtype if dtype is not None else (x.dtype if self._t.is_floating_point() else self._t.dtype)
        key = (x.device, dt, tuple(x.shape[1:]))
        out = self._cache.get(key)
        if out is None:
            out = self._t.to(dtype=dt).expand(x.shape[1:]).to(x.device).contiguous()
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = out
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PerFeature):
            return NotImplemented
        return (self.shape == other.shape and self.dtype == other.dtype
                and bool(torch.equal(self._t, other._t)))

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        t = self._t
        if t.dtype == torch.bool:
            what = f"{int(t.sum())} of {t.numel()} True"
        else:
            what = f"min={float(t.min()):.4g}, max={float(t.max()):.4g}" if t.numel() else "empty"
        return f"PerFeature(shape={self.shape}, {what}, sha1={self._digest})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PerFeature, (self._t,))


def _as_tensor(name: str, value: Any) -> Tensor:
    """``value`` (a tensor, a NumPy array, nested lists) as a CPU tensor, or a clear error."""
    if isinstance(value, PerFeature):
        return value.tensor
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor (or an array-like) shaped like one input, got "
                        f"{type(value).__name__} ({err})") from None


def _index_of(flat: int, shape: tuple[int, ...]) -> str:
    """A feature's position as it reads in a message: ``3`` for ``(D,)``, ``(1, 7)`` for ``(C, T)``."""
    if len(shape) <= 1:
        return str(flat)
    idx = []
    for s in reversed(shape):
        idx.append(flat % s)
        flat //= s
    return str(tuple(reversed(idx)))


def _per_feature_bounds(pair: Any) -> tuple[PerFeature, PerFeature]:
    """Canonical per-feature bounds: two float64 :class:`PerFeature` of one broadcast shape."""
    lo_t, hi_t = (_as_tensor(f"bounds[{i}] ({'lo' if i == 0 else 'hi'})", b) for i, b in enumerate(pair))
    for name, t in (("lo", lo_t), ("hi", hi_t)):
        if t.dtype == torch.bool or t.is_complex() or not (t.is_floating_point() or t.dtype.is_signed
                                                            or t.dtype == torch.uint8):
            raise TypeError(f"bounds ({name}) must hold real numbers, got dtype {t.dtype}")
    lo_t, hi_t = lo_t.double(), hi_t.double()
    try:
        shape = torch.broadcast_shapes(lo_t.shape, hi_t.shape)
    except RuntimeError:
        raise ValueError(f"per-feature bounds lo and hi must have one shape (or broadcast to one): "
                         f"lo has shape {tuple(lo_t.shape)}, hi has shape {tuple(hi_t.shape)}") from None
    lo_t, hi_t = lo_t.expand(shape), hi_t.expand(shape)
    for name, t in (("lo", lo_t), ("hi", hi_t)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            i = int(bad.flatten().nonzero()[0])
            raise ValueError(f"bounds ({name}) must be finite numbers; feature {_index_of(i, tuple(shape))} "
                             f"is {float(t.flatten()[i])}")
    crossed = lo_t > hi_t
    if bool(crossed.any()):
        i = int(crossed.flatten().nonzero()[0])
        raise ValueError(f"bounds have lo > hi for {int(crossed.sum())} features, the first is feature "
                         f"{_index_of(i, tuple(shape))}: lo = {float(lo_t.flatten()[i]):g}, hi = "
                         f"{float(hi_t.flatten()[i]):g} (lo == hi is allowed: a fixed feature)")
    return PerFeature(lo_t), PerFeature(hi_t)


def _mask_field(mask: Any) -> PerFeature | None:
    if mask is None:
        return None
    t = _as_tensor("mask", mask)
    if t.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor shaped like one input (True = the feature may "
                        f"change, False = frozen), got dtype {t.dtype}; use mask.bool() or mask != 0")
    if t.numel() and not bool(t.any()):
        raise ValueError("mask is False everywhere: it freezes every feature, so no input can change "
                         "(True marks the features an attack MAY change)")
    return PerFeature(t)


def _categorical_field(categorical: Any) -> PerFeature | tuple[int, ...] | None:
    """A bool mask (True = categorical) as a :class:`PerFeature`, or indices into one flattened
    input as a sorted tuple of ints; ``None`` or empty for none."""
    if categorical is None:
        return None
    if isinstance(categorical, PerFeature) or (isinstance(categorical, Tensor) and categorical.dtype == torch.bool):
        t = _as_tensor("categorical", categorical)
        if t.dtype != torch.bool:
            raise TypeError(f"categorical as a mask must be bool, got {t.dtype}")
        return PerFeature(t) if bool(t.any()) else None
    if isinstance(categorical, numbers.Integral) and not isinstance(categorical, bool):
        categorical = (categorical,)
    if isinstance(categorical, Tensor):
        categorical = categorical.flatten().tolist()
    try:
        items = list(categorical)
    except TypeError:
        raise TypeError(f"categorical must be feature indices (ints into one flattened input) or a "
                        f"bool mask, got {categorical!r}") from None
    out = []
    for i in items:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or int(i) < 0:
            raise ValueError(f"categorical must hold feature indices >= 0 (into one flattened input), "
                             f"got {i!r}")
        out.append(int(i))
    return tuple(sorted(set(out))) or None


def check_feature_shape(name: str, shape: tuple[int, ...], example: tuple[int, ...]) -> None:
    """A per-feature tensor of ``shape`` must broadcast to one input's ``example`` shape."""
    try:
        ok = tuple(torch.broadcast_shapes(shape, example)) == tuple(example)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} has shape {tuple(shape)} but one input has shape {tuple(example)} "
                         f"(x is (B, *{tuple(example)})); per-feature {name} must have the shape of one "
                         "input, or broadcast to it")


#: a bound as the threat model holds it: a float, or a per-feature tensor
Bound = Union[float, PerFeature]


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, inside the input box ``bounds``, changing
    only the features ``mask`` leaves free.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (aliases such as ``"inf"``, ``2`` are accepted),
            or ``"l0"``: the number of changed features (the sparse attacks' threat model).
        eps: the radius, ``>= 0``, in input units (for images in [0, 1], 8/255 ≈ 0.031);
            ``math.inf`` for minimal-perturbation attacks, which are bounded only by the box.
            For ``"l0"`` a whole number of features (or ``math.inf``).
        bounds: ``(lo, hi)``, the box every adversarial input must stay in: two numbers (the
            fast path, the same box for every feature), or per-feature bounds: ``lo`` and ``hi``
            tensors (or array-likes, or one number and one tensor) shaped like ONE input, e.g.
            ``(D,)`` for tabular ``(N, D)`` data, ``(C, T)`` for signals, ``(C, H, W)`` for images,
            or broadcasting to it (``(C, 1, 1)``: one range per channel). ``lo == hi`` fixes a
            feature; ``lo > hi`` and NaN/Inf are errors naming the feature. Held as
            :class:`PerFeature` values (CPU, compared by value) and moved to ``x``'s device and
            dtype when used.
        targeted: whether the attacker aims at a chosen class (recorded for reports).
        pixels: ``"l0"`` only: count a pixel (all channels at one position of a ``(B, C, H, W)``
            input) as one feature, as the sparse attacks on colour images do.
        mask: ``None`` (every feature may change), or a bool tensor shaped like one input (or
            broadcasting to it): ``True`` where an attack MAY change the feature, ``False`` where
            the feature is frozen and every adversarial input equals ``x`` exactly (ART's
            convention). Projections, ascent directions and random starts spend the budget on the
            free features only.
        categorical: features that are categories, not quantities: indices into one flattened
            input (``x[0].flatten()``), or a bool tensor shaped like one input (``True`` =
            categorical). Every advlab attack changes features by numeric steps, so an attack
            refuses a threat model in which a categorical feature is free (freeze it with
            ``mask``).

    Example:
        >>> tm = ThreatModel(norm="linf", eps=0.1)
        >>> x_adv = tm.project(x + noise, x)       # inside the ball and the box
        >>> bool(tm.contains(x_adv, x).all())
        True
        >>> ThreatModel(norm="l2", eps=0.5, bounds=(lo, hi), mask=mutable)  # tabular (D,) tensors
    """

    norm: Norm = "linf"
    eps: float = 0.0
    bounds: tuple[Bound, Bound] = (0.0, 1.0)
    targeted: bool = False
    pixels: bool = False
    mask: PerFeature | None = None
    categorical: PerFeature | tuple[int, ...] | None = None

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
        object.__setattr__(self, "bounds", canonical_bounds(self.bounds))
        object.__setattr__(self, "mask", _mask_field(self.mask))
        object.__setattr__(self, "categorical", _categorical_field(self.categorical))
        if self.mask is not None and self.pixels:
            raise ValueError("pixels=True counts a pixel over its channels; a per-feature mask is not "
                             "supported with it (freeze whole pixels with pixels=False)")

    # -- per-feature views ----------------------------------------------------------------------

    @property
    def per_feature(self) -> bool:
        """Whether ``bounds`` are per-feature tensors (not two numbers)."""
        return isinstance(self.bounds[0], PerFeature)

    def box(self, like: Tensor) -> tuple[Any, Any]:
        """``(lo, hi)`` for inputs like ``like`` ``(B, *)``: the two floats, or per-feature
        tensors of one input's shape on ``like``'s device and dtype (broadcasting against it)."""
        lo, hi = self.bounds
        if isinstance(lo, PerFeature):
            return lo.like(like), hi.like(like)  # type: ignore[union-attr]
        return lo, hi

    def free(self, like: Tensor) -> Tensor | None:
        """Bool ``(*)`` shaped like one input of ``like``: the features that may change;
        ``None`` when every feature may."""
        return None if self.mask is None else self.mask.like(like)

    def num_free(self, like: Tensor) -> int:
        """How many features of one input may change."""
        return like[0].numel() if self.mask is None else int(self.mask.like(like).sum())

    @property
    def width(self) -> float:
        """The box's width ``hi - lo`` as one number (the mean over features for per-feature
        bounds), for defaults that scale with the input range (a step size, a fallback radius)."""
        lo, hi = self.bounds
        if isinstance(lo, PerFeature):
            return float((hi.tensor - lo.tensor).mean())  # type: ignore[union-attr]
        return hi - lo

    def restrict(self, t: Tensor) -> Tensor:
        """``t`` ``(B, *)`` (a perturbation, a gradient, a direction) with the frozen features set
        to zero; ``t`` itself when nothing is frozen."""
        if self.mask is None:
            return t
        return torch.where(self.mask.like(t), t, torch.zeros((), dtype=t.dtype, device=t.device))

    def keep_frozen(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``x_adv`` with every frozen feature equal to ``x``'s (exactly); ``x_adv`` itself when
        nothing is frozen."""
        if self.mask is None:
            return x_adv
        return torch.where(self.mask.like(x_adv), x_adv, x)

    def check_features(self, x: Tensor, *, who: str = "this attack", numeric: bool = True) -> None:
        """Refuse, with a message, per-feature bounds, a mask or categorical features whose shape
        does not fit one input of ``x`` ``(B, *)``, and (``numeric``: an attack that changes
        features by numeric steps) a categorical feature the mask leaves free."""
        example = tuple(x.shape[1:])
        if self.per_feature:
            check_feature_shape("bounds", self.bounds[0].shape, example)  # type: ignore[union-attr]
        if self.mask is not None:
            check_feature_shape("mask", self.mask.shape, example)
        cat = self.categorical
        if cat is None:
            return
        n = int(math.prod(example))
        if isinstance(cat, PerFeature):
            check_feature_shape("categorical", cat.shape, example)
            flat = cat.tensor.expand(example).reshape(-1).nonzero().squeeze(1).tolist()
        else:
            flat = list(cat)
            if flat[-1] >= n:
                raise ValueError(f"categorical names feature {flat[-1]}, but one input has {n} features "
                                 f"(shape {example}); indices count into x[0].flatten()")
        if not numeric:
            return
        free = (torch.ones(n, dtype=torch.bool) if self.mask is None
                else self.mask.tensor.expand(example).reshape(-1))
        loose = [i for i in flat if bool(free[i])]
        if loose:
            where = _index_of(loose[0], example)
            more = f" (and {len(loose) - 1} more categorical features)" if len(loose) > 1 else ""
            raise ValueError(f"feature {where} is categorical{more}, and {who} changes features by "
                             f"numeric steps: freeze it with mask=... (False at that feature), or "
                             "encode it numerically; advlab has no attack for categorical features yet")

    def __repr__(self) -> str:
        parts = [f"norm={self.norm!r}", f"eps={self.eps!r}", f"bounds={self.bounds!r}",
                 f"targeted={self.targeted!r}", f"pixels={self.pixels!r}"]
        if self.mask is not None:
            parts.append(f"mask={self.mask!r}")
        if self.categorical is not None:
            parts.append(f"categorical={self.categorical!r}")
        return f"ThreatModel({', '.join(parts)})"

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
        """Clamp into the input box ``bounds`` (per feature where the bounds are tensors)."""
        lo, hi = self.box(x)
        if isinstance(lo, Tensor):
            return torch.clamp(x, min=lo, max=hi)
        return x.clamp(lo, hi)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Map ``x_adv`` into the ball around ``x`` and then into the box.

        For L∞ this is the exact Euclidean projection onto the intersection (both are boxes).
        For L2 and L1 the ball projection is exact and the box clip keeps the norm bound, since
        clipping (with ``x`` inside the box) only shrinks each coordinate of the perturbation.
        The arithmetic follows the common reference loop (``delta = clamp(x_adv - x)``, then
        ``clamp(x + delta)``) so results agree bit for bit with peers that use it.

        With a ``mask`` the perturbation's frozen features are zeroed first, so the ball
        projection is the exact projection onto the ball of the free features (for these norms
        projecting a vector with zeros keeps them zero), and the frozen features of the result
        are ``x``'s exactly.
        """
        if self.norm == "l0":
            # a kept coordinate takes its clipped value, every other one is x itself (exactly, in
            # any dtype: a count of changes cannot be broken by rounding)
            low = x_adv.dtype in LOW_PRECISION
            xa, xx = (x_adv.float(), x.float()) if low else (x_adv, x)
            lo, hi = self.box(xa)
            kept = project_l0_box(self.restrict(xa - xx), xx, self.eps, (lo, hi), pixels=self.pixels) != 0
            out = torch.where(kept, self.clip(xa), xx)
            return out.to(x_adv.dtype) if low else out
        if x_adv.dtype in LOW_PRECISION and math.isfinite(self.eps):
            return self._project_low_precision(x_adv, x)
        delta = self.restrict(x_adv - x)
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
        lo, hi = self.box(x)
        out = torch.clamp(x + delta, min=lo, max=hi)
        return self.keep_frozen(out, x)

    def _project_low_precision(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Half and bfloat16. Forming ``x + delta`` in the low precision rounds, and can round a
        coordinate past the ball (bf16 L∞ at ε = 0.1 gave ‖δ‖∞ = 0.1016; for L2 the roundings of
        every coordinate add up). So the projection is computed in float32, on a radius a hair
        smaller than ε, and each coordinate is then rounded to the dtype *towards x*: no
        coordinate of the returned perturbation is larger than the float32 one, so the point lies
        in the ball (and, x being inside it, in the box) exactly, in the dtype it is returned in."""
        dtype, xf = x_adv.dtype, x.float()
        inner = dataclasses.replace(self, eps=self.eps * (1 - 1e-6), targeted=False)
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
        """``(B,)`` bool: inside the box, within ``eps * (1 + rtol) + atol + rounding`` of ``x``,
        and (with a ``mask``) equal to ``x`` on every frozen feature.

        ``rounding`` is the float error of forming ``x + delta`` at the box's magnitude (a few ulp
        of ``max(|lo|, |hi|)`` per coordinate, summed as the norm sums them), so a point projected
        correctly in a box like ``(0, 255)`` with a tiny ε is not rejected.
        """
        return self.measure(x_adv, x, rtol=rtol, atol=atol)[1]

    def measure(self, x_adv: Tensor, x: Tensor, *, rtol: float = RTOL,
                atol: float = ATOL) -> tuple[Tensor, Tensor]:
        """:meth:`distance` and :meth:`contains` in one pass: ``(B,)`` norms and ``(B,)`` bool."""
        if self.per_feature:
            # the box as the input's dtype holds it (the attacks clamp to the same values)
            lo_t, hi_t = self.box(x_adv)
            lo, hi = _flat_bound(lo_t.float() if x_adv.dtype in LOW_PRECISION else lo_t, x_adv), \
                _flat_bound(hi_t.float() if x_adv.dtype in LOW_PRECISION else hi_t, x_adv)
            magnitude = float(torch.maximum(lo_t.abs().max(), hi_t.abs().max())) if lo_t.numel() else 0.0
        else:
            lo, hi = self.bounds
            magnitude = max(abs(lo), abs(hi))  # type: ignore[arg-type]
        if x_adv.dtype in LOW_PRECISION:  # measured exactly: the difference of two halves is a float
            x_adv, x = x_adv.float(), x.float()
        flat = _flat(x_adv)
        in_box = ((flat >= lo) & (flat <= hi)).all(dim=1)
        if self.mask is not None:
            frozen = ~_flat_bound(self.mask.like(x_adv), x_adv)
            in_box &= ~((flat != _flat(x)) & frozen).any(dim=1)
        ulp = torch.finfo(x_adv.dtype).eps if x_adv.is_floating_point() else 0.0
        d = flat.shape[1]
        per_norm = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d), "l0": 0.0}[self.norm]
        rounding = 2.0 * ulp * magnitude * per_norm
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

        With a ``mask`` the direction is taken over the free features only (the frozen ones are
        zero; L1's fraction counts free features).
        """
        grad = self.restrict(grad)
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
            lo, hi = self.box(x_adv)
            lo, hi = _flat_bound(lo, x_adv), _flat_bound(hi, x_adv)
            blocked = ((xf <= lo) & (flat < 0)) | ((xf >= hi) & (flat > 0))
            score = score.masked_fill(blocked, -1.0)
        d = flat.shape[1]
        if self.mask is not None:
            score = score.masked_fill(~_flat_bound(self.mask.like(grad), grad), -1.0)
            d = self.num_free(grad)
        k = max(1, min(d, int(round(l1_sparsity * d))))
        top = score.topk(k, dim=1).indices
        chosen = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
        chosen &= score > 0
        count = chosen.sum(dim=1, keepdim=True).clamp_min(1)
        direction = torch.where(chosen, flat.sign(), torch.zeros_like(flat)) / count
        return direction.view_as(grad)

    def uniform_in_box(self, x: Tensor, *, generator: torch.Generator | None) -> Tensor:
        """A point drawn uniformly from the box, shaped like ``x`` (``x`` on the frozen features)."""
        lo, hi = self.box(x)
        if isinstance(lo, Tensor):
            point = lo + (hi - lo) * torch.empty_like(x).uniform_(generator=generator)
            point = torch.minimum(torch.maximum(point, lo), hi)
        else:
            point = torch.empty_like(x).uniform_(lo, hi, generator=generator)
        return self.keep_frozen(point, x)

    def random_start(self, x: Tensor, *, generator: torch.Generator | None) -> Tensor:
        """A point drawn uniformly from the ball around each ``x``, then clipped to the box.

        L∞ draws ``U[-eps, eps]`` per coordinate (as Madry et al.); L2 and L1 draw a direction
        uniform on the sphere (Gaussian / Laplace, normalised) and a radius ``eps * u^(1/d)``.
        L0 draws a point uniformly in the box and keeps ``eps`` of its coordinates (those that
        moved most, by :meth:`project`): a random sparse start. With a ``mask``, the ball is that
        of the free features (``d`` counts them) and the frozen ones stay at ``x``.
        """
        eps = self.eps
        if not math.isfinite(eps):
            raise ValueError("a random start needs a finite eps")
        if self.norm == "l0":
            return self.project(self.uniform_in_box(x, generator=generator), x)
        if self.norm == "linf":
            noise = self.restrict(torch.empty_like(x).uniform_(-eps, eps, generator=generator))
            start = self.clip(x + noise)
            # in half/bf16, x + noise rounds and can land outside the ball (APGD returned such a
            # start as its best point: a hypothesis case of the registry property test)
            return self.project(start, x) if (x.dtype in LOW_PRECISION or self.mask is not None) else start
        b = x.shape[0]
        d = max(self.num_free(x), 1)
        direction = self.restrict(_sphere_draw(x, self.norm, generator))  # (the arithmetic of the reference loop)
        norms = lp_norm(direction, self.norm).clamp_min(1e-12)
        radius = eps * torch.empty(b, device=x.device, dtype=x.dtype).uniform_(
            generator=generator) ** (1.0 / d)
        noise = direction * _view(radius / norms, x)
        return self.project(x + noise, x)


def canonical_bounds(pair: Any) -> tuple[Bound, Bound]:
    """``(lo, hi)`` as a :class:`ThreatModel` holds it: two floats (``lo < hi``), or two
    :class:`PerFeature` tensors of one shape (``lo <= hi`` per feature). Raises on anything else,
    naming the problem."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"bounds must be a pair (lo, hi) of numbers, or of tensors shaped like one "
                         f"input (per-feature bounds), got {pair!r}")
    if any(isinstance(b, bool) for b in pair) or any(isinstance(b, str) for b in pair):
        # ("01" was read as (0, 1))
        raise ValueError(f"bounds must be a pair of numbers (lo, hi), got {pair!r}")
    if all(isinstance(b, numbers.Real) for b in pair):
        lo, hi = float(pair[0]), float(pair[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with lo < hi, got {pair!r}")
        return lo, hi
    return _per_feature_bounds(pair)
