"""How evaluations call an attack: one rule for ``evaluate``, ``Cascade`` and ``audit``.

* An attack's metadata (:class:`advlab.attacks.contract.Attack`: ``access``, ``kind``) decides
  how it is called: white-box attacks get the model, black-box ones an
  :class:`advlab.oracle.Oracle` around it answering what they may see (scores or labels).
  Minimal-norm and universal attacks have no ε to evaluate at, and attacks on regressors no
  class to flip; they are refused with the place they belong.
* A point counts as broken when the attack says so *if the attack went through the lifecycle*
  (every :class:`Attack`: its ``success`` is recomputed from the criterion on the returned point,
  which is checked to lie in the threat model), and the point lies in the evaluation's ε-ball.
  Anything else (a user's callable) is re-checked: one forward pass per batch, and the point must
  lie in the threat model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks.contract import AttackLike
from advlab._checks import as_labels, check_logits, check_model, eval_mode, forward


def access_of(attack: AttackLike) -> str:
    return getattr(attack, "access", "gradients")


def kind_of(attack: AttackLike) -> str:
    return getattr(attack, "kind", "bounded")


def check_bounded(attack: AttackLike, name: str, where: str) -> None:
    """Refuse an attack that has no ε to be evaluated at, naming the tool that takes it."""
    if not callable(attack):
        raise TypeError(f"{where}: {name} is a {type(attack).__name__}, not an attack (a callable "
                        "attack(model, x, y, *, generator), e.g. advlab.attacks.PGD(eps=0.1))")
    kind = kind_of(attack)
    if kind == "minimal":
        raise ValueError(f"{where}: {name} is a minimal-perturbation attack (it has no ε); measure it "
                         "with advlab.evaluation.measure_minimal_norms (or `advlab measure`), which gives "
                         "robust accuracy at every ε at once")
    if kind == "universal":
        raise ValueError(f"{where}: {name} fits one perturbation for all inputs; measure it with "
                         "advlab.attacks.fooling_rate on held-out data (or `advlab attack --attack uap`)")
    if kind == "regression":
        raise ValueError(f"{where}: {name} attacks a regressor (it moves the output, there is no class to "
                         "flip and no robust accuracy); call it on the model and read "
                         "RegressionResult.gain, against advlab.attacks.noise_gain")


def victim(attack: AttackLike, model: nn.Module) -> Any:
    """What the attack is allowed to see of ``model``: the model itself, or an oracle."""
    access = access_of(attack)
    if access == "gradients":
        return model
    from advlab.oracle import Oracle

    return Oracle(model, output="scores" if access == "scores" else "label")


def broken(attack: AttackLike, res: Any, model: nn.Module, x: Tensor, y: Tensor, threat: Any) -> Tensor:
    """``(B,)`` bool: the points the attack broke, by the rule in the module docstring."""
    from advlab.attacks.contract import Attack

    if isinstance(attack, Attack):
        hit = res.success.to(y.device)
        # the lifecycle checked the attack's own ball; the evaluation's may be smaller
        return hit & threat.contains(res.x_adv, x) if threat is not None else hit
    with eval_mode(model), torch.no_grad():
        hit = model(res.x_adv).argmax(dim=1) != y
    if threat is not None:
        hit &= threat.contains(res.x_adv, x)
    return hit


class CleanCounts:
    """``n``, ``n_correct`` and ``clean_accuracy`` of a per-point result with a ``correct``
    ``(n,)`` bool field (the cascade's and the minimal-norm study's results)."""

    correct: Tensor

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def clean_accuracy(self) -> float:
        return self.n_correct / self.n


def clean_predictions(model: nn.Module, x: Tensor, *, y: Tensor | None = None,
                      batch_size: int = 512) -> Tensor:
    """Predicted classes ``(N,)`` in eval mode, without gradients. With the labels ``y`` each
    batch's logits are checked first (finite, not probabilities, ``y`` within the classes): a
    model that answers NaN, or labels it cannot have, are an error here, not a clean accuracy
    of 0%."""
    check_model(model)
    preds = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            logits = forward(model, x[i:i + batch_size])
            if y is not None:
                check_logits(logits, as_labels(y[i:i + batch_size]), None)
            preds.append(logits.argmax(dim=1))
    return torch.cat(preds)
