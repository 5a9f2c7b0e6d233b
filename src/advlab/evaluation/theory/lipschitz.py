"""An empirical lower estimate of the generator's Lipschitz constant ``L``, the constant in
Theorem 1's bounds (see :func:`lipschitz_estimate`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from advlab._checks import check_int, check_number
from advlab.evaluation.theory.generator import (Generator, _check_generator, _flat_norm, _frozen,
                                                _generator_device, _module_of)


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
    latent_dim = check_int("latent_dim", latent_dim)
    check_int("samples", samples)
    check_int("ascent_starts", ascent_starts, 0)
    check_int("ascent_steps", ascent_steps, 0)
    check_int("power_iterations", power_iterations)
    check_int("batch_size", batch_size)
    check_number("step_size", step_size)
    device = _generator_device(g)
    _check_generator(g, latent_dim, device)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    settings = {"samples": samples, "ascent_starts": ascent_starts, "ascent_steps": ascent_steps,
                "step_size": float(step_size), "power_iterations": power_iterations}

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, device=device)

    with _frozen(_module_of(g)):
        pair_best, jac_best, z_best, starts = _sample(g, randn, latent_dim=latent_dim, samples=samples,
                                                      batch_size=batch_size,
                                                      power_iterations=power_iterations)
        starts = sorted(starts, key=lambda t: -t[0])[:ascent_starts]
        if starts and ascent_steps:
            jac_best, z_best = _ascend(g, starts, steps=ascent_steps, step_size=step_size,
                                       best=(jac_best, z_best))
    return LipschitzEstimate(value=max(pair_best, jac_best), pair_ratio=pair_best, jacobian_norm=jac_best,
                             z_argmax=z_best, settings=settings)


def _sample(g: Generator, randn: Callable[..., Tensor], *, latent_dim: int, samples: int, batch_size: int,
            power_iterations: int) -> tuple[float, float, Tensor, list[tuple[float, Tensor, Tensor]]]:
    """Steps 1 and 2 of :func:`lipschitz_estimate`: the best pair ratio, the best ``σ(z)`` and
    where it was attained, and every start point ``(σ, z, v)`` for the ascent."""
    pair_best = 0.0
    jac_best, z_best = 0.0, torch.zeros(latent_dim)
    starts: list[tuple[float, Tensor, Tensor]] = []
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
    return pair_best, jac_best, z_best, starts


def _ascend(g: Generator, starts: list[tuple[float, Tensor, Tensor]], *, steps: int, step_size: float,
            best: tuple[float, Tensor]) -> tuple[float, Tensor]:
    """Step 3 of :func:`lipschitz_estimate`: normalised gradient ascent of ``σ(z)`` from ``starts``;
    returns the largest ``σ`` seen (``best`` or better) and where it was attained."""
    jac_best, z_best = best
    z = torch.stack([s[1] for s in starts])
    v = torch.stack([s[2] for s in starts])
    for _ in range(steps):
        z = z.detach().requires_grad_(True)
        _, jv = torch.func.jvp(g, (z,), (v,))
        (grad,) = torch.autograd.grad(_flat_norm(jv).sum(), z)
        step = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        z = (z + step_size * step).detach()
        v, sigma = _power_iteration(g, z, v, 3)
        k = int(sigma.argmax())
        if float(sigma[k]) > jac_best:
            jac_best, z_best = float(sigma[k]), z[k].detach().cpu()
    return jac_best, z_best
