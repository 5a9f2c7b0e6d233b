"""An ensemble of classifiers as one model (Dong et al. 2018, "Boosting Adversarial Attacks with
Momentum", Section 3.2 and Algorithm 2).

Three ways to fuse K models with weights ``w_k >= 0`` (normalised to sum to 1):

* ``"logits"``: ``l(x) = Σ_k w_k l_k(x)``, attacked with softmax cross-entropy on ``l`` (the
  paper's proposal, eq. 8-9);
* ``"predictions"``: ``p(x) = Σ_k w_k softmax(l_k(x))``; the module returns ``log p(x)``, valid
  logits whose cross-entropy is the paper's ``-1_y · log p(x)``;
* ``"loss"``: the attack objective is ``Σ_k w_k J(l_k(x), y)``; the module's own output (for
  predictions) is the weighted logits.

Every attack in advlab accepts an :class:`Ensemble` like any other model.

Example:
    >>> ens = Ensemble([m1, m2, m3], weights=[1, 1, 2], fusion="logits")
    >>> result = MIFGSM(eps=16 / 255, steps=10)(ens, x, y)
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

Fusion = Literal["logits", "predictions", "loss"]
FUSIONS: tuple[str, ...] = ("logits", "predictions", "loss")


class Ensemble(nn.Module):
    """Weighted ensemble of classifiers returning logits; see the module docstring."""

    def __init__(self, models: Sequence[nn.Module], *, weights: Sequence[float] | None = None,
                 fusion: Fusion = "logits") -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("Ensemble needs at least one model")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"ensemble member {i} is a {type(m).__name__}, not a torch.nn.Module")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
        if weights is None:
            weights = [1.0] * len(models)
        w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
        if w.numel() != len(models):
            raise ValueError(f"got {w.numel()} weights for {len(models)} models")
        if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"ensemble weights must be finite, >= 0 and not all zero, got {list(weights)}")
        self.members = nn.ModuleList(models)
        self.fusion: str = fusion
        self.register_buffer("weights", w / w.sum(), persistent=False)
        # the container has no mode-dependent layers of its own: follow the members, so that an
        # ensemble of eval-mode models is itself in eval mode
        self.training = self.members.training = any(m.training for m in models)

    def member_logits(self, x: Tensor) -> list[Tensor]:
        """Each member's logits, ``K`` tensors of shape ``(B, C)``."""
        out = [m(x) for m in self.members]
        shapes = {tuple(z.shape) for z in out}
        if len(shapes) != 1:
            raise ValueError(f"ensemble members disagree on their output shapes: {sorted(shapes)}")
        return out

    def fuse(self, member_logits: Sequence[Tensor]) -> Tensor:
        """Combine members' logits into the ensemble's logits ``(B, C)``."""
        w = self.weights.to(dtype=member_logits[0].dtype)
        if self.fusion == "predictions":
            log_p = torch.stack([torch.log_softmax(z, dim=1) for z in member_logits])  # (K, B, C)
            return torch.logsumexp(log_p + torch.log(w).view(-1, 1, 1), dim=0)
        return sum(wk * z for wk, z in zip(w, member_logits))

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.member_logits(x))

    def extra_repr(self) -> str:
        return f"fusion={self.fusion!r}, weights={[round(v, 4) for v in self.weights.tolist()]}"
