"""Adversarial training recipes for :func:`advlab.defenses.training.train`.

Each recipe is a frozen config (keyword-only hyperparameters, validated on construction) that
turns a training batch into a loss (the :class:`~advlab.defenses.recipe.Recipe` protocol). The
adversarial examples are crafted with advlab's own attacks (FGSM, PGD and the shared gradient
loop), with the model in eval mode and the trainer's generator; the loss is then computed in
training mode. Inputs ``x`` ``(B, C, H, W)`` lie in ``bounds``; ``y`` ``(B,)`` int64.

================================  =====================================================  ====================
recipe                            loss per batch                                         paper
================================  =====================================================  ====================
``FGSMMix(eps, alpha)``           ``α·CE(x) + (1−α)·CE(x + ε·sign ∇CE)``                 Goodfellow et al. 2015
``BatchMix(eps, k, lam)``         ``(Σ_clean CE + λ Σ_adv CE) / (m − k + λk)``           Kurakin et al. 2017
``PGDTraining(eps, steps)``       ``CE(PGD_k(x))``                                       Madry et al. 2018
``FastFGSM(eps)``                 ``CE(Π(x + δ₀ + 1.25ε·sign ∇CE(x + δ₀)))``, δ₀~U        Wong et al. 2020
``TRADES(eps, beta)``             ``CE(x) + β·KL(f(x) ‖ f(x'))``, x' maximises the KL    Zhang et al. 2019
``EnsembleAdversarial(eps, ...)`` ``α·CE(x) + (1−α)·CE(FGSM_src(x))``, src drawn per batch Tramèr et al. 2018
================================  =====================================================  ====================

Example::

    from advlab.defenses.training import train
    result = train(model, PGDTraining(eps=0.1, steps=7), x, y, epochs=10, seed=0)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.attacks.contract import Attack
from advlab._checks import check_choice, check_int, check_number, quiet_eval
from advlab.attacks._loop import Schedule, gradient_loop
from advlab.attacks.contract import Record, perturb
from advlab.attacks.gradient import FGSM, PGD
from advlab.defenses.recipe import recipe_card
from advlab.threat import ThreatModel

__all__ = ["FGSMMix", "BatchMix", "PGDTraining", "FastFGSM", "TRADES", "EnsembleAdversarial"]

_Logs = dict[str, float]


# ----------------------------------------------------------------------------- helpers


def _check_eps(owner: str, eps: Any, bounds: Any) -> None:
    check_number(f"{owner}: eps", eps)
    try:
        ThreatModel(norm="linf", eps=eps, bounds=bounds)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{owner}: {exc}") from None


def _check_step_size(owner: str, step_size: Any) -> None:
    if step_size is not None:
        check_number(f"{owner}: step_size (or None for the default)", step_size)


def _craft(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    # perturb(): the attack's x_adv bit for bit, without its scoring pass on the last iterate
    with quiet_eval(model):
        return perturb(attack, model, x, y, generator=generator).detach()


def _train_on(model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, _Logs]:
    """The outer step of adversarial training: cross-entropy on the crafted examples."""
    logits = model(x_adv)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": float(loss.detach()), "adv_acc": _accuracy(logits, y)}


def _mix(model: nn.Module, x: Tensor, y: Tensor, alpha: float, adv_logits: Tensor,
         adv_loss: Tensor) -> tuple[Tensor, _Logs]:
    """``α·CE(x) + (1−α)·CE(x_adv)`` from the adversarial half already computed."""
    logits = model(x)
    loss = alpha * F.cross_entropy(logits, y) + (1 - alpha) * adv_loss
    return loss, {"loss": float(loss.detach()), "acc": _accuracy(logits, y),
                  "adv_acc": _accuracy(adv_logits, y)}


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.detach().argmax(1) == y).float().mean())


# ----------------------------------------------------------------------------- recipes


@dataclass(frozen=True, kw_only=True)
class FGSMMix:
    """Adversarial objective of Goodfellow, Shlens & Szegedy (ICLR 2015), eq. (6), L∞.

    ``J̃(θ, x, y) = α·J(θ, x, y) + (1 − α)·J(θ, x + ε·sign(∇_x J(θ, x, y)), y)`` with ``J`` the
    cross-entropy; the FGSM example is crafted on the current model (in eval mode) and treated
    as a constant. ``α = 1`` is standard training (the FGSM step is skipped, so it equals
    :class:`~advlab.defenses.Standard` step for step); ``α = 0`` trains on FGSM examples only.
    The paper uses ``α = 0.5``.
    """

    name: ClassVar[str] = "fgsm-mix"
    eps: float
    alpha: float = 0.5
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("FGSMMix", self.eps, self.bounds)
        check_number("FGSMMix: alpha", self.alpha, low=0.0, low_open=False, high=1.0)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        if self.alpha == 1:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            return loss, {"loss": float(loss.detach()), "acc": _accuracy(logits, y)}
        x_adv = _craft(FGSM(eps=self.eps, bounds=self.bounds), model, x, y, generator)
        adv_logits = model(x_adv)
        adv_loss = F.cross_entropy(adv_logits, y)
        if self.alpha == 0:
            return adv_loss, {"loss": float(adv_loss.detach()), "adv_loss": float(adv_loss.detach()),
                              "adv_acc": _accuracy(adv_logits, y)}
        return _mix(model, x, y, self.alpha, adv_logits, adv_loss)

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class BatchMix:
    """Batch mixing of Kurakin, Goodfellow & Bengio, "Adversarial machine learning at scale"
    (ICLR 2017), Algorithm 1, L∞.

    Of each batch of ``m`` examples the first ``k`` (the batch is already shuffled) are replaced
    by adversarial examples crafted on the current model, and the whole batch goes through the
    network in one forward pass (so BatchNorm sees the mixture, as in the paper):

        ``L = (Σ_{i ∈ clean} CE(x_i, y_i) + λ·Σ_{i ∈ adv} CE(x_i^adv, y_i)) / (m − k + λ·k)``.

    ``attack="fgsm"`` is one FGSM step of size ``eps``; ``"pgd"`` is :class:`~advlab.attacks.PGD`
    with ``pgd_steps`` steps (random start, step ``2.5·eps/pgd_steps``). The paper uses k = m/2,
    λ = 0.3 and draws ε per example from a truncated normal; here ε is fixed (one threat model).
    A batch smaller than ``k`` (the last one of an epoch) is entirely adversarial. ``k`` larger
    than the trainer's batch size is refused before training starts.
    """

    name: ClassVar[str] = "batch-mix"
    eps: float
    k: int
    lam: float = 0.3
    attack: str = "fgsm"
    pgd_steps: int = 7
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("BatchMix", self.eps, self.bounds)
        check_int("BatchMix: k", self.k, 1)
        check_number("BatchMix: lam", self.lam)
        check_choice("BatchMix: attack", self.attack, ("fgsm", "pgd"))
        check_int("BatchMix: pgd_steps", self.pgd_steps, 1)

    def check_batch_size(self, batch_size: int) -> None:
        """Called by the trainer with its batch size (per process under data parallelism)."""
        if self.k > batch_size:
            raise ValueError(f"BatchMix: k={self.k} adversarial examples per batch, but batches hold "
                             f"only {batch_size} examples (per process); choose k <= {batch_size}")

    def _attack(self) -> FGSM | PGD:
        if self.attack == "fgsm":
            return FGSM(eps=self.eps, bounds=self.bounds)
        return PGD(eps=self.eps, steps=self.pgd_steps, bounds=self.bounds)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        m = x.shape[0]
        k = min(self.k, m)
        x_adv = _craft(self._attack(), model, x[:k], y[:k], generator)
        logits = model(torch.cat([x_adv, x[k:]]))  # (m, K)
        per_sample = F.cross_entropy(logits, y, reduction="none")
        loss = (self.lam * per_sample[:k].sum() + per_sample[k:].sum()) / (m - k + self.lam * k)
        logs = {"loss": float(loss.detach()), "adv_acc": _accuracy(logits[:k], y[:k])}
        if k < m:
            logs["acc"] = _accuracy(logits[k:], y[k:])
        return loss, logs

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class PGDTraining:
    """PGD adversarial training of Madry et al. (ICLR 2018), L∞: ``min_θ E max_{δ∈B_ε} CE(x+δ, y)``.

    The inner maximisation is :class:`~advlab.attacks.PGD` with ``steps`` steps of size
    ``step_size`` (default ``2.5·ε/steps``) from a uniform random start in the ε-ball; the outer
    step minimises ``CE(f(x_adv), y)`` on the last iterate. One epoch costs about ``steps + 1``
    standard epochs (plus one forward pass per batch that the attack spends on its result).
    """

    name: ClassVar[str] = "pgd"
    eps: float
    steps: int = 7
    step_size: float | None = None
    random_start: bool = True
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("PGDTraining", self.eps, self.bounds)
        check_int("PGDTraining: steps", self.steps, 1)
        _check_step_size("PGDTraining", self.step_size)

    def attack(self) -> PGD:
        return PGD(eps=self.eps, steps=self.steps, step_size=self.step_size,
                   random_start=self.random_start, bounds=self.bounds)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        return _train_on(model, _craft(self.attack(), model, x, y, generator), y)

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class FastFGSM:
    """"Fast is better than free" adversarial training of Wong, Rice & Kolter (ICLR 2020), Alg. 3.

    ``δ₀ ~ U[−ε, ε]^d``; ``δ = clip_{[−ε, ε]}(δ₀ + α·sign ∇_δ CE(x + δ₀, y))`` with ``α = 1.25·ε``;
    the input is also clipped to the bounds; then one step on ``CE(f(x + δ), y)``. The paper's cyclic learning
    rate is the trainer's: ``train(..., lr_schedule="cyclic")``; mixed precision is not reproduced.
    The step is taken directly (:meth:`perturb`); it equals :class:`~advlab.attacks.PGD` with one
    step from a random start (:meth:`attack`), minus the attack's scoring forward pass.
    """

    name: ClassVar[str] = "fast"
    eps: float
    step_size: float | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("FastFGSM", self.eps, self.bounds)
        _check_step_size("FastFGSM", self.step_size)

    def attack(self) -> PGD:
        """The same perturbation as an advlab attack (it also evaluates its result)."""
        step = self.step_size if self.step_size is not None else 1.25 * self.eps
        return PGD(eps=self.eps, steps=1, step_size=step, random_start=True, bounds=self.bounds)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator) -> Tensor:
        """``Π(x + δ₀ + α·sign ∇CE(x + δ₀))``: :meth:`attack` through the shared loop, without its
        forward pass to score the result (a third of the crafting cost, which the "fast" in the
        paper's title is about)."""
        return _craft(self.attack(), model, x, y, generator)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        return _train_on(model, self.perturb(model, x, y, generator=generator), y)

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


@dataclass(frozen=True, kw_only=True)
class TRADES:
    """TRADES of Zhang et al. (ICML 2019), L∞:

        ``L = CE(f(x), y) + β · KL(softmax f(x) ‖ softmax f(x')) ``,
        ``x' = argmax_{x' ∈ B_ε(x)} KL(softmax f(x) ‖ softmax f(x'))``

    found by ``steps`` sign-gradient steps of size ``step_size`` (default ``2.5·ε/steps``) from
    ``x + 0.001·N(0, I)`` (projected on the ball and the box), with ``f(x)`` held fixed during
    the search, the model in eval mode (as the authors' code). The KL is summed over classes and
    averaged over the batch; gradients flow through both ``f(x)`` and ``f(x')``. The paper uses
    β = 6 on CIFAR-10 and β = 1/λ ∈ [1, 10] elsewhere.
    """

    name: ClassVar[str] = "trades"
    eps: float
    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("TRADES", self.eps, self.bounds)
        check_number("TRADES: beta", self.beta, low=0.0, low_open=False)
        check_int("TRADES: steps", self.steps, 1)
        _check_step_size("TRADES", self.step_size)

    def _search(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        threat = ThreatModel(norm="linf", eps=self.eps, bounds=self.bounds)
        step = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        with quiet_eval(model), torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)  # (B, K), fixed during the search
        log_p_clean = torch.log(p_clean.clamp_min(1e-30))

        def kl(logits: Tensor, _y: Tensor, _t: Tensor | None) -> Tensor:  # (B,) to ascend
            return (p_clean * (log_p_clean - F.log_softmax(logits, dim=1))).sum(dim=1)

        noise = torch.randn(x.shape, generator=generator, device=generator.device,
                            dtype=x.dtype).to(x.device)
        x_init = threat.project(x + 0.001 * noise, x)
        state = Record.empty(x)
        with quiet_eval(model), torch.enable_grad():
            gradient_loop(model, x.detach(), y, None, x_init=x_init, threat=threat, loss=kl,
                          schedule=Schedule(steps=self.steps, step_size=step), state=state,
                          idx=torch.arange(x.shape[0], device=x.device), check_first=False)
        return state.x_adv.detach()

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        x_adv = self._search(model, x, y, generator)
        logits = model(x)
        adv_logits = model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(logits, dim=1),
                          reduction="batchmean")
        loss = natural + self.beta * robust
        return loss, {"loss": float(loss.detach()), "ce": float(natural.detach()),
                      "kl": float(robust.detach()), "acc": _accuracy(logits, y),
                      "adv_acc": _accuracy(adv_logits, y)}

    def card(self) -> dict[str, Any]:
        return recipe_card(self)


def _model_fingerprint(model: nn.Module) -> dict[str, Any]:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    out: dict[str, Any] = {"class": type(model).__name__, "sha256": h.hexdigest()[:16]}
    card = getattr(model, "advlab_card", None)
    if card is not None:
        out["architecture"] = getattr(card, "architecture", None)
    return out


@dataclass(frozen=True, kw_only=True)
class EnsembleAdversarial:
    """Ensemble adversarial training of Tramèr et al. (ICLR 2018), L∞.

    For each batch the source of the FGSM examples is drawn (uniformly, from the trainer's
    generator, so a resumed run draws the same sequence) among the model being trained and the
    ``static_models``, pre-trained models that are never updated (they are not trained, their
    mode is restored, and no gradient is ever written to them). The loss is Goodfellow's mix
    ``α·CE(f(x), y) + (1 − α)·CE(f(x_src), y)``; Tramèr et al. train on half clean, half
    adversarial batches, i.e. α = 0.5. The paper crafts with Step-LL / FGSM variants; here FGSM
    (``eps``) is used for every source.

    The card records each static model's class and a SHA-256 of its weights, so a checkpoint
    cannot be resumed against other static models.

    Choose static models whose adversarial examples transfer to the model being trained (strong
    models, as in the paper). With weaker ones (bench/ENSEMBLE.md: 2-epoch MLP and LeNet-5 for a
    small CNN on Fashion-MNIST) the trained model learns to resist their particular perturbations,
    masks its gradients more than FGSM-mix training, and is fooled *more* often by examples
    transferred from held-out models, the opposite of the paper's result. With strong static models
    of its own architecture it resists a held-out model of that architecture far better than
    FGSM-mix (transfer success 0.02 vs 0.10) but still not a ResNet: the protection reaches sources
    that resemble the static models. Judge the result with white-box PGD, not only with transfer.
    """

    name: ClassVar[str] = "ensemble"
    eps: float
    static_models: tuple[nn.Module, ...] = field(default=(), compare=False)
    alpha: float = 0.5
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_eps("EnsembleAdversarial", self.eps, self.bounds)
        check_number("EnsembleAdversarial: alpha", self.alpha, low=0.0, low_open=False, high=1.0)
        models = self.static_models
        if isinstance(models, nn.Module):
            models = (models,)
        models = tuple(models)
        if not models:
            raise ValueError("EnsembleAdversarial: static_models must hold at least one pre-trained "
                             "model (the sources besides the model being trained)")
        bad = [type(m).__name__ for m in models if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"EnsembleAdversarial: static_models must be torch.nn.Modules, got {bad}")
        object.__setattr__(self, "static_models", models)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, _Logs]:
        if any(m is model for m in self.static_models):
            raise ValueError("EnsembleAdversarial: the model being trained is among static_models")
        choice = int(torch.randint(len(self.static_models) + 1, (1,), generator=generator,
                                   device=generator.device))
        source = model if choice == 0 else self.static_models[choice - 1]
        attack = FGSM(eps=self.eps, bounds=self.bounds)
        x_adv = _craft(attack, source, x, y, generator)
        adv_logits = model(x_adv)
        adv_loss = F.cross_entropy(adv_logits, y)
        return _mix(model, x, y, self.alpha, adv_logits, adv_loss)

    def card(self) -> dict[str, Any]:
        return {"recipe": self.name, "eps": self.eps, "alpha": self.alpha, "bounds": list(self.bounds),
                "static_models": [_model_fingerprint(m) for m in self.static_models]}
