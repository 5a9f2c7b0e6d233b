"""Theorem 3 of Fawzi, Fawzi & Fawzi (NeurIPS 2018), transferability: two classifiers ``f`` and
``h`` that mostly agree on generated data share small adversarial perturbations. The bound
(:func:`~advlab.evaluation.theory.bounds.transfer_bound`) says that with ``δ >= P(f(g(z)) != h(g(z)))``,

    P(∃ v, ||v||_2 <= η: f(x + v) != f(x) and h(x + v) != h(x)) >= 1 - √(π/2) e^{-(η/L)²/2} - 2δ.

:func:`measure_transfer` measures, per point ``x = g(z)``, the *joint* robustness: the smallest
in-distribution perturbation ``v = g(z + r) - g(z)`` (input metric; ``||r||`` in latent space, where
the bound has ``L = 1``) that changes the label of both classifiers, and reports the rate
``P(r_joint <= η)`` over a list of ``η`` next to the bound. Every perturbation counted was verified
to fool both, so each rate is a *lower* estimate of the probability in the theorem (which allows any
``v``, not only generated ones, and the true minimum).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from advlab._checks import check_int, check_model
from advlab.evaluation.theory.bounds import _check_eta, _check_lipschitz, transfer_bound
from advlab.evaluation.theory.generator import (Generator, _check_generator, _clearly_flipped, _frozen,
                                                _module_of)
from advlab.evaluation.theory.latent import LatentSearch, _bisect_rays, _gram, _metric_solve, _Problem, _search
from advlab.evaluation.theory.measure import _generate
from advlab.losses import cw_margin

METRICS = ("input", "latent")


class _JointProblem(_Problem):
    """``f ∘ g`` and ``h ∘ g`` around ``z``: a perturbation counts only when it flips both."""

    def __init__(self, f: nn.Module, h: nn.Module, g: Generator, z: Tensor, label_f: Tensor, label_h: Tensor,
                 metric: str) -> None:
        super().__init__(f, g, z, label_f, metric)
        self.h, self.label_h = h, label_h

    def flipped(self, idx: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            xs = self.g(self.z[idx] + r)
            both = _clearly_flipped(self.f(xs), self.label[idx]) & _clearly_flipped(self.h(xs), self.label_h[idx])
        self.forwards += 2
        return both, xs

    def joint_margin(self, idx: Tensor, r: Tensor, targets: tuple[Tensor, Tensor] | None = None
                     ) -> tuple[Tensor, Tensor]:
        """``M = min(m_f, m_h)`` ``(b,)`` (``m = max_{k≠y} z_k - z_y``; both fooled iff ``M > 0``;
        with ``targets = (t_f, t_h)`` ``(B,)`` each, ``m = z_t - max_{k≠t} z_k``) and its latent
        gradient ``(b, d)`` at ``z + r``."""
        zs = (self.z[idx] + r).detach().requires_grad_(True)
        xs = self.g(zs)
        if targets is None:
            m = torch.minimum(cw_margin(self.f(xs), self.label[idx]), cw_margin(self.h(xs), self.label_h[idx]))
        else:
            m = torch.minimum(cw_margin(self.f(xs), self.label[idx], targets[0][idx]),
                              cw_margin(self.h(xs), self.label_h[idx], targets[1][idx]))
        (grad,) = torch.autograd.grad(m.sum(), zs)
        self.forwards += 2
        return m.detach(), grad


def _joint_deepfool(prob: _JointProblem, *, steps: int, overshoot: float,
                    targets: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """DeepFool on the joint margin ``M`` in latent space (metric ``I`` or ``J_g^T J_g``): step to
    the linearised ``M = 0`` until both labels change; ``found`` ``(B,)``, ``r`` ``(B, d)``."""
    z = prob.z
    found = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
    r_best = torch.zeros_like(z)
    r_total = torch.zeros_like(z)
    active = torch.arange(z.shape[0], device=z.device)
    for _ in range(steps):
        r_now = (1 + overshoot) * r_total[active]
        hit, _ = prob.flipped(active, r_now)
        r_best[active[hit]] = r_now[hit]
        found[active[hit]] = True
        active, r_now = active[~hit], r_now[~hit]
        if active.numel() == 0:
            break
        m, a = prob.joint_margin(active, r_now, targets)
        M = _gram(prob.jacobian(z[active] + r_now)) if prob.metric == "input" else None
        Ma = _metric_solve(M, a[:, None])[:, 0]
        quad = (a * Ma).sum(dim=1).clamp_min(1e-30)
        step = (m.abs() / quad + 1e-4 / quad.sqrt())[:, None] * Ma
        r_total[active] = r_total[active] + step
    return found, r_best


def _ray_extension(prob: _JointProblem, r: Tensor, found: Tensor, *, scales: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Along each single-classifier perturbation ``r`` ``(B, d)``, the first scale in ``scales`` at
    which both labels change (``found`` ``(B,)``, the scaled ``r``)."""
    hit = torch.zeros_like(found)
    out = torch.zeros_like(r)
    for s in scales:
        todo = (found & ~hit).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        both, _ = prob.flipped(todo, s * r[todo])
        out[todo[both]] = s * r[todo[both]]
        hit[todo[both]] = True
    return hit, out


def _joint_targets(f: nn.Module, h: nn.Module, x: Tensor, label_f: Tensor, label_h: Tensor,
                   k: int) -> list[tuple[Tensor, Tensor]]:
    """Up to ``k`` target pairs ``(t_f, t_h)`` per point for the targeted joint searches: the classes
    other than both labels with the highest summed logits; with two classes where ``f`` and ``h``
    disagree, the swap ``(label_h, label_f)`` (the only way to fool both)."""
    with torch.no_grad():
        score = f(x) + h(x)
    num_classes = score.shape[1]
    score = score.scatter(1, label_f[:, None], -math.inf).scatter(1, label_h[:, None], -math.inf)
    free = int(num_classes - 2 if bool((label_f != label_h).any()) else num_classes - 1)
    out = []
    for j in range(min(k, max(free, 0))):
        c = score.topk(j + 1, dim=1).indices[:, j]
        ok = torch.isfinite(score.gather(1, c[:, None]).squeeze(1))
        out.append((torch.where(ok, c, label_h), torch.where(ok, c, label_f)))
    if not out:
        out.append((label_h, label_f))
    return out


def joint_search(f: nn.Module, h: nn.Module, g: Generator, z: Tensor, *, metric: str = "input",
                 search: LatentSearch | None = None, label_f: Tensor | None = None,
                 label_h: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The smallest latent perturbation found that changes the labels of *both* ``f`` and ``h`` at
    ``g(z)``: ``(cost (B,), r (B, d))``, cost ``||g(z + r) - g(z)||_2`` (``metric="input"``) or
    ``||r||_2`` (``"latent"``), ``inf`` where none was found.

    Candidates, each verified to flip both and shrunk along its ray by bisection: DeepFool on the
    joint margin ``min(m_f, m_h)``, untargeted and towards the ``search.targets`` (at least one)
    classes other than both labels with the highest summed logits; each classifier's own minimal perturbation
    (:func:`latent_search`), scaled up by ``1, 1.05, ..., 3`` and geometrically to 10 until it also fools the other.
    """
    search = search or LatentSearch()
    with torch.no_grad():
        x = g(z)
        label_f = f(x).argmax(dim=1) if label_f is None else label_f
        label_h = h(x).argmax(dim=1) if label_h is None else label_h
    prob = _JointProblem(f, h, g, z, label_f, label_h, metric)
    cands: list[tuple[Tensor, Tensor]] = [_joint_deepfool(prob, steps=search.steps, overshoot=search.overshoot)]
    for targets in _joint_targets(f, h, x, label_f, label_h, max(search.targets, 1)):
        cands.append(_joint_deepfool(prob, steps=search.steps, overshoot=search.overshoot, targets=targets))
    scales = [1.0 + 0.05 * i for i in range(40)] + np.geomspace(3.0, 10.0, 25).tolist()
    for clf, lab in ((f, label_f), (h, label_h)):
        own = _search(_Problem(clf, g, z, lab, metric), search)
        cands.append(_ray_extension(prob, own.r, own.found, scales=scales))
    cost = torch.full((z.shape[0],), math.inf, device=z.device)
    best_r = torch.zeros_like(z)
    for found, r in cands:
        idx = found.nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        t_hi, _ = _bisect_rays(prob, idx, r[idx], torch.ones(idx.numel(), device=z.device), search.bisection_steps)
        rr = t_hi[:, None] * r[idx]
        c = prob.cost(idx, rr)
        better = c < cost[idx]
        cost[idx[better]] = c[better]
        best_r[idx[better]] = rr[better]
    return cost, best_r


@dataclass(frozen=True)
class TransferRobustness:
    """Theorem 3 for one pair ``(f, h)`` at the points ``x = g(z)``.

    Attributes:
        pair: ``(name_f, name_h)``; ``z`` ``(n, d)``; ``label_f``, ``label_h`` ``(n,)``.
        joint: ``(n,)`` the smallest ``||g(z + r) - g(z)||_2`` found that fools both (``inf``: none).
        joint_latent: ``(n,)`` the same in latent space, ``||r||_2`` (bound with ``L = 1``).
        delta: the disagreement ``P(f(g(z)) != h(g(z)))``, estimated on ``delta_samples`` fresh codes.
        lipschitz: the ``L`` of the bound in input space.
        f_transfers: fraction of points where ``f``'s own minimal in-distribution perturbation also
            changes ``h``'s label (plain transfer, without any joint search).
    """

    pair: tuple[str, str]
    z: Tensor
    label_f: Tensor
    label_h: Tensor
    joint: Tensor
    joint_latent: Tensor
    delta: float
    lipschitz: float
    f_transfers: float
    delta_samples: int = 0
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @property
    def name(self) -> str:
        return f"{self.pair[0]} & {self.pair[1]}"

    def rate(self, etas: Sequence[float] | np.ndarray, *, metric: str = "input") -> np.ndarray:
        """Measured ``P(r_joint <= η)`` at each ``η`` (a lower estimate of the theorem's probability)."""
        arr, _ = _check_eta(etas)
        v = (self.joint if metric == "input" else self.joint_latent).double().cpu().numpy()
        return (v[None, :] <= np.atleast_1d(arr)[:, None]).mean(axis=1)

    def bound(self, etas: Sequence[float] | np.ndarray, *, metric: str = "input") -> np.ndarray:
        """Theorem 3 at ``etas`` with this pair's ``δ`` (``latent``: ``L = 1``)."""
        return np.atleast_1d(transfer_bound(etas, self.lipschitz if metric == "input" else 1.0, delta=self.delta))

    def default_etas(self, metric: str = "input", count: int = 8) -> np.ndarray:
        """``count`` radii up to twice Theorem 1's median bound ``L √(ln 2π)``."""
        from advlab.evaluation.theory.bounds import median_upper_bound
        top = 2.0 * median_upper_bound(self.lipschitz if metric == "input" else 1.0)
        return np.linspace(top / count, top, count)

    def summary(self, etas: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"pair": list(self.pair), "n": self.n, "delta": self.delta,
                               "delta_samples": self.delta_samples, "lipschitz": self.lipschitz,
                               "f_transfers": self.f_transfers,
                               "found": int(torch.isfinite(self.joint).sum()),
                               "median_joint": float(np.median(self.joint.double().cpu().numpy())),
                               "median_joint_latent": float(np.median(self.joint_latent.double().cpu().numpy()))}
        for metric in METRICS:
            e = self.default_etas(metric) if etas is None or metric == "latent" else np.asarray(etas, dtype=float)
            out[metric] = {"eta": e.tolist(), "rate": self.rate(e, metric=metric).tolist(),
                           "bound": self.bound(e, metric=metric).tolist()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"pair": list(self.pair), "z": self.z.tolist(), "label_f": self.label_f.tolist(),
                "label_h": self.label_h.tolist(), "joint": self.joint.tolist(),
                "joint_latent": self.joint_latent.tolist(), "delta": self.delta, "lipschitz": self.lipschitz,
                "f_transfers": self.f_transfers, "delta_samples": self.delta_samples, "seconds": self.seconds,
                "config": self.config}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferRobustness:
        return cls(pair=(str(data["pair"][0]), str(data["pair"][1])), z=torch.tensor(data["z"], dtype=torch.float32),
                   label_f=torch.tensor(data["label_f"], dtype=torch.long),
                   label_h=torch.tensor(data["label_h"], dtype=torch.long),
                   joint=torch.tensor(data["joint"], dtype=torch.float32),
                   joint_latent=torch.tensor(data["joint_latent"], dtype=torch.float32),
                   delta=float(data["delta"]), lipschitz=float(data["lipschitz"]),
                   f_transfers=float(data["f_transfers"]), delta_samples=int(data.get("delta_samples", 0)),
                   seconds=float(data.get("seconds", 0.0)), config=dict(data.get("config", {})))


def measure_transfer(f: nn.Module, h: nn.Module, g: Generator, z: Tensor, *, lipschitz: float,
                     names: tuple[str, str] = ("f", "h"), search: LatentSearch | None = None,
                     delta_samples: int = 10_000, seed: int = 0, batch_size: int = 256,
                     bounds: tuple[float, float] = (0.0, 1.0)) -> TransferRobustness:
    """Theorem 3 for ``f`` and ``h`` at ``x = g(z)``: the joint in-distribution robustness per point
    (:func:`joint_search`, input and latent metric), the disagreement ``δ`` on ``delta_samples``
    codes ``z' ~ N(0, I)`` drawn from ``seed``, and ``L`` for the bound. ``f`` and ``h`` are left
    unchanged."""
    check_model(f)
    check_model(h)
    L = _check_lipschitz(lipschitz)
    check_int("delta_samples", delta_samples)
    check_int("batch_size", batch_size)
    if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
        raise ValueError("z must be a float tensor of latent codes (n, d)")
    d = int(z.shape[1])
    _check_generator(g, d, z.device)
    search = search or LatentSearch()
    t0 = time.perf_counter()
    parts: dict[str, list[Tensor]] = {k: [] for k in ("label_f", "label_h", "joint", "joint_latent", "transfers")}
    with _frozen(f, h, _module_of(g)):
        for i in range(0, z.shape[0], batch_size):
            zb = z[i:i + batch_size].detach()
            xb, lf = _generate(f, g, zb, name=names[0], bounds=bounds)
            _, lh = _generate(h, g, zb, name=names[1], bounds=bounds)
            label_f, label_h = lf.argmax(dim=1), lh.argmax(dim=1)
            cost_in, _ = joint_search(f, h, g, zb, metric="input", search=search, label_f=label_f, label_h=label_h)
            cost_lat, _ = joint_search(f, h, g, zb, metric="latent", search=search, label_f=label_f,
                                       label_h=label_h)
            own = _search(_Problem(f, g, zb, label_f, "input"), search)
            with torch.no_grad():
                transfers = own.found & _clearly_flipped(h(g(zb + own.r)), label_h)
            for key, value in (("label_f", label_f), ("label_h", label_h), ("joint", cost_in),
                               ("joint_latent", cost_lat), ("transfers", transfers)):
                parts[key].append(value)
        zz = torch.randn(delta_samples, d, generator=torch.Generator(device=z.device).manual_seed(seed),
                         device=z.device)
        disagree = 0
        with torch.no_grad():
            for i in range(0, delta_samples, 1024):
                xs = g(zz[i:i + 1024])
                disagree += int((f(xs).argmax(dim=1) != h(xs).argmax(dim=1)).sum())
    cat = {k: torch.cat(v) for k, v in parts.items()}
    return TransferRobustness(pair=(str(names[0]), str(names[1])), z=z.detach().clone(), label_f=cat["label_f"],
                              label_h=cat["label_h"], joint=cat["joint"], joint_latent=cat["joint_latent"],
                              delta=disagree / delta_samples, lipschitz=L,
                              f_transfers=float(cat["transfers"].float().mean()), delta_samples=delta_samples,
                              seconds=time.perf_counter() - t0,
                              config={"search": dataclasses.asdict(search), "seed": seed})
