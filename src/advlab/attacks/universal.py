"""Universal adversarial perturbations: one perturbation ``v`` that fools a model on most inputs.

Two ways to fit ``v`` on a set of inputs, both white-box (they take a model):

* ``method="deepfool"``: Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial
  perturbations", CVPR 2017 (Algorithm 1). Passes over the data; for every point ``x_i`` that
  ``x_i + v`` does not fool yet, DeepFool finds the minimal extra perturbation ``Δv_i`` sending
  ``x_i + v`` across the decision boundary, and

      v ← P_{p,ε}(v + Δv_i)          (P: projection onto the Lp ball of radius ε)

  until the fooling rate on the fitting set reaches ``target_fooling`` (the paper's ``1 − δ``)
  or ``max_epochs`` passes are done.
* ``method="sgd"``: the SGD universal perturbation of Shafahi, Najibi, Xu, Dickerson, Davis &
  Goldstein, "Universal Adversarial Training", AAAI 2020 (their Algorithm 1, the attack without
  the training): projected stochastic gradient ascent on the mean loss of ``x + v`` over
  minibatches, ``v ← P_{p,ε}(v + α · dir_p(∇_v mean_i J(x_i + v)))`` with ``dir_∞ = sign`` and
  ``dir_2 = g / ||g||_2``. ``loss="margin"`` is ``min(margin, 0)`` (C&W margin), which, like
  their clipped cross-entropy, stops points that are already fooled from dominating the step.
  On an :class:`advlab.models.Ensemble` fused in loss the objective is the weighted sum of the
  members' losses (:func:`advlab.losses.objective`); ``method="deepfool"`` linearises the
  model's logits and refuses such an ensemble.

Deviations from the paper (``method="deepfool"``), each measured on the digits CNN:

* Batching. The paper visits one point at a time. Here each minibatch's still-unfooled points run
  DeepFool together at the current ``v`` and the update is ``v ← P_{p,ε}(v + Σ_i Δv_i)``;
  ``batch_size=1`` is the paper's algorithm exactly. (Applying the batch's ``Δv_i`` one after the
  other with a projection after each, their ``Δv_i`` all computed at the batch's ``v``, fitted
  much worse at 32 points per batch; the mean of the ``Δv_i`` took smaller, slower steps.)
* ``Δv_i`` is always DeepFool's *L2* minimal perturbation, also for an L∞ ball, as in the
  authors' reference code (``deepfool`` is L2 there, only the projection ``proj_lp`` changes). An
  L∞ DeepFool step moves every coordinate by the full step, so after the L∞ projection each
  update overwrote ``v`` with the sign pattern of the last point (fooling rates fell below
  random noise of the same norm).
* The fitting-set fooling rate is measured after every pass and swings from pass to pass (by
  tens of points on small models); the ``v`` of the best pass is returned, and the run stops at
  the first pass reaching ``target_fooling``. The same holds for ``method="sgd"``.

Definitions. Every input is evaluated as ``clip(x + v)`` (inside ``bounds``). The reference
label of a point is ``y`` when given, else the model's clean prediction ``k̂(x)``. Untargeted, a
point is fooled when ``k̂(clip(x + v))`` differs from its reference label: with ``y=None`` this is
the paper's fooling rate ``P(k̂(x + v) ≠ k̂(x))``; with ``y`` it is the error rate under ``v``
(clean errors count as fooled; see ``base_rate``). Targeted (``target_class=t``), a point is
fooled when ``k̂(clip(x + v)) = t``, and rates are taken over the points whose reference label is
not ``t``. The fitting-set rate says how well ``v`` was fitted; measure what it does on unseen
inputs with :func:`fooling_rate` on held-out data.

Costs are counted per example: ``num_grads`` backward passes (a minibatch backward on ``B``
points counts ``B``; DeepFool takes ``num_candidates - 1`` per point and step) and
``num_forwards`` forward passes (evaluations included).

Example:
    >>> uap = UniversalPerturbation(norm="linf", eps=0.1, method="deepfool")(model, x_fit)
    >>> uap.fooling_rate, uap.perturbation.shape        # fitted rate, the input shape
    >>> fooling_rate(model, x_test, uap.perturbation)   # held-out rate
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from advlab._checks import (as_labels, bounds_field, check_choice, check_inputs, check_int, check_logits, check_model,
                            check_number, eval_mode, input_grad)
from advlab.attacks._base import config_repr
from advlab.attacks.contract import Attack, needs_autograd
from advlab.attacks.minimal import DeepFool
from advlab.losses import cross_entropy, cw_margin, objective
from advlab.threat import ThreatModel, canonical_norm, lp_norm

log = logging.getLogger(__name__)

METHODS = ("deepfool", "sgd")
SGD_LOSSES = ("ce", "margin")
EVAL_BATCH = 512


# -- geometry of one perturbation -----------------------------------------------------------------


def project_perturbation(v: Tensor, norm: str, eps: float) -> Tensor:
    """``P_{p,ε}(v)``: the Euclidean projection of one perturbation (any shape) onto the ball."""
    if norm == "linf":
        return v.clamp(-eps, eps)
    n = float(torch.linalg.vector_norm(v.flatten(), ord=2))
    return v * (eps / n) if n > eps else v


def random_perturbation(shape: tuple[int, ...] | torch.Size, *, norm: str, eps: float,
                        generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu") -> Tensor:
    """Random noise on the sphere of the ball, the baseline a universal perturbation must beat.

    L∞: sign noise ``±ε`` per coordinate (norm exactly ε); L2: a Gaussian direction scaled to
    norm ε. Without a generator a fresh one seeded with 0 is used (the global RNG is untouched).
    """
    norm = canonical_norm(norm)
    if norm not in ("linf", "l2"):
        raise ValueError(f"random_perturbation supports norm 'linf' or 'l2', got {norm!r}")
    check_number("eps", eps)
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    if norm == "linf":
        bits = torch.randint(0, 2, tuple(shape), generator=generator, device=device)
        return (bits.to(dtype) * 2 - 1) * eps
    g = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return g * (eps / torch.linalg.vector_norm(g.flatten(), ord=2).clamp_min(1e-12))


def _direction(g: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return g.sign()
    return g / torch.linalg.vector_norm(g.flatten(), ord=2).clamp_min(1e-12)


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UniversalResult:
    """A fitted universal perturbation.

    Attributes:
        perturbation: ``(*input_shape)`` one perturbation for every input, ``||v||_p <= ε``.
        fooling_rate: the rate on the fitting set of the returned ``v`` (the best pass's).
        base_rate: the same rate with ``v = 0`` (0 untargeted without ``y``).
        history: the fitting-set fooling rate after each pass over the data.
        converged: the rate reached ``target_fooling`` before ``max_epochs`` ran out.
        num_grads: backward passes spent, counted per example.
        num_forwards: forward passes spent, counted per example (evaluations included).
        threat: the ball ``v`` lies in (norm, ε, bounds).
        attack: the configuration, as ``repr``.
        target_class: the target of a targeted perturbation, else ``None``.
    """

    perturbation: Tensor
    fooling_rate: float
    base_rate: float
    history: tuple[float, ...]
    converged: bool
    num_grads: int
    num_forwards: int
    threat: ThreatModel
    attack: str
    target_class: int | None = None

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def norm(self) -> float:
        """``||v||_p`` in the threat model's norm."""
        return float(lp_norm(self.perturbation[None], self.threat.norm)[0])

    def apply(self, x: Tensor) -> Tensor:
        """``clip(x + v)`` for a batch ``x`` of shape ``(B, *input_shape)``."""
        _check_perturbation_shape(self.perturbation, x)
        return self.threat.clip(x + self.perturbation.to(x.dtype))


# -- evaluation -----------------------------------------------------------------------------------


def _check_perturbation_shape(v: Tensor, x: Tensor) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"perturbation must be a torch.Tensor, got {type(v).__name__}")
    if tuple(v.shape) != tuple(x.shape[1:]):
        raise ValueError(f"perturbation has shape {tuple(v.shape)} but the inputs have shape "
                         f"{tuple(x.shape[1:])} (x is {tuple(x.shape)}); a universal perturbation "
                         "has the shape of one input")
    if v.device != x.device:
        raise ValueError(f"perturbation is on {v.device} but x is on {x.device}")


def _predict(model: nn.Module, x: Tensor, *, batch_size: int = EVAL_BATCH) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(dim=1)
                          for i in range(0, x.shape[0], batch_size)])


def _fooled(pred: Tensor, labels: Tensor, target: int | None) -> Tensor:
    return pred != labels if target is None else pred == target


def class_index(target: Any, name: str = "target", *, optional: bool = True) -> int | None:
    """``target`` as a class index (an int, or a one-element integer tensor), or ``None`` where
    ``optional``; anything else is refused, naming ``name``. Shared with the adversarial patch."""
    if target is None and optional:
        return None
    if isinstance(target, Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        alternative = " or None" if optional else ""
        raise ValueError(f"{name} must be a class index (an int >= 0){alternative}, got {target!r}")
    return target


def reference_labels(model: nn.Module, x: Tensor, y: Tensor | None, target: int | None,
                     bounds: tuple[float, float],
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Validate ``(x, y, target)``; return the reference labels ``(B,)`` (``y``, or the clean
    predictions) and the points a universal rate is taken over ``(B,)`` bool (untargeted: all;
    targeted: those whose label is not the target). Costs one forward pass on ``x`` where ``y`` is
    ``None``, one batch of it otherwise. Shared with the adversarial patch."""
    check_model(model)
    check_inputs(model, x, y if y is not None else torch.zeros(x.shape[0], dtype=torch.long,
                                                                device=x.device),
                 bounds=bounds, generator=generator)
    with torch.no_grad():
        try:
            first = model(x[:EVAL_BATCH])
        except (RuntimeError, IndexError) as err:
            raise ValueError(f"the model failed on inputs of shape {tuple(x.shape)} ({err}); check "
                             "that x has the (B, ...) shape the model expects") from err
    labels_first = y[:EVAL_BATCH] if y is not None else first.argmax(dim=1)
    tvec = None if target is None else torch.full_like(labels_first, target)
    check_logits(first, labels_first, tvec)  # also: target class out of range
    if y is not None:
        labels = as_labels(y)  # any integer dtype
    else:
        labels = first.argmax(dim=1)
        if x.shape[0] > EVAL_BATCH:
            labels = torch.cat([labels, _predict(model, x[EVAL_BATCH:])])
    counted = torch.ones_like(labels, dtype=torch.bool) if target is None else labels != target
    if not bool(counted.any()):
        raise ValueError(f"every point's reference label is the target class {target}; a targeted "
                         "rate needs points of other classes")
    return labels, counted


def fooling_rate(model: nn.Module, x: Tensor, perturbation: Tensor | UniversalResult, *,
                 y: Tensor | None = None, target: int | None = None,
                 bounds: tuple[float, float] | None = None) -> float:
    """The fooling rate of one perturbation on the inputs ``x`` (use held-out data).

    Untargeted: the fraction of points with ``k̂(clip(x + v)) ≠ ℓ``, ``ℓ = y`` when given, else the
    clean prediction ``k̂(x)`` (Moosavi-Dezfooli et al.'s definition). Targeted (``target=t``): the
    fraction of the points with ``ℓ ≠ t`` that ``clip(x + v)`` sends to ``t``. ``perturbation`` is
    a tensor of the shape of one input, or a :class:`UniversalResult` (whose bounds and target are
    then the defaults). Changes nothing it was given.
    """
    if isinstance(perturbation, UniversalResult):
        bounds = perturbation.threat.bounds if bounds is None else bounds
        target = perturbation.target_class if target is None else target
        perturbation = perturbation.perturbation
    bounds = ThreatModel(norm="linf", eps=0.0, bounds=bounds if bounds is not None else (0.0, 1.0)).bounds
    target = class_index(target)
    with eval_mode(check_model(model)):
        labels, counted = reference_labels(model, x, y, target, bounds, None)
        _check_perturbation_shape(perturbation, x)
        if not bool(torch.isfinite(perturbation).all()):
            raise ValueError("perturbation contains NaN or Inf")
        pred = _predict(model, (x + perturbation.to(x.dtype)).clamp(*bounds))
    return float(_fooled(pred, labels, target)[counted].float().mean())


# -- the attack -----------------------------------------------------------------------------------


def _clipped_margin(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """``min(margin, 0)``: the C&W margin, no reward beyond fooling (the sgd ``"margin"`` loss)."""
    return cw_margin(logits, y, target).clamp(max=0.0)


SGD_LOSS_FNS = {"ce": cross_entropy, "margin": _clipped_margin}


def _refuse_loss_fusion(config: Any, model: nn.Module) -> None:
    from advlab.models.ensemble import Ensemble  # local: models must not import attacks

    for m in model.modules():
        if isinstance(m, Ensemble) and m.fusion == "loss":
            raise ValueError(f"{type(config).__name__}(method='deepfool') linearises the model's logits, "
                             "and an Ensemble fused in loss has no logits of its own to attack (its "
                             "objective is a weighted sum of its members' losses); use method='sgd', "
                             "which ascends that sum, or Ensemble(..., fusion='logits') or 'predictions'")


@dataclass(frozen=True, kw_only=True)
class UniversalPerturbation(Attack):
    """Fit one perturbation ``v`` with ``||v||_p <= ε`` that fools the model on most inputs.

    ``method="deepfool"``: Moosavi-Dezfooli et al. (CVPR 2017), ``v ← P_{p,ε}(v + Δv_i)`` with
    ``Δv_i`` DeepFool's minimal perturbation of each point ``x_i + v`` not yet fooled.
    ``method="sgd"``: Shafahi et al. (AAAI 2020), ``v ← P_{p,ε}(v + α · dir_p(∇_v mean J))`` over
    minibatches. Both stop after the pass at which the fitting-set fooling rate reaches
    ``target_fooling`` (``1 − δ``), or after ``max_epochs`` passes. See the module notes for the
    definitions, the batching and the cost counts.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: the radius ε of the ball ``v`` lies in (input units).
        method: ``"deepfool"`` or ``"sgd"``.
        max_epochs: passes over the fitting data at most.
        target_fooling: stop once the fitting-set fooling rate is at least this (the paper's 1 − δ).
        overshoot, deepfool_steps, num_candidates: DeepFool's settings (``deepfool`` method; the
            paper's code uses overshoot 0.02 and 10 steps).
        batch_size: points per DeepFool call or per SGD step.
        loss: the ``sgd`` objective, ``"ce"`` (cross-entropy; targeted: ``−CE(t)``) or ``"margin"``
            (``min(margin, 0)``, C&W margin).
        step_size: the ``sgd`` step α; ``None`` means ``ε / 10`` (L∞) and ``ε / 5`` (L2).
        target_class: a class index for a targeted perturbation, else ``None``.
        bounds: the input box; inputs are evaluated as ``clip(x + v)``.

    Calling it on ``(model, x, y=None, *, generator=None)`` with ``x`` ``(N, *)`` returns a
    :class:`UniversalResult`; the generator shuffles the data each pass (default: seeded with 0).
    On an :class:`advlab.models.Ensemble` fused in loss, ``sgd`` ascends the weighted sum of the
    members' losses; ``deepfool`` refuses it.

    Example:
        >>> fit = UniversalPerturbation(norm="l2", eps=2.0, method="sgd", max_epochs=5)
        >>> result = fit(model, x_train[:1000])
        >>> fooling_rate(model, x_test, result.perturbation), result.apply(x_test)
    """

    kind: ClassVar[str] = "universal"
    access: ClassVar[str] = "gradients"

    norm: str = "linf"
    eps: float = 0.1
    method: str = "deepfool"
    max_epochs: int = 10
    target_fooling: float = 0.8
    overshoot: float = 0.02
    deepfool_steps: int = 10
    num_candidates: int | None = 10
    batch_size: int = 32
    loss: str = "ce"
    step_size: float | None = None
    target_class: int | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        norm = canonical_norm(self.norm)
        if norm not in ("linf", "l2"):
            raise ValueError(f"UniversalPerturbation supports norm 'linf' or 'l2', got {self.norm!r}")
        object.__setattr__(self, "norm", norm)
        check_number("eps", self.eps)
        check_choice("method", self.method, METHODS)
        check_int("max_epochs", self.max_epochs)
        check_number("target_fooling (the paper's 1 - delta)", self.target_fooling, high=1.0)
        check_number("overshoot", self.overshoot, low_open=False)
        check_int("deepfool_steps", self.deepfool_steps)
        if self.num_candidates is not None:
            check_int("num_candidates (the true class included)", self.num_candidates, 2)
        check_int("batch_size", self.batch_size)
        check_choice("loss (of the sgd method)", self.loss, SGD_LOSSES)
        if self.step_size is not None:
            check_number("step_size", self.step_size)
        class_index(self.target_class, "target_class")
        bounds_field(self)

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=self.bounds,
                           targeted=self.target_class is not None)

    @needs_autograd
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> UniversalResult:
        target = self.target_class
        if self.method == "deepfool":
            _refuse_loss_fusion(self, check_model(model))
        with eval_mode(check_model(model)):
            labels, counted = reference_labels(model, x, y, target, self.bounds, generator)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(0)
            x = x.detach()
            fit = _Fit(self, model, x, labels, counted, generator)
            return fit.run()


class _Fit:
    """The state of one fitting run (kept off the frozen config)."""

    def __init__(self, config: UniversalPerturbation, model: nn.Module, x: Tensor, labels: Tensor,
                 counted: Tensor, generator: torch.Generator) -> None:
        self.c, self.model, self.x, self.labels = config, model, x, labels
        self.counted, self.generator = counted, generator
        self.target = config.target_class
        self.v = torch.zeros_like(x[0])
        self.grads = 0
        self.forwards = x.shape[0]  # the clean pass
        lo, hi = config.bounds
        self.lo, self.hi = lo, hi
        self.deepfool_norm = "l2"

    def rate(self) -> float:
        pred = _predict(self.model, (self.x + self.v).clamp(self.lo, self.hi))
        self.forwards += self.x.shape[0]
        return float(_fooled(pred, self.labels, self.target)[self.counted].float().mean())

    def run(self) -> UniversalResult:
        c = self.c
        base = self.rate()
        history: list[float] = []
        rate, converged = base, base >= c.target_fooling
        best_v, best_rate = self.v.clone(), base
        # points whose reference label is the target are not attacked (nothing to do for them)
        pool = self.counted.nonzero().squeeze(1)
        with torch.enable_grad():
            for epoch in range(c.max_epochs):
                if converged:
                    break
                order = pool[torch.randperm(pool.numel(), generator=self.generator,
                                            device=pool.device)]
                for start in range(0, order.numel(), c.batch_size):
                    idx = order[start:start + c.batch_size]
                    if c.method == "deepfool":
                        self._deepfool_batch(idx)
                    else:
                        self._sgd_batch(idx)
                rate = self.rate()
                history.append(rate)
                log.info("universal %s epoch %d: fooling rate %.4f, ||v||=%.4g", c.method, epoch + 1,
                         rate, float(lp_norm(self.v[None], c.norm)[0]))
                if rate > best_rate:
                    best_v, best_rate = self.v.clone(), rate
                converged = rate >= c.target_fooling
        if not bool(torch.isfinite(self.v).all()):
            raise FloatingPointError("the perturbation became NaN/Inf: the model's gradient is NaN or "
                                     "Inf on some points; check the model for non-finite operations")
        return UniversalResult(perturbation=best_v.detach(), fooling_rate=best_rate, base_rate=base,
                               history=tuple(history), converged=converged, num_grads=self.grads,
                               num_forwards=self.forwards, threat=c.threat, attack=config_repr(c),
                               target_class=self.target)

    # -- Moosavi-Dezfooli et al. 2017 -----------------------------------------------------------

    def _deepfool_batch(self, idx: Tensor) -> None:
        c = self.c
        xb = (self.x[idx] + self.v).clamp(self.lo, self.hi)
        with torch.no_grad():
            pred = self.model(xb).argmax(dim=1)
        self.forwards += idx.numel()
        todo = ~_fooled(pred, self.labels[idx], self.target)
        if not bool(todo.any()):
            return
        xu = xb[todo]
        if self.target is None:
            df = DeepFool(norm=self.deepfool_norm, steps=c.deepfool_steps, overshoot=c.overshoot,
                          num_candidates=c.num_candidates, bounds=c.bounds)
            res = df(self.model, xu, self.labels[idx][todo])
            deltas = res.x_adv - xu
            self.grads += int(res.num_grads.sum())
            self.forwards += int(res.num_forwards.sum())
        else:
            deltas = self._targeted_deepfool(xu)
        # v <- P(v + Σ_i Δv_i): with one point per batch, the paper's update exactly
        self.v = project_perturbation(self.v + deltas.sum(dim=0), c.norm, c.eps)

    def _targeted_deepfool(self, xs: Tensor) -> Tensor:
        """Targeted DeepFool: linearise ``f = z_t − max_{j≠t} z_j`` and step to ``f = 0``,
        ``r = (|f| / ||∇f||_q + 1e-4) · dir_p(∇f)``, accumulated with overshoot, until ``t`` wins.
        One forward and one backward pass per step and point. Returns ``(B, *)`` perturbations."""
        c = self.c
        t = torch.full((xs.shape[0],), self.target, dtype=torch.long, device=xs.device)
        dual = "l2" if self.deepfool_norm == "l2" else "l1"
        r_total = torch.zeros_like(xs)
        out = torch.zeros_like(xs)
        live = torch.arange(xs.shape[0], device=xs.device)
        xa = xs
        for step in range(c.deepfool_steps + 1):
            xa = xa.detach().requires_grad_(step < c.deepfool_steps)
            logits = self.model(xa)
            self.forwards += live.numel()
            f = cw_margin(logits, t[live], t[live])  # z_t - max_{j≠t} z_j, > 0 once t wins
            keep = f.detach() <= 0
            out[live] = xa.detach() - xs[live]
            if step == c.deepfool_steps or not bool(keep.any()):
                break
            w = input_grad(f.sum(), xa)
            self.grads += live.numel()
            w, f = w[keep].flatten(1), f.detach()[keep]
            live, r_total = live[keep], r_total[keep]
            wn = lp_norm(w, dual).clamp_min(1e-12)
            d = f.abs() / wn + 1e-4
            r = (w / wn[:, None] if self.deepfool_norm == "l2" else w.sign()) * d[:, None]
            r_total = r_total + r.view_as(r_total)
            xa = (xs[live] + (1 + c.overshoot) * r_total).clamp(self.lo, self.hi)
        return out

    # -- Shafahi et al. 2020 --------------------------------------------------------------------

    def _sgd_batch(self, idx: Tensor) -> None:
        c = self.c
        step = c.step_size if c.step_size is not None else c.eps / (10 if c.norm == "linf" else 5)
        v = self.v.detach().requires_grad_(True)
        labels = self.labels[idx]
        t = None if self.target is None else torch.full_like(labels, self.target)
        # the loss on the logits; for an ensemble fused in loss, the weighted sum of its members'
        obj, _ = objective(self.model, (self.x[idx] + v).clamp(self.lo, self.hi), labels, t,
                           SGD_LOSS_FNS[c.loss])
        g = input_grad(obj.mean(), v)
        self.grads += idx.numel()
        self.forwards += idx.numel()
        self.v = project_perturbation(self.v + step * _direction(g, c.norm), c.norm, c.eps)
