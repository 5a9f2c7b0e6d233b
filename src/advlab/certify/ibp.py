"""Interval bound propagation: a verified lower bound on the L∞ robustness radius.

Gowal, Dvijotham, Stanforth, Bunel, Qin, Uesato, Arandjelović, Mann & Kohli, "On the Effectiveness
of Interval Bound Propagation for Training Verifiably Robust Models" (2018), Sec. 3.

An input box ``[lo, hi]`` (per coordinate) is pushed through the network layer by layer, each layer
mapping a box to a box that contains its image:

* affine layers (``Linear``, ``Conv1d``, ``Conv2d``, eval-mode ``BatchNorm``) in the center/radius form
  ``μ = (hi + lo)/2``, ``r = (hi − lo)/2``: ``μ' = Wμ + b``, ``r' = |W| r`` (Eq. 6);
* monotone non-decreasing layers (``ReLU``, ``LeakyReLU`` with slope ≥ 0, ``Tanh``, ``Sigmoid``,
  max and average pools in 1-D and 2-D and their adaptive forms, advlab's :class:`~advlab.models.Normalize`)
  on both ends: ``[h(lo), h(hi)]`` (Eq. 7);
* shape-only and identity layers (``Flatten``, ``Identity``, ``Dropout`` in eval mode) on both ends.

A point ``x`` with label ``y`` is **verified** at ε when, on the box
``[max(x − ε, lo_x), min(x + ε, hi_x)]`` (``(lo_x, hi_x)`` the input bounds), the lower bound of
``z_y − z_j`` is positive for every ``j ≠ y``. With a final ``Linear`` layer ``z = W h + b`` the
bound is taken on the *elided* specification ``(w_y − w_j)·h + (b_y − b_j)`` from the box of the
penultimate activations ``h`` (Sec. 3, "elision of the last layer"), which is never looser than
``lo(z_y) − hi(z_j)``. Every output of the network on the box is then classified ``y``: no attack
can succeed within ε. The bounds hold in exact arithmetic; in floating point they hold up to the
rounding of the forward pass (about 1e-6 relative in float32), as in every IBP implementation.

Which models can be walked
--------------------------
The model is flattened into a chain of layers by these rules, applied recursively:

1. ``nn.Sequential``: its children in order;
2. :class:`~advlab.models.Normalize`: the standardisation ``(x − mean)/std`` (monotone, ``std > 0``),
   then the wrapped model;
3. advlab's zoo: ``MLP``, ``BatchNormMLP`` and ``TabularMLP`` are ``net``; ``SmallCNN``, ``LeNet5``
   and the signal model ``CNN1d`` are ``features`` then ``classifier``; ``SmallResNet`` has residual
   connections and is refused (so inputs may be images, tables ``(B, D)`` or signals ``(B, C, T)``);
4. any other module whose ``forward(x)`` is a *plain chain of its children*: traced with
   :mod:`torch.fx` with each direct child as a leaf, the graph must be one input, then only
   ``self.child(previous)`` calls (a child may be called more than once), then the output. A
   forward with any other operation (``x + ...``, ``torch.relu(x)``, a reshape, a second input, a
   branch on the data) is refused.

Anything else (``nn.LSTM``, attention, a custom op) is a ``ValueError`` that names the layer by its
qualified name and type and lists the supported layers.

Example::

    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0)
    lo, hi = interval_bounds(model, (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1))  # (B, 10) each
    radius = verified_radius(model, x, y)            # (B,) certified L∞ radii
    verified_accuracy(model, x, y, eps=0.05)         # fraction of the B points verified at 0.05
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import as_labels, check_inputs, check_logits, check_model, check_number, eval_mode, model_device
from advlab.models.wrappers import Normalize
from advlab.models.zoo import CNN1d, MLP, BatchNormMLP, LeNet5, SmallCNN, SmallResNet, TabularMLP, _ConvNet

__all__ = ["interval_bounds", "verified_margin", "verified_radius", "verified_accuracy", "SUPPORTED_LAYERS"]

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)
_MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_PASS = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_LEAVES = (*_AFFINE, *_MONOTONE, *_PASS, Normalize)

#: The layer types :func:`interval_bounds` propagates a box through (containers aside).
SUPPORTED_LAYERS: tuple[str, ...] = tuple(t.__name__ for t in _LEAVES)

_SUPPORTED_TEXT = (f"supported layers: {', '.join(SUPPORTED_LAYERS)}, inside nn.Sequential, advlab's "
                   "MLP/BatchNormMLP/SmallCNN/LeNet5, or a module whose forward is a plain chain of its "
                   "children (see advlab.certify.ibp)")


@dataclass(frozen=True)
class _Step:
    name: str  # qualified name in the model ("" for the model itself)
    module: nn.Module


def _where(name: str, module: nn.Module) -> str:
    return f"layer {name!r} ({type(module).__name__})" if name else f"the model ({type(module).__name__})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _unsupported(name: str, module: nn.Module, why: str) -> ValueError:
    return ValueError(f"interval_bounds: {_where(name, module)} is not supported: {why}; {_SUPPORTED_TEXT}")


class _ChildTracer(torch.fx.Tracer):
    """Traces a module's own forward with every direct child kept as a leaf call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return "." not in module_qualified_name


def _plain_chain(module: nn.Module, name: str) -> list[str]:
    """The child names a module's forward calls one after the other, or a ValueError."""
    try:
        graph = _ChildTracer().trace(module)
    except Exception as exc:  # user code under tracing can raise anything
        raise _unsupported(name, module, f"its forward could not be traced as a chain of its children "
                                         f"({type(exc).__name__}: {exc})") from None
    nodes = list(graph.nodes)
    if len(nodes) < 2 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        raise _unsupported(name, module, "its forward is not a plain chain of its children")
    if nodes[1].op == "placeholder":
        raise _unsupported(name, module, "its forward takes more than one input")
    calls: list[str] = []
    prev = nodes[0]
    for node in nodes[1:-1]:
        if node.op != "call_module" or node.args != (prev,) or node.kwargs:
            what = f"{node.op} {node.target}" if node.op != "call_module" else f"a call of {node.target!r} on other inputs"
            raise _unsupported(name, module, f"its forward is not a plain chain of its children (it has {what})")
        calls.append(str(node.target))
        prev = node
    if nodes[-1].args != (prev,):
        raise _unsupported(name, module, "its forward does not return the last child's output")
    if not calls:
        raise _unsupported(name, module, "its forward calls none of its children")
    return calls


def _own_forward(module: nn.Module, base: type[nn.Module]) -> bool:
    """Whether ``module`` computes what ``base`` computes (a subclass may override ``forward``)."""
    return type(module).forward is base.forward


def _chain(module: nn.Module, name: str = "") -> list[_Step]:
    """Flatten ``module`` into the chain of leaf layers its forward applies (rules in the module doc)."""
    if isinstance(module, Normalize) and _own_forward(module, Normalize):
        return [_Step(name, module), *_chain(module.model, _join(name, "model"))]
    if isinstance(module, _LEAVES) and any(isinstance(module, t) and _own_forward(module, t) for t in _LEAVES):
        return [_Step(name, module)]
    if isinstance(module, nn.Sequential) and _own_forward(module, nn.Sequential):
        return [s for child_name, child in module.named_children() for s in _chain(child, _join(name, child_name))]
    if isinstance(module, SmallResNet):
        raise _unsupported(name, module, "it has residual connections (out + shortcut(x)), which this "
                                         "interval bound propagation does not follow")
    if type(module) in (MLP, BatchNormMLP, TabularMLP):
        return _chain(module.net, _join(name, "net"))  # type: ignore[arg-type]
    if type(module) in (SmallCNN, LeNet5, CNN1d) or type(module) is _ConvNet:
        return [*_chain(module.features, _join(name, "features")),  # type: ignore[arg-type]
                *_chain(module.classifier, _join(name, "classifier"))]  # type: ignore[arg-type]
    if type(module).__module__.startswith("torch.nn"):  # a torch layer we do not bound (LSTM, ...)
        raise _unsupported(name, module, "no interval rule for this layer type")
    children = dict(module.named_children())
    return [s for child in _plain_chain(module, name) for s in _chain(children[child], _join(name, child))]


# ----------------------------------------------------------------------------- one layer


def _affine(mu: Tensor, r: Tensor, f, f_abs) -> tuple[Tensor, Tensor]:
    mu, r = f(mu), f_abs(r)
    return mu - r, mu + r


def _bn_scale_shift(m: nn.modules.batchnorm._BatchNorm, like: Tensor) -> tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``scale·x + shift`` per channel, shaped to broadcast on ``like``."""
    if m.running_mean is None or m.running_var is None:
        raise ValueError("no running statistics")
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale
    if m.bias is not None:
        shift = shift + m.bias
    shape = (1, -1, *([1] * (like.dim() - 2)))
    return scale.to(like.dtype).view(shape), shift.to(like.dtype).view(shape)


def _layer(step: _Step, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    m = step.module
    if isinstance(m, nn.Linear):
        return _affine((hi + lo) / 2, (hi - lo) / 2, lambda t: F.linear(t, m.weight, m.bias),
                       lambda t: F.linear(t, m.weight.abs()))
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _affine((hi + lo) / 2, (hi - lo) / 2, lambda t: m._conv_forward(t, m.weight, m.bias),
                       lambda t: m._conv_forward(t, m.weight.abs(), None))
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_mean is None:
            raise _unsupported(step.name, m, "it has no running statistics (track_running_stats=False), "
                                             "so in eval mode it still normalises by batch statistics")
        if lo.dim() < 2 or lo.shape[1] != m.num_features:
            raise ValueError(f"expects {m.num_features} channels in dim 1")
        scale, shift = _bn_scale_shift(m, lo)
        mu, r = (hi + lo) / 2, (hi - lo) / 2
        mu, r = scale * mu + shift, scale.abs() * r
        return mu - r, mu + r
    if isinstance(m, Normalize):
        if lo.dim() < 2 or lo.shape[1] != m.num_channels:
            raise ValueError(f"expects inputs of shape (B, {m.num_channels}, ...)")
        shape = (1, m.num_channels) + (1,) * (lo.dim() - 2)
        mean = m.mean.to(lo.dtype).view(shape)
        std = m.std.to(lo.dtype).view(shape)
        return (lo - mean) / std, (hi - mean) / std
    if isinstance(m, nn.ReLU):
        return lo.clamp_min(0), hi.clamp_min(0)
    if isinstance(m, nn.LeakyReLU):
        if m.negative_slope < 0:
            raise _unsupported(step.name, m, f"negative_slope={m.negative_slope} < 0 is not monotone")
        return F.leaky_relu(lo, m.negative_slope), F.leaky_relu(hi, m.negative_slope)
    if isinstance(m, nn.Tanh):
        return torch.tanh(lo), torch.tanh(hi)
    if isinstance(m, nn.Sigmoid):
        return torch.sigmoid(lo), torch.sigmoid(hi)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)) and m.return_indices:
        raise _unsupported(step.name, m, "return_indices=True returns a tuple, not a tensor")
    if isinstance(m, (*_MONOTONE, nn.Flatten)):  # pools (monotone in every input) and flatten
        return m(lo), m(hi)
    if isinstance(m, _PASS):  # Identity, and Dropout in eval mode
        return lo, hi
    raise _unsupported(step.name, m, "no interval rule for this layer type")  # unreachable via _chain


def _propagate(chain: list[_Step], lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    given = tuple(lo.shape)
    for step in chain:
        try:
            lo, hi = _layer(step, lo, hi)
        except ValueError as exc:
            if str(exc).startswith("interval_bounds:"):
                raise
            raise ValueError(f"interval_bounds: {_where(step.name, step.module)} got a box of shape "
                             f"{tuple(lo.shape)}: {exc}") from None
        except RuntimeError as exc:  # a shape the layer cannot take
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"interval_bounds: {_where(step.name, step.module)} cannot take a box of "
                             f"shape {tuple(lo.shape)} ({first}); the input box has shape {given}: "
                             "check it against the model's input shape") from None
    return lo, hi


# ----------------------------------------------------------------------------- checks


def _check_box(model: nn.Module, lo: object, hi: object) -> None:
    for name, t in (("lo", lo), ("hi", hi)):
        if not isinstance(t, Tensor):
            raise TypeError(f"interval_bounds: {name} must be a torch.Tensor of shape (B, ...), got "
                            f"{type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"interval_bounds: {name} must be a floating-point tensor, got {t.dtype}")
    assert isinstance(lo, Tensor) and isinstance(hi, Tensor)
    if lo.shape != hi.shape:
        raise ValueError(f"interval_bounds: lo has shape {tuple(lo.shape)} but hi has shape "
                         f"{tuple(hi.shape)}; give both ends of the box with the shape of the input batch")
    if lo.dim() < 2 or lo.shape[0] == 0:
        raise ValueError(f"interval_bounds: the box must be a non-empty batch of shape (B, ...), got "
                         f"shape {tuple(lo.shape)}; for a single input use lo.unsqueeze(0)")
    if lo.dtype != hi.dtype or lo.device != hi.device:
        raise ValueError(f"interval_bounds: lo is {lo.dtype} on {lo.device} but hi is {hi.dtype} on "
                         f"{hi.device}; give both in one dtype on one device")
    if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
        raise ValueError("interval_bounds: lo and hi must be finite (no NaN or Inf)")
    bad = lo > hi
    if bool(bad.any()):
        worst = float((lo - hi).max())
        raise ValueError(f"interval_bounds: lo > hi in {int(bad.sum())} of {lo.numel()} coordinates "
                         f"(by up to {worst:.4g}); the box needs lo <= hi everywhere")
    dev = model_device(model)
    if dev is not None and dev != lo.device:
        raise ValueError(f"interval_bounds: model is on {dev} but the box is on {lo.device}; advlab "
                         "never moves models or tensors: put both on the same device")
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != lo.dtype:
            raise TypeError(f"interval_bounds: the box is {lo.dtype} but the model's parameters are "
                            f"{p.dtype}; convert one of them")
        break


def _check_logit_box(z_lo: Tensor, name: str = "the model") -> None:
    if z_lo.dim() != 2 or z_lo.shape[1] < 2:
        raise ValueError(f"interval_bounds: {name} must end in logits of shape (B, num_classes), the "
                         f"propagated box has shape {tuple(z_lo.shape)}")


# ----------------------------------------------------------------------------- public API


def interval_bounds(model: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds on the model's outputs over the input box ``[lo, hi]``, by interval bound propagation.

    Gowal et al. 2018, Eq. 6-7: per layer ``μ' = Wμ + b, r' = |W| r`` for affine layers (center
    ``μ = (hi + lo)/2``, radius ``r = (hi − lo)/2``) and ``[h(lo), h(hi)]`` for monotone ones. Every
    output ``model(x')`` with ``lo ≤ x' ≤ hi`` lies in the returned ``[z_lo, z_hi]`` (up to float
    rounding); for a purely affine model the bounds are the exact minimum and maximum over the box.

    The bounds are those of the model in eval mode (BatchNorm from its running statistics, dropout
    off), whatever its ``training`` flag; the model is not run and nothing of it changes. Gradients
    flow through the bounds to the parameters (IBP training, :class:`advlab.defenses.IBPTraining`).

    Args:
        model: a chain of supported layers (see the module docstring for the rule).
        lo, hi: ``(B, *)`` the ends of the box, the shape of an input batch, ``lo <= hi``.

    Returns:
        ``(z_lo, z_hi)``, each of the model's output shape, e.g. ``(B, num_classes)``.

    Raises:
        ValueError: a layer that cannot be bounded (named, with its type), ``lo > hi`` anywhere,
            ``lo`` and ``hi`` of different shapes, or a box shape a layer cannot take.
        TypeError: non-tensor or non-floating box, or a dtype other than the model's.
    """
    check_model(model)
    _check_box(model, lo, hi)
    return _propagate(_chain(model), lo, hi)


def _box(x: Tensor, eps: Tensor, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    e = eps.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))  # (B, 1, ...)
    return (x - e).clamp(min=bounds[0]), (x + e).clamp(max=bounds[1])


def _margin_lower(chain: list[_Step], lo: Tensor, hi: Tensor, y: Tensor, *, elide: bool) -> Tensor:
    """``(B, K)`` lower bounds on ``z_y − z_j`` over the box; the entry ``j = y`` is 0."""
    last = chain[-1].module
    if elide and isinstance(last, nn.Linear):
        h_lo, h_hi = _propagate(chain[:-1], lo, hi)
        if h_lo.dim() != 2:
            raise ValueError(f"interval_bounds: the last layer {chain[-1].name!r} (Linear) gets a box of "
                             f"shape {tuple(h_lo.shape)}; logits of shape (B, num_classes) need (B, D)")
        try:
            mu, r = (h_hi + h_lo) / 2, (h_hi - h_lo) / 2  # (B, D)
            w, b = last.weight, last.bias  # (K, D), (K,)
            c = w[y][:, None, :] - w[None]  # (B, K, D): rows w_y - w_j
            lower = torch.einsum("bkd,bd->bk", c, mu) - torch.einsum("bkd,bd->bk", c.abs(), r)
        except RuntimeError as exc:
            raise ValueError(f"interval_bounds: {_where(chain[-1].name, last)} cannot take a box of shape "
                             f"{tuple(h_lo.shape)} ({str(exc).splitlines()[0]})") from None
        if b is not None:
            lower = lower + (b[y][:, None] - b[None])
    else:
        z_lo, z_hi = _propagate(chain, lo, hi)
        _check_logit_box(z_lo)
        lower = z_lo.gather(1, y[:, None]) - z_hi  # (B, K)
    _check_logit_box(lower)
    return lower.scatter(1, y[:, None], 0.0)


def _ibp_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float | Tensor, *,
                 bounds: tuple[float, float] = (0.0, 1.0), elide: bool = True) -> Tensor:
    """``(B, K)`` IBP lower bounds on ``z_y − z_j`` over the ε-box of each point (0 at ``j = y``),
    differentiable, without validation (what :class:`advlab.defenses.IBPTraining` calls per batch).
    ``eps`` a float or a per-point ``(B,)`` tensor."""
    eps_t = eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), float(eps), device=x.device)
    lo, hi = _box(x, eps_t, bounds)
    return _margin_lower(_chain(model), lo, hi, y, elide=elide)


def _check_call(model: nn.Module, x: Tensor, y: Tensor, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Validate, then ``(y as int64, correct (B,) bool)`` from one clean eval-mode pass."""
    check_model(model)
    check_inputs(model, x, y, bounds=bounds)
    y = as_labels(y)  # type: ignore[assignment]
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    check_logits(logits, y, None)
    return y, logits.argmax(1) == y


def _check_bounds(bounds: object) -> tuple[float, float]:
    from advlab.threat import ThreatModel

    return ThreatModel(norm="linf", eps=math.inf, bounds=bounds).bounds  # type: ignore[arg-type]


def _margin_and_correct(model: nn.Module, x: Tensor, y: Tensor, eps: float, bounds: object,
                        elide: bool) -> tuple[Tensor, Tensor]:
    bounds = _check_bounds(bounds)
    check_number("eps", eps, low_open=False)
    y, correct = _check_call(model, x, y, bounds)
    with torch.no_grad():
        lower = _ibp_margins(model, x, y, eps, bounds=bounds, elide=elide)
    return lower.scatter(1, y[:, None], math.inf).amin(1), correct


def verified_margin(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                    bounds: tuple[float, float] = (0.0, 1.0), elide: bool = True) -> Tensor:
    """``(B,)`` the IBP lower bound of ``min_{j≠y} (z_y − z_j)`` over the box
    ``[max(x − ε, lo), min(x + ε, hi)]``; the point is verified at ε where it is ``> 0``.

    ``elide`` (default) bounds ``(w_y − w_j)·h + (b_y − b_j)`` from the penultimate box when the last
    layer is ``Linear`` (Gowal et al. 2018, Sec. 3); ``elide=False`` uses ``lo(z_y) − hi(z_j)``.
    No gradients; the model runs in eval mode (a warning if it was training), every mode restored.
    """
    return _margin_and_correct(model, x, y, eps, bounds, elide)[0]


def verified_radius(model: nn.Module, x: Tensor, y: Tensor, *, bounds: tuple[float, float] = (0.0, 1.0),
                    eps_max: float = 0.5, tol: float = 1e-3, elide: bool = True) -> Tensor:
    """``(B,)`` per point, the largest L∞ radius ε ≤ ``eps_max`` that IBP verifies, to within ``tol``.

    Bisection on ε over ``[0, eps_max]`` (``⌈log2(eps_max/tol)⌉`` IBP passes for the whole batch):
    the returned ε is one at which :func:`verified_margin` was checked to be ``> 0``, so no input in
    ``[max(x − ε, lo), min(x + ε, hi)]`` is classified other than ``y``, and the true verified radius
    is below ε + ``tol`` (IBP bounds grow with the box). A misclassified point gets 0; a point
    verified at ``eps_max`` gets ``eps_max``.

    No gradients; the model runs in eval mode (with a warning if it was training) and every
    submodule's mode is restored; nothing given is changed.

    Example:
        >>> r = verified_radius(model, x, y, eps_max=0.3)
        >>> (r >= 0.05).float().mean()  # verified accuracy at 0.05 (to the bisection's tolerance)
    """
    bounds = _check_bounds(bounds)
    check_number("eps_max", eps_max)
    check_number("tol", tol)
    y, correct = _check_call(model, x, y, bounds)
    chain = _chain(model)

    def verified(eps: Tensor) -> Tensor:
        lo, hi = _box(x, eps, bounds)
        lower = _margin_lower(chain, lo, hi, y, elide=elide).scatter(1, y[:, None], math.inf)
        return lower.amin(1) > 0

    with torch.no_grad():
        low = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)  # verified (or 0)
        high = torch.full_like(low, float(eps_max))  # not verified (unless at eps_max)
        at_max = verified(high)
        low = torch.where(at_max, high, low)
        for _ in range(max(0, math.ceil(math.log2(eps_max / tol)))):
            mid = (low + high) / 2
            ok = verified(mid)
            low, high = torch.where(ok, mid, low), torch.where(ok, high, mid)
    return torch.where(correct, low, torch.zeros_like(low)).to(x.dtype)


def verified_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, *,
                      bounds: tuple[float, float] = (0.0, 1.0), elide: bool = True) -> float:
    """Fraction of **all** ``B`` points (the denominator) that are correctly classified and verified
    by IBP at ε: ``mean(f(x) = y and verified_margin(model, x, y, ε) > 0)``.

    A lower bound on the robust accuracy against any L∞ attack of radius ε within ``bounds``.
    """
    margin, correct = _margin_and_correct(model, x, y, eps, bounds, elide)
    return float(((margin > 0) & correct).float().mean())
