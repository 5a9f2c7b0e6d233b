"""Theorem 2 of Fawzi, Fawzi & Fawzi (NeurIPS 2018): the classifier that first projects its input
on the data manifold, ``f̃(x) = f(g(z*))`` with ``z* = argmin_z ||g(z) - x||_2`` (eq. 7), has
unconstrained robustness at least half the in-distribution robustness of ``f``:
``r_unc(f̃)(x) >= r_in(f)(x) / 2`` at every ``x = g(z)``.

The argument (and what :func:`measure_projected` checks per point): if ``||x' - x|| = ρ`` and
``f̃(x') != f(x)``, the projection ``p = g(z*(x'))`` is a generated image of another class, and,
the projection being exact, ``||p - x'|| <= ||x - x'|| = ρ`` (``x = g(z)`` is a candidate), so
``r_in(x) <= ||p - x|| <= 2ρ``. The projection here is *approximate* (Adam from a few starts), so
the theorem can fail; :class:`ProjectedRobustness` tells the two reasons a measured pair can
violate ``r_unc(f̃) >= r_in / 2`` apart:

* the latent search over-estimated ``r_in`` (the attack on ``f̃`` found a closer generated point of
  another class: ``p``); ``r_in_tight = min(r_in, ||p - x||)`` corrects for it;
* the projection of ``x'`` was worse than the code of ``x`` itself, ``||p - x'|| > ρ``: the only
  way ``ρ < r_in_tight / 2`` can happen, by the triangle inequality.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_model, check_number
from advlab.evaluation.theory.generator import (Generator, _check_generator, _clearly_flipped, _flat_norm,
                                                _frozen, _generator_device, _module_of)
from advlab.evaluation.theory.latent import LatentSearch
from advlab.evaluation.theory.measure import _bisect_input, _generate, _in_distribution
from advlab.threat import _view, lp_norm


class ProjectedClassifier(nn.Module):
    """``f̃(x) = f(g(z*(x)))``, ``z* = argmin_z ||g(z) - x||_2`` (Fawzi et al. 2018, eq. 7).

    The projection runs ``steps`` steps of Adam (learning rate ``lr``, cosine-decayed to
    ``lr / 100``) on ``||g(z) - x||²`` from ``restarts`` starts per point: ``z = 0`` and
    ``restarts - 1`` codes ``init_scale · N(0, I)`` drawn once from ``seed`` (the same starts for
    every point and every call, so ``f̃`` is a deterministic function of ``x`` and a point's answer
    does not depend on the rest of its batch), plus ``encoder(x)`` when an encoder is given. Each
    run ends at its last iterate (or its best, if that is clearly lower); per point the run with the
    lowest residual is kept.

    The output is *not* differentiable in ``x``: the logits are computed from the detached ``z*``
    (differentiating through the argmin of a non-convex problem gives nothing useful), so a
    gradient attack on ``f̃`` raises rather than silently sees a zero gradient. Attack it with a
    decision-based attack through an :class:`advlab.oracle.Oracle`, or with BPDA
    (:meth:`bpda`: exact forward, ``f``'s gradient at the projection in the backward pass).

    Args:
        f: the classifier on ``g``'s outputs (logits).
        g: the generator ``(B, latent_dim) -> (B, *)``.
        latent_dim: ``d``, checked by running ``g`` once.
        steps, lr, restarts, init_scale, seed: the projection's optimiser (see above).
        encoder: optional ``(B, *) -> (B, d)`` warm start (e.g. a VAE's encoder mean).

    Example:
        >>> ft = ProjectedClassifier(cnn, vae.decoder, latent_dim=8, steps=200, restarts=4)
        >>> z_star, residual = ft.project(x)          # (B, 8), (B,) = ||g(z*) - x||
        >>> HopSkipJump(budget=2000)(Oracle(ft, output="label"), x, y)
    """

    def __init__(self, f: nn.Module, g: Generator, latent_dim: int, *, steps: int = 300, lr: float = 0.2,
                 restarts: int = 4, init_scale: float = 1.0, seed: int = 0,
                 encoder: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        check_model(f)
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.steps = check_int("steps", steps)
        self.lr = check_number("lr", lr)
        self.restarts = check_int("restarts", restarts)
        self.init_scale = check_number("init_scale", init_scale, low_open=False)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if encoder is not None and not callable(encoder):
            raise TypeError(f"encoder must be a callable (B, *) -> (B, latent_dim) or None, "
                            f"got {type(encoder).__name__}")
        self.seed = seed
        device = _generator_device(g)
        self.sample_shape = _check_generator(g, self.latent_dim, device)
        self.f = f
        self.g = g  # an nn.Module generator is registered, so .eval() and .to() reach it
        self.encoder = encoder
        starts = torch.randn(self.restarts - 1, self.latent_dim,
                             generator=torch.Generator().manual_seed(seed)) * self.init_scale
        self.register_buffer("starts", torch.cat([torch.zeros(1, self.latent_dim), starts]).to(device),
                             persistent=False)
        self.train(f.training)

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, steps={self.steps}, lr={self.lr:g}, restarts={self.restarts}, "
                f"init_scale={self.init_scale:g}, seed={self.seed}, encoder={self.encoder is not None}")

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z*`` ``(B, d)`` and the residual ``||g(z*) - x||_2`` ``(B,)`` for inputs ``x`` ``(B, *)``."""
        if not isinstance(x, Tensor) or x.dim() < 2 or tuple(x.shape[1:]) != self.sample_shape:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ProjectedClassifier: inputs must have shape (B, {', '.join(map(str, self.sample_shape))}) "
                             f"like the generator's outputs, got {shape}")
        b, d = x.shape[0], self.latent_dim
        target = x.detach()
        starts = [self.starts.to(x.dtype)[None].expand(b, -1, -1)]  # (B, R, d)
        if self.encoder is not None:
            with torch.no_grad():
                enc = self.encoder(target)
            if not isinstance(enc, Tensor) or tuple(enc.shape) != (b, d):
                raise ValueError(f"encoder must return codes (B, {d}) = ({b}, {d}), got "
                                 f"{tuple(enc.shape) if isinstance(enc, Tensor) else type(enc).__name__}")
            starts.append(enc.detach()[:, None])
        z0 = torch.cat(starts, dim=1)  # (B, R', d)
        r = z0.shape[1]
        flat_x = target.reshape(b, 1, -1).expand(b, r, -1).reshape(b * r, -1)  # (B R', D)
        z = z0.reshape(b * r, d).clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        best_z = z.detach().clone()
        best = torch.full((b * r,), math.inf, device=x.device, dtype=x.dtype)
        with torch.enable_grad():
            for t in range(self.steps + 1):
                resid = (self.g(z).reshape(b * r, -1) - flat_x).pow(2).sum(dim=1)  # (B R',)
                better = resid.detach() < best
                best = torch.where(better, resid.detach(), best)
                best_z = torch.where(better[:, None], z.detach(), best_z)
                if t == self.steps:
                    # the last iterate, unless it is clearly worse than the best one: near the optimum
                    # float32 losses stop resolving z (a residual of 3 hides moves of 1e-3), and the
                    # decayed steps make the last iterate the accurate one
                    last = resid.detach() <= best * (1 + 1e-4) + 1e-12
                    best = torch.where(last, resid.detach(), best)
                    best_z = torch.where(last[:, None], z.detach(), best_z)
                    break
                (grad,) = torch.autograd.grad(resid.sum(), z)  # never reaches g's parameters' .grad
                z.grad = grad
                for group in opt.param_groups:
                    group["lr"] = self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t / self.steps)))
                opt.step()
        best = best.view(b, r)
        pick = best.argmin(dim=1)
        rows = torch.arange(b, device=x.device)
        z_star = best_z.view(b, r, d)[rows, pick]
        return z_star.detach(), best[rows, pick].clamp_min(0).sqrt()

    def project_image(self, x: Tensor) -> Tensor:
        """``g(z*(x))``: the projection of ``x`` on the generator's range, shape of ``x``."""
        z_star, _ = self.project(x)
        with torch.no_grad():
            return self.g(z_star).reshape(x.shape)

    def forward(self, x: Tensor) -> Tensor:
        z_star, _ = self.project(x)
        with torch.no_grad():
            return self.f(self.g(z_star))

    def bpda(self) -> nn.Module:
        """BPDA (Athalye et al. 2018) for gradient attacks: forward exactly ``f̃(x)``, backward
        through ``f`` at the projection as if the projection were the identity
        (:class:`advlab.attacks.adaptive.BPDA`)."""
        from advlab.attacks.adaptive import BPDA
        return BPDA(self.project_image, self.f)


@dataclass(frozen=True)
class ProjectedRobustness:
    """Theorem 2 at the points ``x = g(z)`` for one classifier ``f`` and its projection ``f̃``;
    every tensor is ``(n,)`` unless noted.

    Attributes:
        name: the classifier's name; ``z`` ``(n, d)`` the codes; ``label``: ``f(g(z))``.
        r_in: ``f``'s in-distribution robustness, as in :class:`GenerativeRobustness`.
        r_unc_projected: the smallest ``||δ||_2`` found with ``f̃(x + δ) != f(x)`` (0 where the
            projection already changes the label of ``x`` itself), over all of ``attacks``.
        by_attack: attack name -> its own ``(n,)`` norms (``inf`` where it failed).
        r_in_tight: ``min(r_in, ||g(z*(x')) - x||)`` at the best attack point ``x'``: the
            projection of a point ``f̃`` misclassifies is a generated image of another class.
        residual_at_adv: ``||g(z*(x')) - x'||`` at that point (Theorem 2's argument needs it
            ``<= ||x' - x||``); ``residual_at_x``: ``||g(z*(x)) - x||``; ``latent_error``:
            ``||z*(x) - z||``.
        label_kept: ``f̃(x) == f(x)``.
        config: the projection's and the attacks' settings; seconds: wall time.
    """

    name: str
    z: Tensor
    label: Tensor
    r_in: Tensor
    r_unc_projected: Tensor
    r_in_tight: Tensor
    residual_at_adv: Tensor
    residual_at_x: Tensor
    latent_error: Tensor
    label_kept: Tensor
    by_attack: dict[str, Tensor] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @property
    def ratio(self) -> Tensor:
        """``r_unc(f̃) / r_in(f)`` per point (the theorem: ``>= 1/2``; ``nan`` where ``r_in`` is ``inf``)."""
        return torch.where(torch.isfinite(self.r_in), self.r_unc_projected / self.r_in,
                           torch.full_like(self.r_in, math.nan))

    def _measured(self) -> Tensor:
        return torch.isfinite(self.r_in)

    def fraction_half(self, *, tight: bool = False) -> float:
        """Fraction of the points with a finite ``r_in`` where ``r_unc(f̃) >= r_in / 2``
        (``tight``: against ``r_in_tight``)."""
        ok = self._measured()
        if not bool(ok.any()):
            return math.nan
        ref = self.r_in_tight if tight else self.r_in
        return float((self.r_unc_projected[ok] >= 0.5 * ref[ok]).float().mean())

    def violations(self) -> dict[str, int]:
        """Points (with a finite ``r_in``) where ``r_unc(f̃) < r_in / 2``, by reason: ``loose_r_in``
        (none left against ``r_in_tight``: the latent search had over-estimated ``r_in``),
        ``projection`` (still a violation against ``r_in_tight``; then ``||g(z*(x')) - x'|| >
        ||x' - x||``, the projection was not exact), and ``label_changed_at_x`` among those
        (``f̃(x) != f(x)``: the projection of ``x`` itself failed)."""
        ok = self._measured()
        bad = ok & (self.r_unc_projected < 0.5 * self.r_in)
        bad_tight = ok & (self.r_unc_projected < 0.5 * self.r_in_tight)
        return {"total": int(bad.sum()), "loose_r_in": int((bad & ~bad_tight).sum()),
                "projection": int(bad_tight.sum()), "label_changed_at_x": int((bad_tight & ~self.label_kept).sum()),
                "measured": int(ok.sum())}

    def above_r_in(self) -> int:
        """Points where ``r_unc(f̃) > r_in(f)`` (by more than 0.1%). Not a violation of Theorem 2, but
        with an exact projection ``f̃ = f`` on the generator's range, so the in-distribution point
        ``g(z + r)`` would change ``f̃``'s label too: each such point is a projection that missed
        ``g(z + r)`` (or a generator that maps two codes to one image)."""
        ok = self._measured()
        return int((ok & (self.r_unc_projected > self.r_in * 1.001)).sum())

    def summary(self) -> dict[str, Any]:
        ratio = self.ratio.double().cpu().numpy()
        fin = ratio[np.isfinite(ratio)]
        q = (lambda p: float(np.quantile(fin, p)) if fin.size else math.nan)
        return {"n": self.n, "fraction_half": self.fraction_half(), "fraction_half_tight": self.fraction_half(tight=True),
                "violations": self.violations(),
                "ratio": {"min": q(0.0), "q10": q(0.1), "median": q(0.5), "q90": q(0.9), "max": q(1.0)},
                "median_r_in": float(np.median(self.r_in.double().cpu().numpy())),
                "median_r_unc_projected": float(np.median(self.r_unc_projected.double().cpu().numpy())),
                "median_residual_at_x": float(self.residual_at_x.median()),
                "median_latent_error": float(self.latent_error.median()),
                "label_kept": float(self.label_kept.float().mean()),
                "above_r_in": self.above_r_in(),
                "best_attack": {k: int((v <= self.r_unc_projected).sum()) for k, v in self.by_attack.items()}}

    _TENSORS = ("r_in", "r_unc_projected", "r_in_tight", "residual_at_adv", "residual_at_x", "latent_error")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "seconds": self.seconds, "config": self.config,
                               "z": self.z.tolist(), "label": self.label.tolist(),
                               "label_kept": self.label_kept.tolist(),
                               "by_attack": {k: v.tolist() for k, v in self.by_attack.items()}}
        for k in self._TENSORS:
            out[k] = getattr(self, k).tolist()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectedRobustness:
        return cls(name=str(data["name"]), z=torch.tensor(data["z"], dtype=torch.float32),
                   label=torch.tensor(data["label"], dtype=torch.long),
                   label_kept=torch.tensor(data["label_kept"], dtype=torch.bool),
                   by_attack={k: torch.tensor(v, dtype=torch.float32) for k, v in data.get("by_attack", {}).items()},
                   seconds=float(data.get("seconds", 0.0)), config=dict(data.get("config", {})),
                   **{k: torch.tensor(data[k], dtype=torch.float32) for k in cls._TENSORS})


def _default_attacks(budget: int) -> dict[str, Any]:
    """The attacks on ``f̃``: HopSkipJump (decision-based, on ``f̃``'s labels only) and DeepFool/FMN
    through BPDA; each result is verified on ``f̃`` itself."""
    from advlab.attacks.decision import HopSkipJump
    attacks: dict[str, Any] = {"HopSkipJump": HopSkipJump(norm="l2", budget=budget, steps=40)}
    try:
        from advlab.attacks.minimal import FMN, DeepFool
        attacks["BPDA+DeepFool"] = DeepFool(norm="l2", steps=50)
        attacks["BPDA+FMN"] = FMN(norm="l2", steps=100)
    except (ImportError, TypeError, ValueError):  # pragma: no cover - minimal attacks are part of advlab
        pass
    return attacks


def measure_projected(f: nn.Module, g: Generator, z: Tensor, *, name: str = "classifier",
                      projected: ProjectedClassifier | None = None, search: LatentSearch | None = None,
                      attacks: Mapping[str, Any] | None = None, query_budget: int = 2000, seed: int = 0,
                      batch_size: int = 64, bounds: tuple[float, float] = (0.0, 1.0)) -> ProjectedRobustness:
    """Theorem 2 at ``x = g(z)``: ``r_in(f)`` (the latent search of :func:`measure_robustness`) and
    the unconstrained robustness of ``f̃ = projected`` (default ``ProjectedClassifier(f, g, d)``).

    ``r_unc(f̃)`` is the smallest verified label change over: the segment from ``x`` to the
    in-distribution adversarial point ``g(z + r)`` bisected on ``f̃`` (the perturbation the theorem
    is tight for, about ``r_in / 2``); HopSkipJump on ``f̃``'s labels through an
    :class:`~advlab.oracle.Oracle` (``query_budget`` per point, started at ``g(z + r)``); DeepFool
    and FMN through BPDA (:meth:`ProjectedClassifier.bpda`). ``attacks`` replaces the last two
    groups: name -> attack; a name starting with ``"BPDA"`` gets the BPDA model, any attack whose
    ``access`` is ``"labels"`` or ``"scores"`` an oracle, the others ``f̃`` itself. Every result is
    re-checked on ``f̃`` and shrunk along its ray by bisection, so each reported number is the norm
    of a perturbation that changes ``f̃``'s label: an upper bound on the true ``r_unc(f̃)``, like
    any attack. Nothing given is changed; randomness comes from ``seed``.
    """
    check_model(f)
    check_int("batch_size", batch_size)
    check_int("query_budget", query_budget)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError("z must be a float tensor of latent codes (n, d)")
    d = int(z.shape[1])
    if projected is None:
        projected = ProjectedClassifier(f, g, d)
    elif not isinstance(projected, ProjectedClassifier):
        raise TypeError(f"projected must be a ProjectedClassifier, got {type(projected).__name__}")
    if projected.latent_dim != d:
        raise ValueError(f"the projected classifier searches latent codes of dimension {projected.latent_dim} "
                         f"but z has {d}; build it with latent_dim={d}")
    search = search or LatentSearch()
    attacks = _default_attacks(query_budget) if attacks is None else dict(attacks)
    t0 = time.perf_counter()
    parts: dict[str, list[Tensor]] = {}
    gen = torch.Generator(device=z.device).manual_seed(seed)
    with _frozen(f, _module_of(g), projected):
        for i in range(0, z.shape[0], batch_size):
            row = _projected_batch(f, g, projected, z[i:i + batch_size].detach(), name=name, search=search,
                                   attacks=attacks, bounds=bounds, generator=gen)
            for key, value in row.items():
                parts.setdefault(key, []).append(value)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    by_attack = {k[len("attack:"):]: v for k, v in cat.items() if k.startswith("attack:")}
    from advlab.attacks._base import config_repr
    config = {"projection": projected.extra_repr(), "query_budget": query_budget, "seed": seed,
              "attacks": {"segment to g(z + r_in)": "bisection on f̃",
                          **{k: config_repr(a) for k, a in attacks.items()}}}
    return ProjectedRobustness(
        name=name, z=z.detach().clone(), label=cat["label"], r_in=cat["r_in"], r_unc_projected=cat["r_unc"],
        r_in_tight=cat["r_in_tight"], residual_at_adv=cat["residual_adv"], residual_at_x=cat["residual_x"],
        latent_error=cat["latent_error"], label_kept=cat["label_kept"], by_attack=by_attack,
        seconds=time.perf_counter() - t0, config=config)


def _projected_batch(f: nn.Module, g: Generator, ft: ProjectedClassifier, zb: Tensor, *, name: str,
                     search: LatentSearch, attacks: Mapping[str, Any], bounds: tuple[float, float],
                     generator: torch.Generator) -> dict[str, Tensor]:
    from advlab.oracle import Oracle

    xb, logits = _generate(f, g, zb, name=name, bounds=bounds)
    label = logits.argmax(dim=1)
    ind = _in_distribution(f, g, zb, xb, label, search)
    inf = torch.full_like(ind.r_in, math.inf)
    with torch.no_grad():
        z_x, residual_x = ft.project(xb)
        ft_logits = ft.f(ft.g(z_x))
    label_kept = ft_logits.argmax(dim=1) == label
    changed_at_x = _clearly_flipped(ft_logits, label)
    deltas: dict[str, Tensor] = {}
    with torch.no_grad():
        start_ok = _clearly_flipped(ft(ind.x_in), label) & torch.isfinite(ind.r_in)
    # the segment to the in-distribution adversarial point
    have_in = torch.isfinite(ind.r_in)
    seg = (ind.x_in - xb) * _view(have_in.to(xb.dtype), xb)
    deltas["segment"] = seg
    for key, attack in attacks.items():
        access = getattr(attack, "access", "gradients")
        if key.startswith("BPDA"):
            res = attack(ft.bpda(), xb, label)
        elif access in ("labels", "scores"):
            deltas[key] = _query_attack(attack, Oracle(ft, output="label" if access == "labels" else "scores"),
                                        xb, label, start=ind.x_in, start_ok=start_ok, generator=generator)
            continue
        else:
            res = attack(ft, xb, label)
        deltas[key] = (res.x_adv - xb).detach()
    out: dict[str, Tensor] = {}
    best = torch.where(changed_at_x, torch.zeros_like(inf), inf)
    best_delta = torch.zeros_like(xb)
    with torch.no_grad():
        for key, delta in deltas.items():
            ok = _clearly_flipped(ft(xb + delta), label) & ~changed_at_x
            shrunk = _bisect_input(ft, xb, delta, label, search.bisection_steps)
            ok_shrunk = _clearly_flipped(ft(xb + shrunk), label)  # the projection is re-run: check again
            delta = torch.where(_view(ok & ok_shrunk, xb), shrunk, delta)
            norms = torch.where(ok, lp_norm(delta, "l2"), inf)
            if key != "segment":
                out[f"attack:{key}"] = norms
            else:
                out["attack:segment to g(z + r_in)"] = norms
            better = norms < best
            best = torch.where(better, norms, best)
            best_delta = torch.where(_view(better, xb), delta, best_delta)
        # Theorem 2's argument at the best point x' = x + δ: p = g(z*(x')) is a generated image of
        # another class, so r_in <= ||p - x||; the argument needs ||p - x'|| <= ||δ||
        x_adv = xb + best_delta
        z_adv, residual_adv = ft.project(x_adv)
        p = g(z_adv)
        p_flipped = _clearly_flipped(f(p), label)
        via = torch.where(p_flipped & torch.isfinite(best) & (best > 0), _flat_norm(p - xb), inf)
    out.update({"label": label, "r_in": ind.r_in, "r_unc": best, "r_in_tight": torch.minimum(ind.r_in, via),
                "residual_adv": torch.where(torch.isfinite(best), residual_adv, inf),
                "residual_x": residual_x, "latent_error": (z_x - zb).norm(dim=1), "label_kept": label_kept})
    return out


def _query_attack(attack: Any, oracle: Any, xb: Tensor, label: Tensor, *, start: Tensor, start_ok: Tensor,
                  generator: torch.Generator) -> Tensor:
    """A black-box attack on ``f̃``: started at the in-distribution adversarial point where ``f̃``
    misclassifies it (``start_ok``) when the attack takes ``starting_points``, from its own
    initialisation elsewhere; returns ``x_adv - x``."""
    takes_start = "starting_points" in inspect.signature(attack.__call__).parameters
    delta = torch.zeros_like(xb)
    groups = [(start_ok, True), (~start_ok, False)] if takes_start else [(torch.ones_like(start_ok), False)]
    for mask, with_start in groups:
        idx = mask.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        kwargs: dict[str, Any] = {"generator": generator}
        if with_start:
            kwargs["starting_points"] = start[idx]
        res = attack(oracle, xb[idx], label[idx], **kwargs)
        delta[idx] = (res.x_adv - xb[idx]).detach()
    return delta
