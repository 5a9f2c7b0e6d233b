"""Interval bound propagation training (Gowal et al. 2018) for :func:`advlab.defenses.train`.

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelović, Mann & Kohli, "On the Effectiveness
of Interval Bound Propagation for Training Verifiably Robust Models" (2018), Eq. 8:

    L = κ·CE(z(x), y) + (1 − κ)·CE(ẑ(x, ε), y)

where ``ẑ`` is the worst-case logit vector IBP can prove over the L∞ box of radius ε (clipped to
``bounds``): the upper bound of ``z_j`` for ``j ≠ y`` and the lower bound of ``z_y``. Cross-entropy
depends only on the differences ``ẑ_j − ẑ_y``, which are ``−(lower bound of z_y − z_j)``; with a
final ``Linear`` layer that lower bound is the tighter elided one (Sec. 3), as in
:func:`advlab.certify.verified_margin`, so the loss trains exactly what the verifier checks.

Example::

    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    train(model, IBPTraining(eps=0.1, kappa=0.5), x, y, epochs=30, lr=1e-3)
    verified_accuracy(model, x_test, y_test, eps=0.1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_choice, check_number
from advlab.certify.ibp import _ibp_margins
from advlab.defenses.recipe import recipe_card
from advlab.threat import ThreatModel

__all__ = ["IBPTraining"]


@dataclass(frozen=True, kw_only=True)
class IBPTraining:
    """IBP training (Gowal et al. 2018, Eq. 8), L∞: ``κ·CE(f(x), y) + (1 − κ)·CE(ẑ(x, ε), y)``.

    ``ẑ_j = hi(z_j)`` for ``j ≠ y`` and ``ẑ_y = lo(z_y)`` over ``[max(x − ε, lo), min(x + ε, hi)]``;
    with ``elide`` (default) and a final ``Linear`` layer, ``ẑ_j − ẑ_y`` is minus the elided lower
    bound of ``(w_y − w_j)·h + (b_y − b_j)``. ``κ = 1`` is standard training (the bound is skipped).

    The paper ramps ε from 0 and κ from 1 down to ``kappa`` over the first part of training:
    ``ramp`` is that fraction of the run (``train`` tells the recipe how far it is, see
    ``uses_progress``): at progress ``p`` the recipe trains at ``ε·min(1, p/ramp)`` and
    ``κ = 1 − (1 − kappa)·min(1, p/ramp)``. ``ramp = 0`` (the default) trains at the full ``eps``
    and ``kappa`` from the first step; from scratch that collapsed an MLP on digits to a constant
    prediction at ε = 0.02 (loss ln 10 after 20 epochs), where ``ramp = 0.5`` trains. The bound is that of the eval-mode network
    (BatchNorm running statistics, dropout off) while the clean term uses the training-mode pass;
    the model must be one :func:`advlab.certify.interval_bounds` can walk (checked on the first
    batch, with the error naming the layer).

    Logs: ``loss``, ``acc`` (clean), ``robust_loss`` and ``verified`` (fraction of the batch whose
    lower margin bound is > 0 at ε).
    """

    name: ClassVar[str] = "ibp"
    #: the trainer passes ``progress`` (the fraction of the run done) to ``batch_loss``
    uses_progress: ClassVar[bool] = True
    eps: float
    kappa: float = 0.5
    elide: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)
    ramp: float = 0.0

    def __post_init__(self) -> None:
        check_number("IBPTraining: eps", self.eps)
        check_number("IBPTraining: kappa", self.kappa, low=0.0, low_open=False, high=1.0)
        check_choice("IBPTraining: elide", self.elide, (True, False))
        check_number("IBPTraining: ramp (a fraction of the run)", self.ramp, low=0.0, low_open=False, high=1.0)
        try:
            bounds = ThreatModel(norm="linf", eps=self.eps, bounds=self.bounds).bounds
        except (TypeError, ValueError) as exc:
            raise ValueError(f"IBPTraining: {exc}") from None
        object.__setattr__(self, "bounds", bounds)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None, progress: float = 1.0) -> tuple[Tensor, dict[str, float]]:
        logits = model(x)
        clean = F.cross_entropy(logits, y)
        logs = {"acc": float((logits.detach().argmax(1) == y).float().mean())}
        t = 1.0 if self.ramp == 0 else min(1.0, max(0.0, progress) / self.ramp)
        kappa = 1 - (1 - self.kappa) * t
        if kappa == 1:
            return clean, {"loss": float(clean.detach()), **logs}
        # a model IBP cannot walk fails here with a ValueError naming the layer
        lower = _ibp_margins(model, x, y, self.eps * t, bounds=self.bounds, elide=self.elide)  # (B, K)
        z_worst = -lower  # ẑ_j − ẑ_y; the entry j = y is 0
        robust = F.cross_entropy(z_worst, y)
        loss = kappa * clean + (1 - kappa) * robust
        verified = lower.detach().scatter(1, y[:, None], float("inf")).amin(1) > 0
        return loss, {"loss": float(loss.detach()), **logs, "robust_loss": float(robust.detach()),
                      "verified": float(verified.float().mean())}

    def card(self) -> dict[str, Any]:
        return recipe_card(self)
