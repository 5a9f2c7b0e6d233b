"""What every attack returns, and the helpers that build it."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from advlab.threat import ThreatModel


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack call on a batch of ``B`` inputs.

    Attributes:
        x_adv: ``(B, *)`` adversarial inputs, inside ``threat`` (ball and box).
        success: ``(B,)`` bool, the model misclassifies ``x_adv`` (untargeted) or predicts
            ``target`` (targeted). Points the model already got wrong count as successes.
        pred: ``(B,)`` int64, the model's class for ``x_adv``.
        confidence: ``(B,)`` softmax probability of ``pred`` at ``x_adv``.
        norms: ``(B,)`` ``||x_adv - x||`` in the threat model's norm.
        num_grads: ``(B,)`` int64, forward+backward passes spent on each point.
        num_forwards: ``(B,)`` int64, forward passes on each point (gradient steps included).
        threat: the threat model the attack ran under.
        attack: the attack's configuration, as ``repr``.
        target: ``(B,)`` the targets of a targeted attack, else ``None``.
        queries: ``(B,)`` int64, oracle queries spent on each point (black-box attacks), else ``None``.
        budget_exhausted: ``(B,)`` bool, the point's attack ended because its query budget was
            spent (black-box attacks), else ``None``. Such a point is a success only if an
            adversarial input was found before the budget ran out.
    """

    x_adv: Tensor
    success: Tensor
    pred: Tensor
    confidence: Tensor
    norms: Tensor
    num_grads: Tensor
    num_forwards: Tensor
    threat: ThreatModel
    attack: str
    target: Tensor | None = None
    queries: Tensor | None = None
    budget_exhausted: Tensor | None = None

    @property
    def success_rate(self) -> float:
        """Fraction of the batch on which the attack succeeded (see ``success``)."""
        return float(self.success.float().mean())

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    @classmethod
    def concat(cls, parts: Sequence["AttackResult"]) -> "AttackResult":
        """One result for the batches ``parts`` of one attack, in order (per-point fields
        concatenated; ``threat`` and ``attack`` from the first part, which all must share)."""
        if not parts:
            raise ValueError("AttackResult.concat needs at least one result")
        first = parts[0]
        if any(p.threat != first.threat or p.attack != first.attack for p in parts):
            raise ValueError("AttackResult.concat joins batches of one attack; these parts differ in "
                             "threat model or attack")
        joined: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(first, f.name)
            joined[f.name] = (torch.cat([getattr(p, f.name) for p in parts])
                              if isinstance(value, Tensor) else value)
        return cls(**joined)

    def summary(self) -> dict[str, Any]:
        """Scalars for logs and reports."""
        return {
            "attack": self.attack,
            "norm": self.threat.norm,
            "eps": self.threat.eps,
            "n": len(self),
            "success_rate": self.success_rate,
            "mean_norm": float(self.norms.float().mean()),
            "max_norm": float(self.norms.float().max()),
            "grads_per_point": float(self.num_grads.float().mean()),
            **({} if self.queries is None else {
                "queries_per_point": float(self.queries.float().mean()),
                "budget_exhausted": int(self.budget_exhausted.sum()) if self.budget_exhausted is not None else 0,
            }),
        }


def config_repr(config: object) -> str:
    """``PGD(eps=0.1, norm='linf', ...)`` for any dataclass config; ``repr`` for anything else."""
    if not is_dataclass(config):
        return repr(config)
    # the per-feature options appear only when set, so the provenance of a config without them
    # reads as it always did
    args = ", ".join(f"{f.name}={getattr(config, f.name)!r}" for f in fields(config)  # type: ignore[arg-type]
                     if not (f.name in ("mask", "categorical") and getattr(config, f.name) is None))
    return f"{type(config).__name__}({args})"


def random_targets(y: Tensor, num_classes: int, *, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random target class different from ``y`` for each point, ``(B,)``.

    Without a generator a fresh one seeded with 0 is used, so the global RNG is never touched.
    """
    if num_classes < 2:
        raise ValueError("random targets need at least 2 classes")
    if generator is None:
        generator = torch.Generator(device=y.device).manual_seed(0)
    offset = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + offset) % num_classes
