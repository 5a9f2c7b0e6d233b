"""Adversarial-example detectors, a classifier with a reject option, and the adaptive attack on both.

Two detectors read one hidden layer of the classifier (captured with a forward hook that is always
removed again) and learn to tell clean inputs from adversarial ones:

* :class:`SafetyNet` (Lu, Issaranon & Forsyth, ICCV 2017, "SafetyNet: detecting and rejecting
  adversarial examples robustly"): each unit of a late ReLU layer is quantised into a discrete
  code (binary ``a > 0``, or ``levels`` levels at per-unit thresholds) and an RBF-kernel SVM
  separates the codes of clean and adversarial inputs.
* :class:`ActivationDetector` (Metzen, Genewein, Fischer & Bischoff, ICLR 2017, "On detecting
  adversarial perturbations"): a small neural network on the layer's (standardised) activations,
  trained with binary cross-entropy to output ``p(adversarial)``.

``Config.fit(model, x_clean, x_adv)`` returns a :class:`FittedDetector` whose ``score(x)`` ``(B,)``
is higher for more adversarial-looking inputs and whose ``predict(x)`` ``(B,)`` bool is
``score > threshold``. :func:`detection_roc_auc` measures how well the scores separate two sets.

:class:`~advlab.defenses.guarded.GuardedClassifier` (in :mod:`advlab.defenses.guarded`) turns classifier + detector into one ``nn.Module`` with ``C + 1``
outputs, the last one "reject": ``z_R(x) = max_j z_j(x) + s(x) - τ``, so ``argmax = R`` exactly when
the detector's score ``s`` exceeds its threshold ``τ``. Any advlab white-box attack can attack it.
:class:`AdaptivePGD` is Carlini & Wagner's (AISec 2017, "Adversarial examples are not easily
detected") recipe for doing so: PGD on the guarded model with the margin
``max_{j∉{y,R}} z_j - max(z_y, z_R)``, which is positive exactly when the classifier is fooled
*and* the detector is not.

SafetyNet's quantiser has zero gradient almost everywhere; its differentiable score (used by the
guarded model) is BPDA (Athalye, Carlini & Wagner, ICML 2018): the forward pass is the exact
quantised code and SVM decision value, the backward pass treats the quantiser as ``a / σ`` (a
straight-through estimator with each unit's clean standard deviation ``σ``), and the RBF-SVM
decision function is differentiated exactly (it is re-implemented in torch and checked against
scikit-learn's).

Shapes: ``x_clean`` ``(N, *)``, ``x_adv`` ``(M, *)``, ``x`` ``(B, *)`` with the classifier's
per-example shape; scores ``(B,)``.

Example:
    >>> det = ActivationDetector(epochs=20, seed=0).fit(model, x_clean, PGD(eps=0.1)(model, x_clean, y).x_adv)
    >>> detection_roc_auc(det, x_test, x_test_adv)
    >>> guarded = GuardedClassifier(model, det)
    >>> pred, rejected = guarded.predict(x_test)
    >>> result = AdaptivePGD(eps=0.1, steps=50)(guarded, x_test, y_test)   # success: fooled and accepted
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import check_model, eval_mode
from advlab.attacks._base import config_repr

log = logging.getLogger(__name__)

LayerSpec = Union[str, nn.Module, None]

__all__ = [
    "SafetyNet", "ActivationDetector", "FittedDetector", "detection_roc_auc", "find_layer", "check_batch",
]


# -- validation -----------------------------------------------------------------------------------


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_layer_spec(layer: Any) -> None:
    if layer is not None and not isinstance(layer, (str, nn.Module)):
        raise TypeError(f"layer must be a module name (str), an nn.Module inside the model, or None "
                        f"(the last ReLU), got {type(layer).__name__}")


def check_batch(name: str, x: Any, *, shape: tuple[int, ...] | None = None,
                 allow_empty: bool = False) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, ...), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension, shape (B, ...); got shape {tuple(x.shape)}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty (B = 0)")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} has per-example shape {tuple(x.shape[1:])} but the detector was "
                         f"fitted on inputs of shape {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x.detach()


def _check_fit_sets(model: nn.Module, x_clean: Any, x_adv: Any) -> tuple[Tensor, Tensor]:
    check_model(model)
    for name, x in (("x_clean", x_clean), ("x_adv", x_adv)):
        if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[0] == 0:
            other = "adversarial" if name == "x_adv" else "clean"
            raise ValueError(f"{name} is empty: a detector needs examples of both classes (clean and "
                             f"adversarial) and got no {other} ones; a detector fitted on one class "
                             "only cannot separate anything")
    x_clean = check_batch("x_clean", x_clean)
    x_adv = check_batch("x_adv", x_adv)
    if x_clean.shape[1:] != x_adv.shape[1:]:
        raise ValueError(f"x_clean has per-example shape {tuple(x_clean.shape[1:])} but x_adv has "
                         f"{tuple(x_adv.shape[1:])}; both must be inputs of the same model")
    if x_clean.shape == x_adv.shape and torch.equal(x_clean, x_adv):
        raise ValueError("x_adv equals x_clean: every 'adversarial' example is a clean one, so the two "
                         "classes are identical (did the attack fail on every point?)")
    if x_clean.device != x_adv.device:
        raise ValueError(f"x_clean is on {x_clean.device} but x_adv is on {x_adv.device}")
    return x_clean, x_adv


# -- layers and hooks -----------------------------------------------------------------------------


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    raise ValueError(f"the layer {type(module).__name__} given is not a submodule of the model; "
                     "pass a module of this model or its name (see model.named_modules())")


def find_layer(model: nn.Module, layer: LayerSpec, x_probe: Tensor) -> tuple[str, nn.Module]:
    """Resolve ``layer`` to ``(name, module)`` inside ``model``.

    ``layer`` is a name from ``model.named_modules()``, a submodule, or ``None``: the last
    ``nn.ReLU`` module the forward pass runs (found with forward hooks on a probe batch), i.e. the
    last ReLU before the classifier head. Functional ReLUs (``torch.relu`` in ``forward``) cannot
    be hooked; name a module whose output you want then.
    """
    check_model(model)
    _check_layer_spec(layer)
    if isinstance(layer, nn.Module):
        return _module_name(model, layer), layer
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules or layer == "":
            names = [n for n in modules if n][:20]
            raise ValueError(f"the model has no submodule named {layer!r}; choose one of {names}")
        return layer, modules[layer]
    order: list[str] = []
    handles = []
    try:
        for name, m in modules.items():
            if isinstance(m, nn.ReLU):
                handles.append(m.register_forward_hook(
                    lambda _m, _i, _o, name=name: order.append(name)))
        if not handles:
            raise ValueError("the model has no nn.ReLU module (a functional relu cannot be hooked); "
                             "pass layer='name' of the module whose output the detector should read, "
                             f"one of {[n for n in modules if n][:20]}")
        with torch.no_grad(), eval_mode(model):
            _forward(model, x_probe[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError("no nn.ReLU module ran in the model's forward pass; pass layer='name'")
    return order[-1], modules[order[-1]]


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    try:
        return model(x)
    except (RuntimeError, IndexError) as err:
        raise ValueError(f"the model failed on inputs of shape {tuple(x.shape)} ({err}); check that x "
                         "has the (B, ...) shape the model expects") from err


@contextlib.contextmanager
def _capture(module: nn.Module) -> Iterator[list[Tensor]]:
    """Record the output of ``module`` (the last one, if it runs more than once); always unhooks."""
    store: list[Tensor] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if not isinstance(out, Tensor):
            raise TypeError(f"the detector's layer returned {type(out).__name__}, not a tensor; "
                            "choose a layer whose output is one tensor")
        store[:] = [out]

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _logits_and_acts(model: nn.Module, module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    with _capture(module) as store:
        logits = _forward(model, x)
    if not store:
        raise ValueError("the detector's layer did not run in the model's forward pass")
    return logits, store[0].flatten(1)  # (B, C), (B, D)


def _activations(model: nn.Module, module: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """``(N, D)`` flattened layer outputs, computed without a graph in eval mode."""
    out = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            out.append(_logits_and_acts(model, module, x[i:i + batch_size])[1])
    return torch.cat(out)


# -- the fitted detector --------------------------------------------------------------------------


class FittedDetector:
    """A detector bound to the classifier it reads: ``head(layer activations) -> score``.

    Attributes:
        model: the classifier (never changed; held by reference).
        layer: the name of the layer read (``model.named_modules()``).
        head: an ``nn.Module`` mapping flattened activations ``(B, D)`` to scores ``(B,)``,
            differentiable (SafetyNet: BPDA through the quantiser). Frozen, in eval mode.
        threshold: ``predict`` flags ``score > threshold``.
        input_shape: the per-example shape the detector was fitted on.
        method: ``"safetynet"`` or ``"activation"``.
        config: the configuration's ``repr``.
        estimator: SafetyNet's fitted scikit-learn ``SVC`` (on codes ``head.code(acts)``), else None.
    """

    def __init__(self, *, model: nn.Module, layer: str, head: nn.Module, threshold: float,
                 input_shape: tuple[int, ...], method: str, config: str, batch_size: int = 256,
                 estimator: Any = None) -> None:
        self.model = model
        self.layer = layer
        self.module = dict(model.named_modules())[layer]
        self.head = head
        self.threshold = float(threshold)
        self.input_shape = input_shape
        self.method = method
        self.config = config
        self.batch_size = batch_size
        self.estimator = estimator

    def __repr__(self) -> str:
        return f"FittedDetector(method={self.method!r}, layer={self.layer!r}, threshold={self.threshold:g})"

    def score(self, x: Tensor) -> Tensor:
        """``(B,)`` detection scores, higher = more adversarial (no graph, eval mode)."""
        x = check_batch("x", x, shape=self.input_shape)
        out = []
        with torch.no_grad(), eval_mode(self.model):
            for i in range(0, x.shape[0], self.batch_size):
                _, acts = _logits_and_acts(self.model, self.module, x[i:i + self.batch_size])
                out.append(self.head(acts))
        return torch.cat(out)

    def predict(self, x: Tensor, threshold: float | None = None) -> Tensor:
        """``(B,)`` bool: flagged as adversarial, ``score(x) > threshold``."""
        t = self.threshold if threshold is None else float(threshold)
        return self.score(x) > t

    def logits_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The classifier's logits ``(B, C)`` and the differentiable score ``(B,)`` from one forward
        pass (the caller chooses grad mode and eval mode)."""
        logits, acts = _logits_and_acts(self.model, self.module, x)
        return logits, self.head(acts)


def detection_roc_auc(detector: FittedDetector, x_clean: Tensor, x_adv: Tensor) -> float:
    """Area under the ROC curve of ``detector.score`` for adversarial (positive) vs clean inputs:
    the probability that a random adversarial input scores above a random clean one (ties count
    half). 0.5 is chance, 1.0 perfect separation."""
    from sklearn.metrics import roc_auc_score

    x_clean, x_adv = check_batch("x_clean", x_clean), check_batch("x_adv", x_adv)
    s = torch.cat([detector.score(x_clean), detector.score(x_adv)]).double().cpu().numpy()
    labels = [0] * x_clean.shape[0] + [1] * x_adv.shape[0]
    return float(roc_auc_score(labels, s))


# -- SafetyNet ------------------------------------------------------------------------------------


class _SafetyNetHead(nn.Module):
    """Quantised codes -> RBF-SVM decision value, in torch (forward exact, backward BPDA)."""

    def __init__(self, thresholds: Tensor, scale: Tensor, support: Tensor, dual_coef: Tensor,
                 intercept: float, gamma: float) -> None:
        super().__init__()
        self.register_buffer("thresholds", thresholds)  # (L-1, D); row 0 is 0 (the ReLU's "on")
        self.register_buffer("scale", scale)            # (D,) straight-through slope 1/σ
        self.register_buffer("support", support)        # (S, D)
        self.register_buffer("dual_coef", dual_coef)    # (S,)
        self.intercept = float(intercept)
        self.gamma = float(gamma)

    def code(self, acts: Tensor) -> Tensor:
        """``(B, D)`` code in ``{0, 1/(L-1), ..., 1}``: the fraction of thresholds exceeded."""
        return (acts[:, None, :] > self.thresholds).to(acts.dtype).mean(dim=1)

    def forward(self, acts: Tensor) -> Tensor:  # (B, D) -> (B,)
        code = self.code(acts.detach())
        if acts.requires_grad:
            relaxed = acts / self.scale
            code = code + (relaxed - relaxed.detach())  # BPDA: value of code, gradient of a / σ
        sq = ((code * code).sum(1, keepdim=True) - 2 * code @ self.support.T
              + (self.support * self.support).sum(1)).clamp_min(0)  # (B, S)
        return torch.exp(-self.gamma * sq) @ self.dual_coef + self.intercept


@dataclass(frozen=True, kw_only=True)
class SafetyNet:
    """SafetyNet (Lu, Issaranon & Forsyth, ICCV 2017): an RBF-SVM on quantised late-ReLU codes.

    For the layer's activations ``a ∈ R^D`` the code is ``q(a)_i = (1/(L-1)) Σ_k [a_i > t_{k,i}]``
    with ``t_0 = 0`` (binary, ``levels=2``: "is the unit on") and, for ``levels = L > 2``,
    ``t_{k,i}`` the ``k/(L-1)`` quantiles of unit ``i``'s positive activations on the clean fit set.
    An ``SVC(kernel="rbf", C=svm_c, gamma)`` is trained on codes of ``x_clean`` (label 0) and
    ``x_adv`` (label 1); the score is its decision value (threshold 0). ``gamma=None`` uses
    scikit-learn's "scale" rule ``1 / (D · Var(codes))``.

    Args:
        layer: module name or module; ``None``: the last ``nn.ReLU`` the forward pass runs.
        levels: number of quantisation levels ``L >= 2``.
        svm_c: the SVM's ``C``. gamma: RBF width (``None``: "scale").
        batch_size: inputs per forward pass when computing activations.

    Example:
        >>> det = SafetyNet(levels=2).fit(model, x_clean, x_adv)
        >>> det.predict(x)      # (B,) bool
    """

    layer: LayerSpec = None
    levels: int = 2
    svm_c: float = 1.0
    gamma: float | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        _check_layer_spec(self.layer)
        _int_at_least("levels", self.levels, 2)
        _positive("svm_c", self.svm_c)
        if self.gamma is not None:
            _positive("gamma", self.gamma)
        _int_at_least("batch_size", self.batch_size, 1)

    def fit(self, model: nn.Module, x_clean: Tensor, x_adv: Tensor) -> FittedDetector:
        """Train the SVM on the codes of ``x_clean`` (label 0) and ``x_adv`` (label 1)."""
        from sklearn.svm import SVC

        x_clean, x_adv = _check_fit_sets(model, x_clean, x_adv)
        name, module = find_layer(model, self.layer, x_clean)
        a_clean = _activations(model, module, x_clean, self.batch_size)
        a_adv = _activations(model, module, x_adv, self.batch_size)
        d = a_clean.shape[1]
        thresholds = [torch.zeros(d, dtype=a_clean.dtype, device=a_clean.device)]
        if self.levels > 2:
            pos = torch.where(a_clean > 0, a_clean, torch.full_like(a_clean, math.nan))
            qs = torch.tensor([k / (self.levels - 1) for k in range(1, self.levels - 1)],
                              dtype=a_clean.dtype, device=a_clean.device)
            t = torch.nanquantile(pos, qs, dim=0)  # (L-2, D); NaN for a unit never on
            thresholds += list(torch.nan_to_num(t, nan=math.inf))
        thr = torch.stack(thresholds)  # (L-1, D)
        sigma = a_clean.std(dim=0) if a_clean.shape[0] > 1 else torch.zeros(d, dtype=a_clean.dtype)
        fallback = float(sigma[sigma > 0].mean()) if bool((sigma > 0).any()) else 1.0
        scale = torch.where(sigma > 0, sigma, torch.full_like(sigma, fallback))

        head = _SafetyNetHead(thr, scale, torch.zeros(1, d), torch.zeros(1), 0.0, 1.0)
        codes = torch.cat([head.code(a_clean), head.code(a_adv)]).double().cpu().numpy()
        labels = [0] * a_clean.shape[0] + [1] * a_adv.shape[0]
        var = float(codes.var())
        gamma = self.gamma if self.gamma is not None else (1.0 / (d * var) if var > 0 else 1.0)
        svm = SVC(kernel="rbf", C=float(self.svm_c), gamma=gamma).fit(codes, labels)
        dtype, dev = a_clean.dtype, a_clean.device
        head = _SafetyNetHead(thr, scale,
                              torch.as_tensor(svm.support_vectors_, dtype=dtype, device=dev),
                              torch.as_tensor(svm.dual_coef_[0], dtype=dtype, device=dev),
                              float(svm.intercept_[0]), gamma).eval()
        log.info("SafetyNet on %s (%d units, %d levels): %d support vectors of %d codes",
                 name, d, self.levels, len(svm.support_), len(labels))
        return FittedDetector(model=model, layer=name, head=head, threshold=0.0,
                              input_shape=tuple(x_clean.shape[1:]), method="safetynet",
                              config=config_repr(self), batch_size=self.batch_size, estimator=svm)


# -- Metzen et al.'s activation detector ----------------------------------------------------------


class _MLPHead(nn.Module):
    """Standardise, then ``Linear(D, hidden) → ReLU → Linear(hidden, 1)``: the logit of p(adv)."""

    def __init__(self, mean: Tensor, std: Tensor, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(nn.Linear(mean.numel(), hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, acts: Tensor) -> Tensor:  # (B, D) -> (B,)
        return self.net((acts - self.mean) / self.std).squeeze(1)


@dataclass(frozen=True, kw_only=True)
class ActivationDetector:
    """A binary detector network on a hidden layer (Metzen et al., ICLR 2017).

    A one-hidden-layer network ``d(a) = W_2 ReLU(W_1 (a - μ)/σ + b_1) + b_2`` on the layer's
    flattened activations ``a`` (``μ``, ``σ`` per unit over the fit set) is trained with Adam on the
    class-balanced binary cross-entropy ``BCE(d(a), [x is adversarial])`` for ``epochs`` passes
    (minibatches of ``batch_size``, shuffled and initialised from ``seed``; the global RNG is left
    as it was). The score is the logit ``d(a)`` (threshold 0, i.e. ``p(adv) > 0.5``).

    Args:
        layer: module name or module; ``None``: the last ``nn.ReLU`` the forward pass runs.
        hidden: width of the hidden layer. epochs, lr, weight_decay, batch_size: training.
        seed: initialisation and shuffling seed.

    Example:
        >>> det = ActivationDetector(hidden=64, epochs=30, seed=0).fit(model, x_clean, x_adv)
    """

    layer: LayerSpec = None
    hidden: int = 64
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _check_layer_spec(self.layer)
        _int_at_least("hidden", self.hidden, 1)
        _int_at_least("epochs", self.epochs, 1)
        _positive("lr", self.lr)
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        _int_at_least("batch_size", self.batch_size, 1)
        _int_at_least("seed", self.seed, 0)

    def fit(self, model: nn.Module, x_clean: Tensor, x_adv: Tensor) -> FittedDetector:
        """Train the detector network on ``x_clean`` (label 0) and ``x_adv`` (label 1)."""
        x_clean, x_adv = _check_fit_sets(model, x_clean, x_adv)
        name, module = find_layer(model, self.layer, x_clean)
        a = torch.cat([_activations(model, module, x_clean, 256), _activations(model, module, x_adv, 256)])
        labels = torch.cat([torch.zeros(x_clean.shape[0]), torch.ones(x_adv.shape[0])]).to(a)
        mean, std = a.mean(dim=0), a.std(dim=0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = _MLPHead(mean, std, self.hidden).to(device=a.device, dtype=a.dtype)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        pos_weight = torch.tensor(x_clean.shape[0] / x_adv.shape[0], dtype=a.dtype, device=a.device)
        opt = torch.optim.Adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        head.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                perm = torch.randperm(a.shape[0], generator=gen).to(a.device)
                for i in range(0, a.shape[0], self.batch_size):
                    b = perm[i:i + self.batch_size]
                    opt.zero_grad()
                    loss = F.binary_cross_entropy_with_logits(head(a[b]), labels[b], pos_weight=pos_weight)
                    loss.backward()
                    opt.step()
        head.eval().requires_grad_(False)
        log.info("activation detector on %s (%d units): final batch loss %.4f", name, a.shape[1],
                 float(loss.detach()))
        return FittedDetector(model=model, layer=name, head=head, threshold=0.0,
                              input_shape=tuple(x_clean.shape[1:]), method="activation",
                              config=config_repr(self))


# -- classifier with a reject option --------------------------------------------------------------
