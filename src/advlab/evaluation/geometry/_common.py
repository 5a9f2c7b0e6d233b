"""Pieces the geometry studies share: the optional input box, the input gradient of a loss and
batched predictions."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advlab._checks import input_grad
from advlab.losses import LossFn, objective

_UNBOUNDED = (-math.inf, math.inf)


def _check_bounds(bounds: tuple[float, float] | None) -> tuple[float, float] | None:
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be None or a pair (lo, hi), got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds must be finite with lo < hi, got {bounds!r}")
    return lo, hi



def _input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss: LossFn) -> tuple[Tensor, Tensor]:
    """``∇_x J(x, y)`` per point ``(B, *)`` (of the *sum* of the objectives, so no 1/B factor) and
    the logits ``(B, C)``; the model's output is validated first. Call inside ``eval_mode``."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        obj, logits = objective(model, leaf, y, None, loss, check=True)
        grad = input_grad(obj.sum(), leaf)
    return grad.detach(), logits.detach()


def _predict(model: nn.Module, points: Tensor, *, batch_size: int) -> tuple[Tensor, Tensor]:
    """Predicted class and its softmax probability for ``points`` ``(N, *)``, in chunks."""
    preds, confs = [], []
    with torch.no_grad():
        for i in range(0, points.shape[0], batch_size):
            probs = torch.softmax(model(points[i:i + batch_size]), dim=1)
            conf, pred = probs.max(dim=1)
            preds.append(pred)
            confs.append(conf)
    return torch.cat(preds), torch.cat(confs)

