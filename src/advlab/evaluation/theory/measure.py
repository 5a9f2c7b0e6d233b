"""Robustness of one classifier at generated points ``x = g(z)``: latent, in-distribution
(``r_in``) and unconstrained (``r_unc``) robustness (see :func:`measure_robustness`).

``r_unc`` comes from L2 minimal-norm attacks, or, when none is available, from
:func:`pgd_radius_search`, a bisection over the radius of a private PGD-L2 (:func:`_pgd_l2`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advlab.attacks.contract import AttackLike
from advlab.attacks._base import config_repr
from advlab._checks import check_int, check_model, input_grad, model_device
from advlab.evaluation.theory.generator import (Generator, _check_generator, _check_shapes, _clearly_flipped,
                                                _flat_norm, _frozen, _module_of)
from advlab.evaluation.theory.latent import LatentSearch, _Problem, _search
from advlab.threat import _view, lp_norm, project_balls

log = logging.getLogger(__name__)


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


def pgd_radius_search(f: nn.Module, x: Tensor, label: Tensor, *, upper: Tensor, iterations: int = 10,
                      steps: int = 20, bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Per point, the smallest L2 radius (bisection over ``[0, upper]``, ``iterations`` halvings) at
    which PGD-L2 (``steps`` steps of ``2.5 ε / steps`` along ``∇CE / ||∇CE||``, from ``x``, projected
    on the per-point ball and the box) changes the label; returns the norm ``(B,)`` of the smallest
    successful perturbation, ``inf`` where PGD never succeeded. ``upper`` ``(B,)``: radii known to
    suffice (e.g. ``r_in``), the bisection's starting bracket."""
    lo = torch.zeros_like(upper)
    hi = upper.clone()
    best = torch.full_like(upper, math.inf)
    with _frozen(f):
        for _ in range(iterations):
            eps = (lo + hi) / 2
            success, norm_at = _pgd_l2(f, x, label, eps=eps, steps=steps, bounds=bounds)
            best = torch.minimum(best, norm_at)
            hi = torch.where(success, torch.minimum(eps, norm_at), hi)
            lo = torch.where(success, lo, eps)
    return best


def _pgd_l2(f: nn.Module, x: Tensor, label: Tensor, *, eps: Tensor, steps: int,
            bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """One PGD-L2 run at the per-point radii ``eps`` ``(B,)``, from ``x``: ``steps`` steps of
    ``2.5 ε / steps`` along ``∇CE / ||∇CE||``, each projected on the ball and the box. Returns
    ``success`` ``(B,)`` (a clear label change at some iterate) and ``||δ||_2`` at the first one
    (``inf`` where none). Call inside ``_frozen(f)``.

    Not the shared loop (:mod:`advlab.attacks._loop`): its threat model has one ε for the batch,
    and the bisection needs a radius per point; the projection is the shared per-point one
    (:func:`advlab.threat.project_balls`)."""
    lo_b, hi_b = bounds
    delta = torch.zeros_like(x)
    success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    norm_at = torch.full_like(eps, math.inf)
    for _s in range(steps):
        xa = (x + delta).detach().requires_grad_(True)
        logits = f(xa)
        flip = _clearly_flipped(logits.detach(), label)
        new = flip & ~success
        norm_at = torch.where(new, lp_norm(delta, "l2"), norm_at)
        success |= flip
        loss = nn.functional.cross_entropy(logits, label, reduction="sum")
        grad = input_grad(loss, xa)
        direction = grad / _view(lp_norm(grad, "l2").clamp_min(1e-12), grad)
        step = (2.5 * eps / steps)
        delta = delta + _view(step, x) * direction
        delta = project_balls(delta, eps, "l2")  # the per-point L2 ball of radius eps
        delta = ((x + delta).clamp(lo_b, hi_b) - x).detach()
    with torch.no_grad():
        flip = _clearly_flipped(f(x + delta), label)
    norm_at = torch.where(flip & ~success, lp_norm(delta, "l2"), norm_at)
    success |= flip
    return success, norm_at


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


def measure_robustness(f: nn.Module, g: Generator, z: Tensor, *, name: str = "classifier",
                       search: LatentSearch | None = None, attacks: Mapping[str, AttackLike] | None = None,
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
    check_int("batch_size", batch_size)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError("z must be a float tensor of latent codes (n, d)")
    check_int("latent_dim", int(z.shape[1]))
    sample_shape = _check_generator(g, int(z.shape[1]), z.device)
    _check_shapes(f, sample_shape, input_shape, name)
    dev = model_device(f)
    if dev is not None and dev != z.device:
        raise ValueError(f"classifier {name!r} is on {dev} but z is on {z.device}; put both on one device")
    search = search or LatentSearch()
    attacks = default_unconstrained_attacks() if attacks is None else dict(attacks)
    t0 = time.perf_counter()
    parts: dict[str, list[Tensor]] = {k: [] for k in _PARTS}
    with _frozen(f, _module_of(g)):
        for i in range(0, z.shape[0], batch_size):
            row, width = _measure_batch(f, g, z[i:i + batch_size].detach(), name=name, search=search,
                                        attacks=attacks, bounds=bounds)
            for key, value in row.items():
                parts[key].append(value)
    cat = {key: torch.cat(v) for key, v in parts.items()}
    k = num_classes if num_classes is not None else width
    probs = torch.bincount(cat["label"], minlength=k).double() / cat["label"].numel()
    config = {"search": dataclasses.asdict(search),
              "attacks": {n_: config_repr(a) for n_, a in attacks.items()} or
              {"pgd_radius_search": "PGD-L2, 20 steps, 10 bisection iterations on [0, r_in]"}}
    return GenerativeRobustness(
        name=name, z=z.detach().clone(), label=cat["label"], latent=cat["latent"], r_in=cat["r_in"],
        r_unc=cat["r_unc"], r_unc_attack=cat["attack"], r_in_latent_minimal=cat["r_in_lat"],
        x_norm=cat["x_norm"], z_norm=z.detach().norm(dim=1),
        class_probs=tuple(float(p) for p in probs), seconds=time.perf_counter() - t0, config=config)


_PARTS = ("label", "latent", "r_in", "r_unc", "attack", "x_norm", "r_in_lat")


def _measure_batch(f: nn.Module, g: Generator, zb: Tensor, *, name: str, search: LatentSearch,
                   attacks: Mapping[str, AttackLike], bounds: tuple[float, float]) -> tuple[dict[str, Tensor], int]:
    """The per-point numbers of :func:`measure_robustness` (keys :data:`_PARTS`) for one batch of
    codes ``zb``, and the number of logits."""
    xb, logits = _generate(f, g, zb, name=name, bounds=bounds)
    label = logits.argmax(dim=1)
    ind = _in_distribution(f, g, zb, xb, label, search)
    lat, r_in, x_in, r_in_lat = ind.latent, ind.r_in, ind.x_in, ind.r_in_latent_minimal
    have_in = torch.isfinite(r_in)
    # unconstrained: the attacks, and the segment from x to the in-distribution point
    best_unc = torch.full_like(r_in, math.inf)
    attack_norm = _attack_norms(f, xb, label, attacks, search=search, r_in=r_in, have_in=have_in,
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
    row = {"label": label, "latent": lat.cost, "r_in": r_in, "r_unc": best_unc, "attack": attack_norm,
           "x_norm": _flat_norm(xb), "r_in_lat": r_in_lat}
    return row, int(logits.shape[1])


@dataclass(frozen=True)
class _InDistribution:
    """The in-distribution search at one batch: the latent-minimal run, ``r_in`` ``(b,)``, the
    generated point ``x_in = g(z + r)`` that attains it ``(b, *)``, its latent perturbation ``r``
    ``(b, d)``, and ``||g(z + r_lat) - x||`` for the latent-minimal ``r_lat`` alone."""

    latent: Any  # LatentSearchResult
    r_in: Tensor
    x_in: Tensor
    r: Tensor
    r_in_latent_minimal: Tensor


def _in_distribution(f: nn.Module, g: Generator, zb: Tensor, xb: Tensor, label: Tensor,
                     search: LatentSearch) -> _InDistribution:
    """``r_in``: the cheaper (in input space) of the latent-minimal and the input-metric search."""
    lat = _search(_Problem(f, g, zb, label, "latent"), search)
    inp = _search(_Problem(f, g, zb, label, "input"), search)
    with torch.no_grad():
        x_lat = g(zb + lat.r)
        x_inp = g(zb + inp.r)
    r_in_lat = torch.where(lat.found, _flat_norm(x_lat - xb), torch.full_like(lat.cost, math.inf))
    use_lat = r_in_lat < inp.cost
    r_in = torch.where(use_lat, r_in_lat, inp.cost)
    x_in = torch.where(_view(use_lat, xb), x_lat, x_inp)
    r = torch.where(use_lat[:, None], lat.r, inp.r)
    return _InDistribution(latent=lat, r_in=r_in, x_in=x_in, r=r, r_in_latent_minimal=r_in_lat)


def _generate(f: nn.Module, g: Generator, zb: Tensor, *, name: str,
              bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``x = g(zb)`` (checked against the input box) and ``f``'s logits on it."""
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
    return xb, logits


def _attack_norms(f: nn.Module, xb: Tensor, label: Tensor, attacks: Mapping[str, AttackLike], *,
                  search: LatentSearch, r_in: Tensor, have_in: Tensor,
                  bounds: tuple[float, float]) -> Tensor:
    """Per point, the smallest verified label-changing ``||δ||_2`` over the ``attacks`` (each shrunk
    along its ray by bisection), or, without attacks, :func:`pgd_radius_search` bracketed by
    ``r_in`` (by the far corner of the box where ``r_in`` is unknown); ``inf`` where none succeeded."""
    attack_norm = torch.full_like(r_in, math.inf)
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
    return attack_norm


