"""Attack objectives on logits. Every function returns a per-sample objective to *maximise*.

Signature: ``loss(logits (B, C), y (B,), target (B,) | None) -> (B,)``. ``y`` is the true class;
``target``, when given, is the class the attacker wants (a targeted attack). Attacks take a loss by
name (``"ce"``, ``"cw"``, ``"dlr"``) or as such a callable.

* ``"ce"``  cross-entropy: ``CE(z, y)``; targeted ``-CE(z, t)`` (Goodfellow et al. 2015).
* ``"cw"``  Carlini & Wagner (2017) margin: ``max_{j≠y} z_j - z_y``; targeted
  ``z_t - max_{j≠t} z_j``. Positive exactly when the attack has succeeded.
* ``"dlr"`` difference of logits ratio (Croce & Hein 2020), invariant to shifting and scaling the
  logits: ``-(z_y - max_{j≠y} z_j) / (z_π1 - z_π3)``; targeted
  ``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2)`` with ``π`` the logits sorted decreasingly.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from advlab._checks import check_logits

LossFn = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]


def cross_entropy(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Cross-entropy to ascend: ``CE(z, y)``, or ``-CE(z, t)`` when targeted."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def _best_other(logits: Tensor, cls: Tensor) -> Tensor:
    """``max_{j ≠ cls} z_j`` per sample."""
    masked = logits.scatter(1, cls[:, None], float("-inf"))
    return masked.amax(dim=1)


def cw_margin(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Carlini-Wagner margin to ascend (positive once the attack succeeds)."""
    if target is None:
        return _best_other(logits, y) - logits.gather(1, y[:, None]).squeeze(1)
    return logits.gather(1, target[:, None]).squeeze(1) - _best_other(logits, target)


def dlr(logits: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Difference-of-logits-ratio loss to ascend (Croce & Hein 2020, eqs. 5 and 7)."""
    num_classes = logits.shape[1]
    need = 3 if target is None else 4
    if num_classes < need:
        kind = "targeted" if target is not None else "untargeted"
        raise ValueError(f"the {kind} DLR loss needs at least {need} classes, the model has "
                         f"{num_classes}; use loss='ce' or loss='cw'")
    z_sorted, _ = logits.sort(dim=1, descending=True)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        return -(z_y - _best_other(logits, y)) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    denom = z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12
    return -(z_y - z_t) / denom


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}


def get_loss(loss: str | LossFn) -> LossFn:
    """Resolve a loss given by name (``"ce"``, ``"cw"``, ``"dlr"``) or as a callable."""
    if callable(loss):
        return loss
    key = str(loss).lower().replace("-", "_")
    key = {"cross_entropy": "ce", "xent": "ce", "margin": "cw", "cw_margin": "cw"}.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)} or a callable "
                         "(logits, y, target) -> per-sample objective to maximise")
    return LOSSES[key]


def objective(model: torch.nn.Module, x: Tensor, y: Tensor, target: Tensor | None,
              loss: LossFn, *, check: bool | str = False) -> tuple[Tensor, Tensor]:
    """Per-sample objective ``(B,)`` and the logits ``(B, C)`` used for predictions.

    The one place where an ensemble that fuses *losses* (Dong et al. 2018, "ensemble in loss")
    differs from every other model: its objective is the weighted sum of its members' losses,
    while any other model (ensembles fused in logits or predictions included) is scored on the
    logits it returns. With ``check=True`` (an attack's first step) the model's output and the
    labels are validated before any loss is computed; a string names the inputs checked ("at the
    random starting points").
    """
    from advlab.models.ensemble import Ensemble  # local: models must not import attacks

    fused = isinstance(model, Ensemble) and model.fusion == "loss"
    if check:
        try:
            out = model.member_logits(x) if fused else model(x)
        except (RuntimeError, IndexError) as err:
            raise ValueError(f"the model failed on inputs of shape {tuple(x.shape)} ({err}); check that "
                             "x has the (B, ...) shape the model expects") from err
        where = check if isinstance(check, str) else "on the clean inputs"
        check_logits(model.fuse(out) if fused else out, y, target, where=where)
    else:
        out = model.member_logits(x) if fused else model(x)
    if fused:
        obj = sum(w * loss(z, y, target) for w, z in zip(model.weights.tolist(), out))
        return obj, model.fuse(out)
    return loss(out, y, target), out
