"""The interface every training recipe implements, so one trainer serves them all.

A recipe is a frozen dataclass config (keyword-only hyperparameters, like an attack) that says how
to turn one training batch into a loss. The trainer (:mod:`advlab.defenses.training`) owns
everything else: batching, the optimiser, progress, checkpoints, resume, data parallelism. A recipe
never calls ``optimizer.step()``, never changes the model's mode, and draws randomness only from
the generator it is given, so a resumed or data-parallel run reproduces an uninterrupted one.

    class Recipe(Protocol):
        name: ClassVar[str]                               # "pgd", "trades", ... (the CLI's --recipe)
        def batch_loss(self, model, x, y, *, generator, x_unlabelled=None)
            -> tuple[Tensor, dict[str, float]]            # scalar loss to minimise, logs for the bar
        def card(self) -> dict                            # JSON-ready description, to rebuild it

``x`` ``(B, *)`` in the recipe's bounds, ``y`` ``(B,)`` int64; ``x_unlabelled`` ``(U, *)`` is a
batch of unlabelled inputs for semi-supervised recipes (VAT), ``None`` otherwise. The model is in
training mode when ``batch_loss`` is called; a recipe that crafts adversarial examples does so
with the model in eval mode (advlab attacks switch and restore it) and returns the loss computed
in training mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@runtime_checkable
class Recipe(Protocol):
    """How one training batch becomes a loss: ``batch_loss(model, x, y, *, generator,
    x_unlabelled=None) -> (loss, logs)`` and a JSON-ready ``card()`` (see the module docstring)."""

    name: ClassVar[str]

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, dict[str, float]]: ...

    def card(self) -> dict[str, Any]: ...


def recipe_card(recipe: Any) -> dict[str, Any]:
    """``{"recipe": name, **hyperparameters}`` for a dataclass recipe (nested models left out)."""
    out: dict[str, Any] = {"recipe": recipe.name}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[f.name] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (int, float, str, bool)) for v in value):
            out[f.name] = list(value)
        else:
            out[f.name] = type(value).__name__
    return out


@dataclass(frozen=True, kw_only=True)
class Standard:
    """Plain empirical risk minimisation: ``L = CE(f(x) / T, y)``.

    ``temperature`` T ≠ 1 trains at a softmax temperature (the teacher of defensive distillation,
    Papernot et al. 2016); the deployed model is the same network read at T = 1 (its raw logits).
    """

    name: ClassVar[str] = "standard"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        logits = model(x)
        loss = F.cross_entropy(logits / self.temperature, y)
        return loss, {"loss": float(loss.detach()),
                      "acc": float((logits.detach().argmax(1) == y).float().mean())}

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class OneVsRest:
    """The RBF network's own likelihood (Goodfellow, Shlens & Szegedy, ICLR 2015, Sec. 7): each unit
    output ``p_k(x) = exp(logit_k(x))`` in ``(0, 1]`` is read as a binary classifier of ``y = k``,

        L = −Σ_k [ 1{y = k} log p_k + 1{y ≠ k} log(1 − p_k) ]   (batch mean),

    so a unit's output is a confidence that fades to 0 away from its centre (cross-entropy on the
    softmax is invariant to a shift of all logits and leaves that level free). Needs logits ``<= 0``
    (:class:`advlab.models.RBFNet`); anything else is refused with a clear error.
    """

    name: ClassVar[str] = "ovr"

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        logits = model(x)
        if bool((logits.detach() > 0).any()):
            raise ValueError("the one-vs-rest recipe reads each logit as log p_k <= 0 (an RBF unit); this model "
                             f"returned a logit of {float(logits.detach().max()):.3g} > 0: train it with the "
                             "standard recipe, or use the rbf architecture")
        onehot = F.one_hot(y, logits.shape[1]).bool()
        log_not = torch.log(-torch.expm1(logits.clamp(max=-1e-6)))  # log(1 − e^l), stable for l ≤ 0
        loss = -torch.where(onehot, logits, log_not).sum(1).mean()
        return loss, {"loss": float(loss.detach()),
                      "acc": float((logits.detach().argmax(1) == y).float().mean())}

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class GaussianNoise:
    """Training under Gaussian noise, the base classifier of randomized smoothing (Cohen et al.
    2019, Sec. 3.3): ``L = CE(f(x + σ·ε), y)``, ``ε ~ N(0, I)`` drawn from the trainer's generator.
    Certify the result with :class:`advlab.certify.SmoothedClassifier` at the same ``sigma``."""

    name: ClassVar[str] = "gaussian"
    sigma: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not self.sigma > 0:
            raise ValueError(f"sigma must be a number > 0, got {self.sigma!r}")

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        logits = model(x + self.sigma * noise)
        loss = F.cross_entropy(logits, y)
        return loss, {"loss": float(loss.detach()),
                      "acc": float((logits.detach().argmax(1) == y).float().mean())}

    def card(self) -> dict[str, Any]:
        return recipe_card(self)
