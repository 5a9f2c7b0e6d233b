"""How straight an iterative attack's path is: the iterates of I-FGSM / MI-FGSM
(:func:`record_trajectory`) and the cosine similarity of successive updates
(:func:`perturbation_cosine_similarity`), the quantity Dong et al. (CVPR 2018, "Boosting
Adversarial Attacks with Momentum") use to argue that momentum stabilises the update direction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.attacks.contract import Attack
from advlab._checks import check_inputs, check_model, eval_mode
from advlab.attacks._base import config_repr
from advlab.attacks.gradient import IFGSM, MIFGSM
from advlab.evaluation.geometry._common import _predict
from advlab.evaluation.robustness import provenance
from advlab.threat import ThreatModel


@dataclass(frozen=True)
class Trajectory:
    """The iterates of one run of a gradient attack on a batch.

    Attributes:
        iterates: ``(T + 1, B, *)``: ``iterates[0]`` is the start (``x``, or PGD's random start),
            ``iterates[t]`` the point after ``t`` steps; ``iterates[-1]`` is the attack's ``x_adv``.
        directions: ``(T, B, *)``: the step direction of step ``t`` before projection,
            ``dir_p(g_t)`` (or ``dir_p(m_t)`` with momentum), so that
            ``iterates[t + 1] = Π(iterates[t] + α · directions[t])``.
        step_size: ``α``; threat: the threat model; attack: the attack's configuration.
    """

    iterates: Tensor
    directions: Tensor
    step_size: float
    threat: ThreatModel
    attack: str

    @property
    def steps(self) -> int:
        return int(self.directions.shape[0])

    @property
    def x_adv(self) -> Tensor:
        return self.iterates[-1]

    @property
    def updates(self) -> Tensor:
        """``(T, B, *)`` ``x_{t+1} - x_t``, the updates after projection."""
        return self.iterates[1:] - self.iterates[:-1]


def _check_traceable(attack: Attack) -> None:
    """Only a gradient-loop attack exposes its steps, and only a whole run can be followed."""
    schedule = getattr(attack, "schedule", None)
    if not callable(schedule):
        raise TypeError(f"record_trajectory supports the gradient-loop attacks (FGSM, FGM, I-FGSM, "
                        f"PGD, MI-FGSM, MI-FGM), got {type(attack).__name__}")
    sched = schedule()
    if sched.early_stop:
        raise ValueError(f"{type(attack).__name__} has early_stop=True, which freezes points mid-run; "
                         "record the trajectory of the attack with early_stop=False")
    if sched.restarts != 1:
        raise ValueError("record_trajectory follows one run; use PGD with restarts=1")


def record_trajectory(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, *,
                      target: Tensor | None = None,
                      generator: torch.Generator | None = None) -> Trajectory:
    """Run a gradient attack and keep every iterate: the shared step loop's per-step hook.

    The attack runs as it always does (:func:`advlab.attacks.trace`), so
    ``record_trajectory(a, model, x, y).x_adv`` *is* ``a(model, x, y).x_adv``; the hook keeps the
    iterate before the first step (the clean or randomly started point), each projected iterate
    after it, and each step's direction (``sign(g_t)`` / ``sign(m_t)``, before projection).

    Supports the gradient-loop attacks (:class:`FGSM`, :class:`IFGSM`, :class:`MIFGSM`,
    :class:`PGD` with ``restarts=1``, and their L2 forms) with ``early_stop=False``.

    Returns:
        A :class:`Trajectory` with ``T + 1`` iterates ``(T + 1, B, *)`` and ``T`` directions.
    """
    from advlab.attacks.contract import trace

    _check_traceable(attack)
    iterates: list[Tensor] = []
    directions: list[Tensor] = []

    def keep(info: Any) -> None:
        if not iterates:
            iterates.append(info.x_before.clone())
        iterates.append(info.x_after.clone())
        directions.append(info.direction.detach().clone())

    result = trace(attack, model, x, y, on_step=keep, target=target, generator=generator)
    return Trajectory(iterates=torch.stack(iterates), directions=torch.stack(directions),
                      step_size=float(attack.schedule().step_size), threat=result.threat,
                      attack=config_repr(attack))


def successive_cosine(steps: Tensor) -> Tensor:
    """``cos(s_t, s_{t+1})`` per point for a stack ``(T, B, *)`` -> ``(T - 1, B)``; NaN where either
    vector is zero (e.g. an update removed entirely by the projection)."""
    flat = steps.flatten(2).double()                                      # (T, B, d)
    a, b = flat[:-1], flat[1:]
    na, nb = torch.linalg.vector_norm(a, dim=2), torch.linalg.vector_norm(b, dim=2)
    cos = (a * b).sum(dim=2) / (na * nb)
    return torch.where((na > 0) & (nb > 0), cos, torch.full_like(cos, float("nan")))


@dataclass(frozen=True)
class CosineSimilarity:
    """Cosine similarity of successive steps of iterative attacks, per point and step.

    Attributes:
        update_cosine: ``{name: (n, T - 1)}``: ``cos(x_{t+1} - x_t, x_{t+2} - x_{t+1})`` (the updates
            after projection), column ``t`` for the pair of steps ``t + 1`` and ``t + 2``; NaN where
            an update is zero.
        direction_cosine: ``{name: (n, T - 1)}``: the same for the raw step directions
            (``sign(g_t)`` / ``sign(m_t)``, before projection).
        success: ``{name: (n,)}`` bool, the final iterate is misclassified (untargeted).
        configs: ``{name: the attack's configuration}``.
        n: points given; n_used: points attacked (the correctly classified ones by default).
        provenance: library versions, code revision, settings.
    """

    update_cosine: Mapping[str, Tensor]
    direction_cosine: Mapping[str, Tensor]
    success: Mapping[str, Tensor]
    configs: Mapping[str, str]
    n: int
    n_used: int
    provenance: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.update_cosine)

    def _table(self, of: str) -> Mapping[str, Tensor]:
        if of == "update":
            return self.update_cosine
        if of == "direction":
            return self.direction_cosine
        raise ValueError(f"of must be 'update' or 'direction', got {of!r}")

    def per_step(self, name: str, *, of: str = "update") -> Tensor:
        """``(T - 1,)`` mean over points (NaNs left out) for each pair of successive steps."""
        return self._table(of)[name].nanmean(dim=0)

    def mean(self, name: str, *, of: str = "update") -> float:
        """The mean over points and step pairs (NaNs left out)."""
        return float(self._table(of)[name].nanmean())

    def quantiles(self, name: str, q: Sequence[float], *, of: str = "update") -> Tensor:
        """``(len(q), T - 1)`` per-step quantiles over points (NaNs left out)."""
        return torch.nanquantile(self._table(of)[name], torch.tensor(list(q), dtype=torch.float64), dim=0)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, "n_used": self.n_used, "attacks": {}}
        for name in self.names:
            out["attacks"][name] = {
                "config": self.configs[name],
                "mean_update_cosine": self.mean(name),
                "mean_direction_cosine": self.mean(name, of="direction"),
                "per_step_update_cosine": self.per_step(name).tolist(),
                "per_step_direction_cosine": self.per_step(name, of="direction").tolist(),
                "undefined_pairs": int(torch.isnan(self.update_cosine[name]).sum()),
                "success_rate": float(self.success[name].double().mean()) if self.n_used else float("nan"),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "provenance": dict(self.provenance)}


def default_cosine_attacks(eps: float = 0.1, steps: int = 10) -> dict[str, Any]:
    """I-FGSM and MI-FGSM (μ = 1) with ``α = ε / T``, as in Dong et al. (2018)."""
    return {"I-FGSM": IFGSM(eps=eps, steps=steps), "MI-FGSM": MIFGSM(eps=eps, steps=steps, decay=1.0)}


def perturbation_cosine_similarity(model: nn.Module, x: Tensor, y: Tensor, *,
                                   attacks: Mapping[str, Attack] | None = None,
                                   only_correct: bool = True, batch_size: int = 500,
                                   generator: torch.Generator | None = None,
                                   progress: bool = False) -> CosineSimilarity:
    """The cosine similarity of successive updates of iterative attacks, per step, over points.

    Dong et al. (CVPR 2018, "Boosting Adversarial Attacks with Momentum") argue that
    momentum stabilises the update direction: MI-FGSM's successive perturbations should be more
    similar than I-FGSM's. For each attack (default :func:`default_cosine_attacks`: I-FGSM and
    MI-FGSM, ε = 0.1 L∞, 10 steps, α = ε/10) the iterates are recorded with
    :func:`record_trajectory` (bit-identical to the attack) and, for every point and every pair of
    successive steps, ``cos(x_{t+1} - x_t, x_{t+2} - x_{t+1})`` is computed (also for the raw
    directions before projection). By default only the correctly classified points are attacked
    (``n_used`` says how many).

    Args:
        model: logits model, never changed.
        x, y: ``(N, *)`` inputs and ``(N,)`` labels.
        attacks: ``{name: attack configuration}`` (FGSM, IFGSM, MIFGSM or PGD without early stop).
        only_correct: attack only the points the model classifies correctly.
        batch_size: points per attack call (the batch matters only in the last bits).
        generator: for PGD's random start.

    Returns:
        A :class:`CosineSimilarity`; ``mean(name)`` and ``per_step(name)`` are the headline numbers.
    """
    check_model(model)
    attacks = dict(attacks) if attacks is not None else default_cosine_attacks()
    if not attacks:
        raise ValueError("perturbation_cosine_similarity needs at least one attack")
    first = next(iter(attacks.values()))
    check_inputs(model, x, y, bounds=first.bounds, generator=generator)
    x = x.detach()
    n = x.shape[0]
    if only_correct:
        with eval_mode(model):
            pred, _ = _predict(model, x, batch_size=max(batch_size, 512))
        idx = (pred == y).nonzero().squeeze(1)
    else:
        idx = torch.arange(n, device=x.device)
    ups: dict[str, list[Tensor]] = {k: [] for k in attacks}
    dirs: dict[str, list[Tensor]] = {k: [] for k in attacks}
    succ: dict[str, list[Tensor]] = {k: [] for k in attacks}
    jobs = [(name, i) for name in attacks for i in range(0, idx.numel(), batch_size)]
    for name, i in tqdm(jobs, desc="trajectories", disable=not progress, leave=False):
        attack = attacks[name]
        b = idx[i:i + batch_size]
        traj = record_trajectory(attack, model, x[b], y[b], generator=generator)
        ups[name].append(successive_cosine(traj.updates).T)               # (m, T - 1)
        dirs[name].append(successive_cosine(traj.directions).T)
        with eval_mode(model):
            pred, _ = _predict(model, traj.x_adv, batch_size=batch_size)
        succ[name].append(pred != y[b])

    def cat(parts: list[Tensor], name: str, width: int) -> Tensor:
        return torch.cat(parts) if parts else torch.empty(0, width, dtype=torch.float64)

    widths = {name: max(a.schedule().steps - 1, 0) for name, a in attacks.items()}
    configs = {name: config_repr(a) for name, a in attacks.items()}
    return CosineSimilarity(
        update_cosine={k: cat(v, k, widths[k]) for k, v in ups.items()},
        direction_cosine={k: cat(v, k, widths[k]) for k, v in dirs.items()},
        success={k: torch.cat(v) if v else torch.empty(0, dtype=torch.bool) for k, v in succ.items()},
        configs=configs, n=n, n_used=int(idx.numel()),
        provenance=provenance(attacks=configs, only_correct=only_correct, batch_size=batch_size))
