"""A classifier with a reject option, and the adaptive attack on classifier and detector together.

:class:`GuardedClassifier` turns classifier + detector (:mod:`advlab.defenses.detectors`) into one
``nn.Module`` with ``C + 1`` outputs, the last one "reject": ``z_R(x) = max_j z_j(x) + s(x) - τ``, so
``argmax = R`` exactly when the detector's score ``s`` exceeds its threshold ``τ``. Any advlab
white-box attack can attack it; success against it is the criterion
``Misclassified() & NotRejected(reject_class=C)``. :class:`AdaptivePGD` is Carlini & Wagner's
(AISec 2017, "Adversarial examples are not easily detected") recipe for doing so.

Example:
    >>> guarded = GuardedClassifier(model, det)
    >>> pred, rejected = guarded.predict(x_test)
    >>> result = AdaptivePGD(eps=0.1, steps=50)(guarded, x_test, y_test)   # success: fooled and accepted
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from advlab._checks import check_model, eval_mode, quiet_eval
from advlab.attacks.criteria import Criterion, NotRejected, resolve
from advlab.attacks.gradient import PGD
from advlab.defenses.detectors import FittedDetector, check_batch

__all__ = ["AdaptivePGD", "GuardedClassifier", "guarded_success", "reject_aware_margin"]


class GuardedClassifier(nn.Module):
    """Classifier + detector as one model with a reject option (Carlini & Wagner 2017, Sec. 3).

    ``forward(x)`` returns ``(B, C + 1)`` logits: the classifier's ``z`` and a reject logit
    ``z_R = max_j z_j + (s(x) - τ)``, with ``s`` the detector's (differentiable) score and ``τ``
    the threshold, so ``argmax = C`` ("reject") exactly when ``s(x) > τ``; otherwise the argmax is
    the classifier's class. White-box attacks on this module attack classifier and detector
    together. ``predict(x)`` returns the classifier's classes and the reject flags.

    The wrapper owns nothing of the classifier: it never changes its weights or modes (the
    wrapper's own ``training`` flag starts False, so attacks need not switch anything).

    Example:
        >>> guarded = GuardedClassifier(model, detector)
        >>> pred, rejected = guarded.predict(x)
        >>> accepted_acc = (pred == y)[~rejected].float().mean()
    """

    def __init__(self, model: nn.Module, detector: FittedDetector, threshold: float | None = None) -> None:
        super().__init__()
        check_model(model)
        if not isinstance(detector, FittedDetector):
            raise TypeError(f"detector must be a FittedDetector (from SafetyNet(...).fit or "
                            f"ActivationDetector(...).fit), got {type(detector).__name__}")
        if detector.model is not model:
            raise ValueError("the detector was fitted on a different model: it reads that model's "
                             "activations; fit it on this model")
        t = detector.threshold if threshold is None else threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        self.model = model
        self.head = detector.head
        self.detector = detector
        self.threshold = float(t)
        self.training = False  # the wrapper's own flag only; submodules keep theirs

    def forward(self, x: Tensor) -> Tensor:  # (B, *) -> (B, C + 1)
        logits, score = self.detector.logits_and_score(x)
        reject = logits.amax(dim=1) + (score - self.threshold)
        return torch.cat([logits, reject[:, None]], dim=1)

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(pred (B,) int64, rejected (B,) bool)``: the classifier's classes and whether the
        detector rejects each input (``score > threshold``). Where ``rejected`` is False, ``pred`` is
        the guarded model's answer."""
        x = check_batch("x", x, shape=self.detector.input_shape)
        preds, rejs = [], []
        bs = self.detector.batch_size
        with torch.no_grad(), eval_mode(self.model):
            for i in range(0, x.shape[0], bs):
                logits, score = self.detector.logits_and_score(x[i:i + bs])
                preds.append(logits.argmax(dim=1))
                rejs.append(score > self.threshold)
        return torch.cat(preds), torch.cat(rejs)


def guarded_success(guarded: GuardedClassifier, x_adv: Tensor, y: Tensor) -> Tensor:
    """``(B,)`` bool: the guarded model is fooled, i.e. the classifier misclassifies ``x_adv`` and
    the detector does not reject it."""
    pred, rejected = guarded.predict(x_adv)
    return (pred != y) & ~rejected


def reject_aware_margin(reject_class: int) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The loss (to ascend) for attacking a guarded model with ``C + 1`` outputs:
    ``max_{j∉{y,R}} z_j - max(z_y, z_R)`` (targeted: ``z_t - max_{j≠t} z_j`` with ``R`` included),
    positive exactly when the input is misclassified and not rejected."""

    def loss(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
        r = torch.full_like(y, reject_class)
        if target is not None:
            others = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
            return logits.gather(1, target[:, None]).squeeze(1) - others
        masked = logits.scatter(1, y[:, None], float("-inf")).scatter(1, r[:, None], float("-inf"))
        enemy = torch.maximum(logits.gather(1, y[:, None]), logits.gather(1, r[:, None])).squeeze(1)
        return masked.amax(dim=1) - enemy

    return loss


def _reject_last_margin(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """:func:`reject_aware_margin` with the reject output the last column (as GuardedClassifier
    lays them out)."""
    return reject_aware_margin(logits.shape[1] - 1)(logits, y, target)


@dataclass(frozen=True, kw_only=True)
class AdaptivePGD(PGD):
    """PGD against classifier and detector together (Carlini & Wagner, AISec 2017).

    On the guarded model's ``C + 1`` logits (see :class:`GuardedClassifier`), from a random point of
    the ε-ball, ``steps`` times: ``x_{t+1} = Π(x_t + α · dir_p(∇_x J(x_t)))`` with
    ``J = max_{j∉{y,R}} z_j - max(z_y, z_R)`` (:func:`reject_aware_margin`): the attack must beat
    both the true class and the reject output, so it fools the classifier while keeping the
    detector's score under its threshold. For SafetyNet the gradient passes the quantiser by BPDA
    (see :mod:`advlab.defenses.detectors`). It is advlab's :class:`~advlab.attacks.PGD` (the same
    schedule through the shared loop) with this loss and the criterion "misclassified and not
    rejected" (:class:`~advlab.attacks.Misclassified` ``&`` :class:`~advlab.attacks.NotRejected`
    of the reject class ``C``; targeted: the target hit and not rejected), which also decides
    which points ``restarts`` runs again.

    Example:
        >>> result = AdaptivePGD(eps=0.1, steps=50)(GuardedClassifier(model, det), x, y)
        >>> result.success.float().mean()      # fooled and accepted
    """

    steps: int = 50
    loss: ClassVar[Callable[..., Tensor]] = staticmethod(_reject_last_margin)

    def _check_call(self, model: Any, x: Tensor, y: Tensor, target: Tensor | None) -> None:
        if not isinstance(model, GuardedClassifier):
            raise TypeError(f"AdaptivePGD attacks a GuardedClassifier (classifier + detector), got "
                            f"{type(model).__name__}; wrap it with GuardedClassifier(model, detector)")
        c = _num_classes(model, x)
        if target is not None and int(target.max()) >= c:
            raise ValueError(f"target contains class {int(target.max())}, but the classifier has {c} "
                             "classes (the reject output cannot be a target)")

    def _criterion(self, model: Any, target: Tensor | None, criterion: Criterion | None) -> Criterion:
        base = resolve(criterion, target)
        if criterion is not None:
            return base
        return base & NotRejected(reject_class=_num_classes(model, None))



def _num_classes(guarded: GuardedClassifier, x: Tensor | None) -> int:
    """The classifier's number of classes ``C`` (the reject output is class ``C``)."""
    if x is None:
        shape = guarded.detector.input_shape
        p = next(iter(guarded.model.parameters()), None)
        x = torch.zeros((1, *shape), dtype=p.dtype if p is not None else torch.float32,
                        device=p.device if p is not None else None)
    with torch.no_grad(), quiet_eval(guarded.model):
        return int(guarded.detector.logits_and_score(x[:1])[0].shape[1])
