"""Input checks shared by attacks and evaluations: each failure names the problem and the fix.

Nothing here runs the model except :func:`check_logits`, which inspects logits an attack has
already computed (so checking costs no extra forward pass).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class AdvlabWarning(UserWarning):
    """A problem advlab worked around; the message says how to silence it properly."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn(message: str) -> None:
    """Warn with the location of the first caller outside advlab (and contextlib)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE_DIR)
                                 or frame.f_code.co_filename.endswith("contextlib.py")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, AdvlabWarning, stacklevel=level)


NO_GRADIENT = ("the model's output does not depend on its input through autograd (thresholding, "
               "argmax, rounding, a constant, or torch.no_grad inside forward): its input gradient is "
               "zero, so gradient attacks cannot move. Robustness measured this way is gradient "
               "masking; evaluate with a black-box attack (SquareAttack) or BPDA, and run "
               "advlab.evaluation.audit")


def input_grad(out: Tensor, inp: Tensor, *, retain_graph: bool = False) -> Tensor:
    """``∂ out / ∂ inp`` (``out`` a scalar), zeros with a warning where ``out`` does not depend on
    ``inp`` through autograd (a non-differentiable or constant model), instead of torch's
    "appears to not have been used in the graph". The values are torch's own otherwise."""
    if out.requires_grad:
        g, = torch.autograd.grad(out, inp, retain_graph=retain_graph, allow_unused=True)
        if g is not None:
            return g
    warn(NO_GRADIENT)
    return torch.zeros_like(inp)


def shape_error(x: Tensor, err: BaseException) -> ValueError:
    """The error for a model that cannot take ``x`` (a torch RuntimeError from deep inside a
    layer, e.g. mismatched matrix shapes), in the user's terms."""
    return ValueError(f"the model failed on inputs of shape {tuple(x.shape)} ({err}); check that x has "
                      "the (B, ...) shape the model expects (a model trained on other data?)")


def forward(model: Any, x: Tensor) -> Tensor:
    """``model(x)``, with a failure on the input's shape as a :func:`shape_error`."""
    try:
        return model(x)
    except (RuntimeError, IndexError) as err:
        raise shape_error(x, err) from err


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}; "
                        "wrap a scikit-learn estimator or a function with advlab.models wrappers first")
    return model


def model_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def check_batch(x: object, *, bounds: Any) -> Tensor:
    """Validate the inputs of a batch on their own: a floating tensor ``(B, ...)`` with ``B >= 1``,
    finite, inside ``bounds``. No labels and no model (attacks on regressors use this too)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, ...), got {type(x).__name__}; "
                        "convert with torch.as_tensor(x, dtype=torch.float32)")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}; for uint8 images use "
                        "x.float() / 255 and bounds=(0, 1)")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (B, ...); got shape {tuple(x.shape)}. "
                         "For a single input use x.unsqueeze(0)")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (B = 0); pass at least one input")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).flatten(1).any(dim=1).sum())
        raise ValueError(f"x contains NaN or Inf in {bad} of {x.shape[0]} inputs; clean the data first")
    lo, hi = bounds
    if not isinstance(lo, (int, float)):  # per-feature bounds (advlab.threat.PerFeature, or tensors)
        _check_in_feature_box(x, bounds)
        lo = hi = None
    xmin, xmax = float(x.min()), float(x.max())
    if lo is not None and (xmin < lo or xmax > hi):
        raise ValueError(f"x has values in [{xmin:.4g}, {xmax:.4g}], outside the bounds ({lo:g}, {hi:g}); "
                         "rescale the inputs (normalisation belongs inside the model, e.g. "
                         "advlab.models.Normalize) or pass bounds=(lo, hi) to the attack")
    return x


def check_placement(model: nn.Module | None, x: Tensor, *,
                    generator: torch.Generator | None = None) -> None:
    """The model, ``x`` and the generator agree on device (and the model's parameters on dtype);
    advlab never moves anything to make them agree."""
    dev = model_device(model) if model is not None else None
    if dev is not None and dev != x.device:
        raise ValueError(f"model is on {dev} but x is on {x.device}; advlab never moves models or "
                         "tensors: put both on the same device")
    for p in (model.parameters() if model is not None else ()):
        if p.is_floating_point() and p.dtype != x.dtype:
            raise TypeError(f"x is {x.dtype} but the model's parameters are {p.dtype}; "
                            f"use x.to({p.dtype}) or convert the model")
        break
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device} but x is on {x.device}; "
                             f"create it with torch.Generator(device={str(x.device)!r})")


def check_inputs(model: nn.Module | None, x: object, y: object, *, bounds: Any,
                 target: object = None, generator: torch.Generator | None = None) -> None:
    """Validate a batch before an attack touches it: :func:`check_batch`, the labels (and
    targets), then :func:`check_placement`."""
    x = check_batch(x, bounds=bounds)
    _check_labels("y", y, x)
    if target is not None:
        _check_labels("target", target, x)
        same = int((target == y).sum())  # type: ignore[operator]
        if same:
            raise ValueError(f"target equals the true label y for {same} inputs; a targeted attack "
                             "needs target != y (see advlab.attacks.random_targets)")
    check_placement(model, x, generator=generator)


def _check_in_feature_box(x: Tensor, bounds: Any) -> None:
    """``x`` ``(B, *)`` inside per-feature bounds (shaped like one input); the message names the
    first input and feature outside."""
    from advlab.threat import PerFeature, canonical_bounds, check_feature_shape

    lo, hi = bounds if isinstance(bounds[0], PerFeature) else canonical_bounds(bounds)
    check_feature_shape("bounds", lo.shape, tuple(x.shape[1:]))
    lo_t, hi_t = lo.like(x), hi.like(x)
    out = (x < lo_t) | (x > hi_t)
    if bool(out.any()):
        n, i = divmod(int(out.flatten().nonzero()[0]), x[0].numel())
        from advlab.threat import _index_of

        where = _index_of(i, tuple(x.shape[1:]))
        raise ValueError(f"x is outside the per-feature bounds at {int(out.flatten(1).any(1).sum())} of "
                         f"{x.shape[0]} inputs; the first: input {n}, feature {where} is "
                         f"{float(x.flatten(1)[n, i]):.4g}, its bounds are [{float(lo_t.flatten()[i]):.4g}, "
                         f"{float(hi_t.flatten()[i]):.4g}]. Rescale the inputs or pass the bounds they "
                         "live in")


def as_labels(labels: Tensor | None) -> Tensor | None:
    """Checked class indices of any integer dtype as int64 (what torch's losses and ``gather``
    take); the same tensor when it already is."""
    if labels is None or labels.dtype == torch.long:
        return labels
    return labels.long()


def _check_labels(name: str, labels: object, x: Tensor) -> None:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, shape (B,), got "
                        f"{type(labels).__name__}; use torch.as_tensor({name}, dtype=torch.long)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name} must hold integer class indices, got {labels.dtype}; "
                        "pass class indices, not one-hot vectors or scores")
    if tuple(labels.shape) != (x.shape[0],):
        raise ValueError(f"{name} has shape {tuple(labels.shape)} but x has batch size {x.shape[0]}; "
                         f"{name} must have shape ({x.shape[0]},)")
    if labels.device != x.device:
        raise ValueError(f"{name} is on {labels.device} but x is on {x.device}; put them on one device")
    if int(labels.min()) < 0:
        raise ValueError(f"{name} contains negative class indices (min {int(labels.min())})")


def check_logits(logits: Tensor, y: Tensor, target: Tensor | None, *,
                 where: str = "on the clean inputs") -> None:
    """Inspect the first logits an attack computed: shape, finiteness, labels, not probabilities.
    ``where`` names the inputs they were computed on (for the NaN message)."""
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (B, num_classes), got {shape}")
    b, c = logits.shape
    if b != y.shape[0]:
        raise ValueError(f"the model returned {b} rows for a batch of {y.shape[0]} inputs")
    if c < 2:
        raise ValueError(f"the model returns {c} output; a classifier needs at least 2 classes "
                         "(for a binary classifier with one logit z, return torch.cat([-z, z], 1) / 2)")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"the model returned NaN or Inf logits {where}; check the model and its "
                         "input range")
    for name, labels in (("y", y), ("target", target)):
        if labels is not None and int(labels.max()) >= c:
            raise ValueError(f"{name} contains class {int(labels.max())} but the model has {c} "
                             f"classes (0..{c - 1})")
    with torch.no_grad():
        # summed in float64: a bf16 sum rounds 0.9995 to 1.0 (the spacing near 1 is 2^-8), so four random
        # non-negative bf16 logits of one row read as probabilities. In half and bfloat16 a real softmax
        # row sums to 1 only within the rounding of its entries; with one row that is too little to tell.
        low = logits.dtype in (torch.float16, torch.bfloat16)
        atol = c * float(torch.finfo(logits.dtype).eps) if low else 1e-4
        sums = logits.double().sum(dim=1)
        probs_like = (not low or b >= 2) and bool((logits >= 0).all()) and bool(
            torch.allclose(sums, torch.ones_like(sums), atol=atol))
    if probs_like:
        raise ValueError("the model appears to return probabilities (non-negative rows summing to 1), "
                         "not logits; remove the final softmax so gradients do not vanish "
                         "(log-probabilities are fine)")


# -- hyperparameter checks: one spelling of each rule, one message -----------------------------------


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum`` (``bool`` refused); the message names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = True, high_open: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float in the interval ``low..high`` (open or closed at each end).

    ``bool`` and NaN are refused; infinity only with ``allow_inf`` (and ``high = inf``).
    The default is "a finite number > 0".
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        v = float(value)
        ok = ((math.isfinite(v) or (allow_inf and v == math.inf and high == math.inf))
              and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    if not ok:
        if high == math.inf:
            rule = f"{'>' if low_open else '>='} {low:g}"
            kind = "a number" if allow_inf else "a finite number"
            extra = " (math.inf allowed)" if allow_inf else ""
            raise ValueError(f"{name} must be {kind} {rule}{extra}, got {value!r}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``; else an error listing the choices."""
    if not any(value == a and type(value) is type(a) for a in allowed):
        raise ValueError(f"unknown {name} {value!r}: use one of {', '.join(map(repr, allowed))}")
    return value


def norm_field(config: Any, allowed: Sequence[str]) -> str:
    """Canonicalise ``config.norm`` of a frozen config in place and check the attack supports it."""
    from advlab.threat import canonical_norm

    try:
        norm = canonical_norm(config.norm)
    except ValueError:
        raise ValueError(f"unknown norm {config.norm!r}: {type(config).__name__} supports "
                         f"{', '.join(allowed)}") from None
    if norm not in allowed:
        raise ValueError(f"{type(config).__name__} supports norm in {tuple(allowed)}, got {config.norm!r}")
    object.__setattr__(config, "norm", norm)
    return norm


def bounds_field(config: Any) -> tuple[Any, Any]:
    """Canonicalise ``config.bounds`` of a frozen config in place (a box the threat model
    accepts: two floats, or per-feature :class:`advlab.threat.PerFeature` tensors), and its
    ``mask`` and ``categorical`` fields where it has them."""
    from advlab.threat import ThreatModel

    # raises on bad bounds, masks, categorical features
    tm = ThreatModel(norm="l2", eps=math.inf, bounds=config.bounds, mask=getattr(config, "mask", None),
                     categorical=getattr(config, "categorical", None))
    object.__setattr__(config, "bounds", tm.bounds)
    for name in ("mask", "categorical"):
        if hasattr(config, name):
            object.__setattr__(config, name, getattr(tm, name))
    return tm.bounds


# -- train/eval modes ------------------------------------------------------------------------------


@contextlib.contextmanager
def preserve_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's own ``training`` flag on exit (mixed modes included)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t


@contextlib.contextmanager
def quiet_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode without a warning (the caller switched on purpose); every mode restored after."""
    with preserve_modes(model):
        model.eval()
        yield model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the model in eval mode and restore every submodule's own mode afterwards.

    A model left in training mode would use batch statistics and dropout during the attack and
    update its batch-norm running statistics, changing the user's model; we warn and switch.
    """
    with preserve_modes(model):
        if any(m.training for m in model.modules()):
            warn("the model is in training mode; advlab attacks it in eval mode (dropout off, "
                 "batch-norm running statistics frozen) and restores the mode afterwards. "
                 "Call model.eval() first to silence this warning.")
            model.eval()
        yield
