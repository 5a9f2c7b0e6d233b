"""Success criteria: what it means for an attack to have succeeded on a point.

A criterion maps the model's answer at the adversarial point to ``(B,)`` bool. Every attack
takes one (``attack(model, x, y, criterion=...)``); the attack lifecycle
(:mod:`advlab.attacks.contract`) re-checks every returned point against it, so ``result.success``
always means exactly the criterion, whatever the attack's search did internally. Criteria
compose with ``&`` and ``|`` (as Foolbox's do):

>>> from advlab.attacks.criteria import Misclassified, NotRejected, ConfidenceBelow
>>> PGD(eps=0.1)(guarded, x, y, criterion=Misclassified() & NotRejected(reject_class=10))
>>> PGD(eps=0.1)(model, x, y, criterion=ConfidenceBelow(0.2))   # true class below 20 %

The default is :class:`Misclassified` for an untargeted call and :class:`TargetClass` when a
``target`` is given. A criterion that reads probabilities (``needs_scores``) cannot be used with a
label-only oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import torch
from torch import Tensor

from advlab._checks import check_number


class Criterion:
    """Base of all criteria; subclasses are frozen dataclasses implementing :meth:`decide`."""

    #: the criterion reads class probabilities, not only the predicted class
    needs_scores: ClassVar[bool] = False
    #: the criterion reads the call's ``target``
    needs_target: ClassVar[bool] = False

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        """``(B,)`` bool from the predicted classes ``pred`` ``(B,)``, the class probabilities
        ``probs`` ``(B, C)`` (``None`` for label-only answers), the labels and the targets."""
        raise NotImplementedError

    def __call__(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return self.decide(pred, probs, y, target)

    def __and__(self, other: "Criterion") -> "Criterion":
        return And(_check_criterion(self), _check_criterion(other))

    def __or__(self, other: "Criterion") -> "Criterion":
        return Or(_check_criterion(self), _check_criterion(other))

    def requires_scores(self) -> bool:
        return self.needs_scores

    def requires_target(self) -> bool:
        return self.needs_target

    def resolve_target(self, y: Tensor, target: Tensor | None) -> Tensor | None:
        """The target the attack's *objective* should aim at (``None``: untargeted)."""
        return target


def _check_level(c: object) -> None:
    check_number(f"{type(c).__name__}: level", getattr(c, "level"), high=1.0)


def _check_criterion(c: object) -> Criterion:
    if not isinstance(c, Criterion):
        raise TypeError(f"criteria combine only with criteria, got {type(c).__name__}")
    return c


@dataclass(frozen=True)
class Misclassified(Criterion):
    """The predicted class differs from the label: ``pred != y``."""

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return pred != y


@dataclass(frozen=True)
class TargetClass(Criterion):
    """The model predicts the call's target: ``pred == target`` (a targeted attack)."""

    needs_target: ClassVar[bool] = True

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        if target is None:
            raise ValueError("TargetClass needs the call's target=...")
        return pred == target


@dataclass(frozen=True)
class ConfidenceBelow(Criterion):
    """The probability of the true class fell below ``level``: ``p_y(x') < level``.

    ``level`` in (0, 1]; with ``level = 1/C`` or less it implies misclassification only for two
    classes. Reads probabilities, so it needs a model or a score oracle.
    """

    level: float
    needs_scores: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_level(self)

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        if probs is None:
            raise ValueError("ConfidenceBelow reads probabilities; this attack only saw labels")
        return probs.gather(1, y[:, None]).squeeze(1) < self.level


@dataclass(frozen=True)
class TargetConfidence(Criterion):
    """The target class reached probability ``level``: ``p_t(x') >= level`` (fooling images)."""

    level: float
    needs_scores: ClassVar[bool] = True
    needs_target: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_level(self)

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        if probs is None or target is None:
            raise ValueError("TargetConfidence needs probabilities and the call's target=...")
        return probs.gather(1, target[:, None]).squeeze(1) >= self.level


@dataclass(frozen=True)
class SourceTarget(Criterion):
    """Chosen classes sent to chosen classes: a point of class ``s`` succeeds when the model
    predicts ``pairs[s]``. The attack aims at that class (no ``target=`` needed); points of a
    class with no pair are refused when the attack starts.

    >>> SourceTarget({3: 5, 7: 1})     # 3 -> 5 and 7 -> 1
    """

    pairs: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, Mapping) or not self.pairs:
            raise ValueError("SourceTarget needs a non-empty mapping {source class: target class}")
        for s, t in self.pairs.items():
            for v in (s, t):
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise ValueError(f"SourceTarget: classes must be integers >= 0, got {v!r}")
            if s == t:
                raise ValueError(f"SourceTarget: class {s} is mapped to itself")
        object.__setattr__(self, "pairs", dict(self.pairs))

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.pairs.items())))

    def _lookup(self, y: Tensor) -> Tensor:
        top = max(max(self.pairs), int(y.max()) if y.numel() else 0) + 1
        table = torch.full((top,), -1, dtype=torch.long, device=y.device)
        for s, t in self.pairs.items():
            table[s] = t
        return table[y.long()]

    def resolve_target(self, y: Tensor, target: Tensor | None) -> Tensor | None:
        if target is not None:
            raise ValueError("SourceTarget sets the targets itself; do not pass target=")
        mapped = self._lookup(y)
        missing = mapped < 0
        if bool(missing.any()):
            classes = sorted({int(c) for c in y[missing].tolist()})
            raise ValueError(f"SourceTarget has no target for class(es) {classes}; select the points "
                             f"of the classes {sorted(self.pairs)} first")
        return mapped

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return pred == self._lookup(y)


@dataclass(frozen=True)
class NotRejected(Criterion):
    """The answer is not the reject class of a guarded classifier (``pred != reject_class``);
    combine with :class:`Misclassified` for "fooled and accepted"
    (see :class:`advlab.defenses.GuardedClassifier`, whose reject class is ``C``)."""

    reject_class: int

    def __post_init__(self) -> None:
        r = self.reject_class
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"NotRejected: reject_class must be an integer >= 0, got {r!r}")

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return pred != self.reject_class


@dataclass(frozen=True)
class And(Criterion):
    """Both criteria hold."""

    first: Criterion
    second: Criterion

    def requires_scores(self) -> bool:
        return self.first.requires_scores() or self.second.requires_scores()

    def requires_target(self) -> bool:
        return self.first.requires_target() or self.second.requires_target()

    def resolve_target(self, y: Tensor, target: Tensor | None) -> Tensor | None:
        t = self.first.resolve_target(y, target)
        return self.second.resolve_target(y, t) if t is target else t

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return self.first(pred, probs, y, target) & self.second(pred, probs, y, target)


@dataclass(frozen=True)
class Or(And):
    """Either criterion holds."""

    def decide(self, pred: Tensor, probs: Tensor | None, y: Tensor, target: Tensor | None) -> Tensor:
        return self.first(pred, probs, y, target) | self.second(pred, probs, y, target)


def default_criterion(target: Tensor | None) -> Criterion:
    """:class:`Misclassified` untargeted, :class:`TargetClass` targeted."""
    return Misclassified() if target is None else TargetClass()


def resolve(criterion: Criterion | None, target: Tensor | None) -> Criterion:
    """The call's criterion, checked against the call (a target criterion needs a target)."""
    if criterion is None:
        return default_criterion(target)
    if not isinstance(criterion, Criterion):
        raise TypeError(f"criterion must be an advlab.attacks.criteria.Criterion (Misclassified(), "
                        f"TargetClass(), ConfidenceBelow(p), ...), got {type(criterion).__name__}")
    if criterion.requires_target() and target is None and not isinstance(criterion, SourceTarget):
        raise ValueError(f"{criterion!r} needs target=... in the call")
    return criterion


def probabilities(scores: Tensor) -> Tensor:
    """Rows of class probabilities from logits, or from scores that already are probabilities."""
    if bool((scores >= 0).all()) and bool(torch.allclose(scores.sum(dim=1), torch.ones_like(scores[:, 0]),
                                                         atol=1e-4)):
        return scores
    return torch.softmax(scores, dim=1)


__all__ = ["And", "ConfidenceBelow", "Criterion", "Misclassified", "NotRejected", "Or", "SourceTarget",
           "TargetClass", "TargetConfidence", "default_criterion", "probabilities", "resolve"]
