"""Minimal-norm robustness: per-point distances to the decision boundary, and what follows.

A minimal-norm attack (DeepFool, Carlini-Wagner, FMN) returns for each point the size of the
smallest perturbation it found. Kept per point, these distances give robust accuracy at *every*
ε at once: ``accuracy(ε) = #{i : d_i > ε} / n``, with ``d_i = 0`` for points the model already
misclassifies and ``d_i = inf`` for points no attack broke. With several attacks, each point keeps
the smallest distance any of them found (the worst case per point, STYLE principle 6).

Everything a report needs is data here: the distances (for a histogram or an ECDF), the
robust-accuracy curve on any grid, quantiles; :meth:`MinimalNorms.to_json` stores them with
their provenance, and :meth:`MinimalNorms.from_json` reads them back.

Example:
    >>> from advlab.attacks import DeepFool, FMN
    >>> mn = measure(model, x, y, attacks=[DeepFool(norm="l2"), FMN(norm="l2")], norm="l2")
    >>> mn.median(), mn.robust_accuracy(0.5)
    >>> eps, acc = mn.curve(num=50)                   # a robust-accuracy-vs-ε curve
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.attacks.contract import AttackLike
from advlab.attacks._base import config_repr
from advlab._checks import check_inputs, check_model
from advlab.evaluation._attack import CleanCounts
from advlab.evaluation.robustness import clean_predictions, provenance
from advlab.threat import canonical_norm

__all__ = ["MinimalNorms", "measure", "quantiles", "robust_accuracy_curve"]


def _as_distances(distances: Tensor | Sequence[float]) -> Tensor:
    d = torch.as_tensor(distances, dtype=torch.float64).flatten().cpu()
    if d.numel() == 0:
        raise ValueError("distances is empty; pass one distance per point")
    if bool(torch.isnan(d).any()) or bool((d < 0).any()):
        raise ValueError("distances must be >= 0 (0: misclassified clean, inf: never broken), "
                         "without NaN")
    return d


def robust_accuracy_curve(distances: Tensor | Sequence[float],
                          eps_grid: Tensor | Sequence[float]) -> Tensor:
    """Robust accuracy at every ε of ``eps_grid``: the fraction of points with distance ``> ε``.

    One sort and one ``searchsorted``, ``O((n + m) log n)`` for ``n`` points and ``m`` radii. A
    point whose distance equals ε counts as broken (a perturbation of norm ε is inside the
    ε-ball). The curve is non-increasing in ε for any grid order.

    Args:
        distances: ``(n,)`` per-point minimal distances (0 for misclassified, ``inf`` for never broken).
        eps_grid: ``(m,)`` radii, ``>= 0``, any order.

    Returns:
        ``(m,)`` float64 robust accuracies.
    """
    d = _as_distances(distances)
    grid = torch.as_tensor(eps_grid, dtype=torch.float64).flatten().cpu()
    if bool(torch.isnan(grid).any()) or bool((grid < 0).any()):
        raise ValueError("eps_grid must hold radii >= 0")
    broken = torch.searchsorted(torch.sort(d).values, grid, right=True)  # #{d_i <= ε}
    return (d.numel() - broken).to(torch.float64) / d.numel()


def quantiles(distances: Tensor | Sequence[float], qs: Sequence[float]) -> list[float]:
    """Quantiles of per-point distances (linear interpolation), ``inf`` where they reach the
    points never broken. ``quantiles(d, [0.5])[0]`` is the median distance: the ε at which the
    robust accuracy over these points falls to one half."""
    d = torch.sort(_as_distances(distances)).values
    out = []
    for q in qs:
        if not 0 <= q <= 1:
            raise ValueError(f"quantiles must be in [0, 1], got {q!r}")
        pos = q * (d.numel() - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        a, b = float(d[lo]), float(d[hi])
        out.append(a if lo == hi or a == b else (math.inf if math.isinf(b) else a + (pos - lo) * (b - a)))
    return out


@dataclass
class MinimalNorms(CleanCounts):
    """Per-point minimal distances from one or several minimal-norm attacks.

    Attributes:
        distances: ``(n,)`` float64, the smallest norm of a successful perturbation over all
            attacks; ``0`` for points misclassified clean, ``inf`` for points no attack broke.
        norm: ``"l2"``, ``"linf"`` or ``"l1"``.
        correct: ``(n,)`` bool, the model classifies the clean point correctly.
        by_attack: ``{name: (n,) distances}`` for each attack alone (same conventions).
        best_attack: ``(n,)`` int64 index into :attr:`attacks` of the attack that found
            ``distances[i]`` (``-1`` for misclassified or never-broken points).
        seconds, grads: ``{name: ...}`` wall time and backward passes each attack spent.
        provenance: library versions, code revision, attack configurations, batch size.
    """

    distances: Tensor
    norm: str
    correct: Tensor
    by_attack: dict[str, Tensor] = field(default_factory=dict)
    best_attack: Tensor | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    grads: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.distances = _as_distances(self.distances)
        self.norm = canonical_norm(self.norm)
        self.correct = torch.as_tensor(self.correct, dtype=torch.bool).flatten().cpu()
        if self.correct.shape != self.distances.shape:
            raise ValueError(f"correct has shape {tuple(self.correct.shape)} but distances "
                             f"{tuple(self.distances.shape)}")
        if bool((self.distances[~self.correct] != 0).any()):
            raise ValueError("points misclassified clean must have distance 0")
        self.by_attack = {k: _as_distances(v) for k, v in self.by_attack.items()}

    # -- counts ---------------------------------------------------------------------------------

    @property
    def n_unbroken(self) -> int:
        """Correctly classified points no attack broke (distance ``inf``)."""
        return int(torch.isinf(self.distances).sum())

    @property
    def attacks(self) -> list[str]:
        return list(self.by_attack)

    # -- curves and statistics ------------------------------------------------------------------

    def robust_accuracy(self, eps: float) -> float:
        """Robust accuracy over all ``n`` points at radius ``eps``."""
        return float(robust_accuracy_curve(self.distances, [eps])[0])

    def robust_accuracy_curve(self, eps_grid: Tensor | Sequence[float], *,
                              attack: str | None = None) -> Tensor:
        """Robust accuracy over all ``n`` points at each ε (of one attack alone with ``attack``)."""
        return robust_accuracy_curve(self._d(attack), eps_grid)

    def curve(self, *, num: int = 50, eps_max: float | None = None,
              attack: str | None = None) -> tuple[Tensor, Tensor]:
        """``(eps, accuracy)`` on ``num`` evenly spaced radii from 0 to ``eps_max`` (default: the
        largest finite distance), ready to plot."""
        if num < 2:
            raise ValueError(f"num must be >= 2, got {num}")
        finite = self.distances[torch.isfinite(self.distances)]
        top = eps_max if eps_max is not None else (float(finite.max()) if finite.numel() else 1.0)
        grid = torch.linspace(0.0, top if top > 0 else 1.0, num, dtype=torch.float64)
        return grid, self.robust_accuracy_curve(grid, attack=attack)

    def quantiles(self, qs: Sequence[float], *, correct_only: bool = False,
                  attack: str | None = None) -> list[float]:
        """Quantiles of the distances over all points, or over the correctly classified ones."""
        d = self._d(attack)
        return quantiles(d[self.correct] if correct_only else d, qs)

    def median(self, *, correct_only: bool = False, attack: str | None = None) -> float:
        """Median distance (over the correctly classified points with ``correct_only``; this is
        the "median perturbation size" papers report)."""
        return self.quantiles([0.5], correct_only=correct_only, attack=attack)[0]

    def histogram(self, *, bins: int = 20, value_range: tuple[float, float] | None = None,
                  attack: str | None = None) -> dict[str, Any]:
        """Distribution of the finite, positive distances of the correctly classified points.

        Returns ``{"edges": [bins + 1], "counts": [bins], "n_zero": misclassified clean,
        "n_inf": never broken, "n": all points}``; the counts, ``n_zero`` and ``n_inf`` add up
        to ``n`` (distances outside an explicit ``value_range`` are left out of ``counts``).
        """
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        d = self._d(attack)
        broken = d[self.correct & torch.isfinite(d)]
        if value_range is None:
            top = float(broken.max()) if broken.numel() else 0.0
            value_range = (0.0, top if top > 0 else 1.0)
        lo, hi = value_range
        counts = torch.histc(broken, bins=bins, min=lo, max=hi) if broken.numel() \
            else torch.zeros(bins, dtype=torch.float64)
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
        return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()],
                "n_zero": int((~self.correct).sum()), "n_inf": int(torch.isinf(d).sum()), "n": self.n}

    def sorted_distances(self, *, attack: str | None = None) -> Tensor:
        """The finite distances of the correctly classified points, ascending (an ECDF's x)."""
        d = self._d(attack)
        return torch.sort(d[self.correct & torch.isfinite(d)]).values

    def summary(self) -> dict[str, Any]:
        q = self.quantiles([0.25, 0.5, 0.75], correct_only=True)
        return {"norm": self.norm, "n": self.n, "n_correct": self.n_correct,
                "clean_accuracy": self.clean_accuracy, "n_unbroken": self.n_unbroken,
                "median": self.median(), "median_correct": q[1], "q25_correct": q[0],
                "q75_correct": q[2],
                "median_correct_by_attack": {a: self.median(correct_only=True, attack=a)
                                             for a in self.attacks}}

    def _d(self, attack: str | None) -> Tensor:
        if attack is None:
            return self.distances
        if attack not in self.by_attack:
            raise KeyError(f"no attack {attack!r}; have {', '.join(self.by_attack) or 'none'}")
        return self.by_attack[attack]

    # -- storage --------------------------------------------------------------------------------

    def to_dict(self, *, curve_points: int = 50) -> dict[str, Any]:
        """Plain data (``inf`` stored as ``None``) with a summary and a ready-made curve."""
        def enc(t: Tensor) -> list[float | None]:
            return [None if math.isinf(v) else v for v in t.tolist()]
        eps, acc = self.curve(num=curve_points)
        return {
            "norm": self.norm,
            "summary": _finite_json(self.summary()),
            "curve": {"eps": eps.tolist(), "robust_accuracy": acc.tolist()},
            "distances": enc(self.distances),
            "correct": self.correct.tolist(),
            "by_attack": {k: enc(v) for k, v in self.by_attack.items()},
            "best_attack": self.best_attack.tolist() if self.best_attack is not None else None,
            "seconds": self.seconds,
            "grads": self.grads,
            "provenance": self.provenance,
        }

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(_finite_json(self.to_dict()), indent=1, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MinimalNorms":
        def dec(v: list[float | None]) -> Tensor:
            return torch.tensor([math.inf if e is None else e for e in v], dtype=torch.float64)
        best = data.get("best_attack")
        return cls(distances=dec(data["distances"]), norm=data["norm"],
                   correct=torch.tensor(data["correct"], dtype=torch.bool),
                   by_attack={k: dec(v) for k, v in data.get("by_attack", {}).items()},
                   best_attack=torch.tensor(best, dtype=torch.long) if best is not None else None,
                   seconds=dict(data.get("seconds", {})), grads=dict(data.get("grads", {})),
                   provenance=dict(data.get("provenance", {})))

    @classmethod
    def from_json(cls, text_or_path: str) -> "MinimalNorms":
        text = text_or_path
        if not text_or_path.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as fh:
                text = fh.read()
        return cls.from_dict(json.loads(text))


def _finite_json(obj: Any) -> Any:
    """``inf`` (and NaN) floats, at any depth, as ``None``: strict JSON has no infinity."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


def measure(model: nn.Module, x: Tensor, y: Tensor, *,
            attacks: Sequence[AttackLike] | Mapping[str, AttackLike], norm: str,
            batch_size: int = 256, progress: bool = True) -> MinimalNorms:
    """Per-point minimal distances of ``(x, y)`` under ``norm``, the smallest over ``attacks``.

    Each attack runs on every correctly classified point (a later attack can always find a
    smaller perturbation, so there is no cascade); a success counts with the norm of the
    perturbation, recomputed here from ``x_adv``.

    Args:
        model: an ``nn.Module`` returning logits.
        x, y: the evaluation set, ``(N, *)`` and ``(N,)``.
        attacks: minimal-norm attack configurations (``DeepFool``, ``CarliniWagnerL2``, ``FMN``
            or anything with ``norm`` and ``bounds`` returning an ``AttackResult``), as a list or
            a ``{name: attack}`` mapping. Every attack must minimise ``norm``.
        norm: ``"l2"``, ``"linf"`` or ``"l1"``.
        batch_size: points per attack call.

    Example:
        >>> mn = measure(model, x, y, attacks={"DF": DeepFool(), "FMN": FMN()}, norm="l2")
        >>> mn.robust_accuracy_curve([0.25, 0.5, 1.0]), mn.median(correct_only=True)
    """
    check_model(model)
    norm = canonical_norm(norm)
    named: dict[str, Any] = dict(attacks) if isinstance(attacks, Mapping) else {}
    if not named:
        for a in attacks:  # type: ignore[union-attr]
            key = type(a).__name__
            while key in named:
                key += "'"
            named[key] = a
    if not named:
        raise ValueError("measure needs at least one minimal-norm attack")
    for name, a in named.items():
        a_norm = getattr(a, "norm", None)
        if a_norm is None or canonical_norm(a_norm) != norm:
            raise ValueError(f"attack {name!r} minimises norm {a_norm!r}, not {norm!r}; distances "
                             "under different norms cannot be combined")
        if hasattr(a, "eps"):
            raise ValueError(f"attack {name!r} has an eps: it is a fixed-budget attack; use a "
                             "minimal-norm attack (DeepFool, CarliniWagnerL2, FMN) or evaluate()")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    bounds = next(iter(named.values())).bounds
    check_inputs(model, x, y, bounds=bounds)
    n = x.shape[0]
    correct = (clean_predictions(model, x, y=y, batch_size=max(batch_size, 512)) == y).cpu()
    idx = correct.nonzero().squeeze(1)
    by_attack: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    grads: dict[str, int] = {}
    bar = tqdm(named.items(), desc="minimal norms", disable=not progress, leave=False)
    for name, attack in bar:
        bar.set_postfix_str(name)
        d = torch.zeros(n, dtype=torch.float64)
        d[idx] = math.inf
        spent = 0
        t0 = time.perf_counter()
        for i in range(0, int(idx.numel()), batch_size):
            b = idx[i:i + batch_size]
            bd = b.to(x.device)
            res = attack(model, x[bd], y[bd])
            found = res.threat.distance(res.x_adv, x[bd]).double().cpu()
            d[b] = torch.where(res.success.cpu(), found, torch.full_like(found, math.inf))
            spent += int(res.num_grads.sum())
        seconds[name] = time.perf_counter() - t0
        grads[name] = spent
        by_attack[name] = d
    stacked = torch.stack(list(by_attack.values()))  # (A, N)
    distances, best = stacked.min(dim=0)
    best = torch.where(correct & torch.isfinite(distances), best, torch.full_like(best, -1))
    prov = provenance(norm=norm, batch_size=batch_size,
                      attacks={k: config_repr(v) for k, v in named.items()})
    return MinimalNorms(distances=distances, norm=norm, correct=correct, by_attack=by_attack,
                        best_attack=best, seconds=seconds, grads=grads, provenance=prov)
