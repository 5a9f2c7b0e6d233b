"""Small classifiers for images, tables and signals, and the registry that names them.

Six image architectures that differ in kind (fully connected, tanh/average-pool LeNet, ReLU/max-pool
CNN, residual network with BatchNorm, the deep BatchNorm MLP of the VAT paper, and an RBF network whose
output layer is radial-basis units), so that transfer studies between them mean something. Each is a
plain :class:`torch.nn.Module` mapping a batch ``(B, C, H, W)`` to logits ``(B, num_classes)`` and is
built as ``Cls(*, in_shape=(C, H, W), num_classes=K)``; all of them work for ``(1, 8, 8)`` (sklearn
digits), ``(1, 28, 28)`` (MNIST-like) and ``(3, 32, 32)`` (CIFAR-like) inputs. Beside them, a tabular
MLP for ``(B, D)`` (``in_shape=(D,)``) and a 1-D CNN for signals ``(B, C, T)`` (``in_shape=(C, T)``).

The registry :data:`ARCHITECTURES` is data: a name → class mapping, with :func:`build` and
:func:`build_seeded` as the only constructors that look names up. A class's ``OPTIONS`` names the
keyword arguments beyond ``in_shape`` and ``num_classes`` that shape it (``hidden`` widths, ...); each
is kept as an attribute of the same name, so :func:`architecture_options` reads them back and a
checkpoint rebuilds the model as it was built.

Example::

    model = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
    logits = model(torch.rand(4, 1, 28, 28))  # (4, 10)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "MLP",
    "BatchNormMLP",
    "LeNet5",
    "SmallCNN",
    "SmallResNet",
    "RBFNet",
    "TabularMLP",
    "CNN1d",
    "ARCHITECTURES",
    "architecture_options",
    "build",
    "build_seeded",
    "list_architectures",
]


_SHAPE_TEXT = {1: "one integer (D,): the number of features", 2: "two integers (C, T): channels and time steps",
               3: "three integers (C, H, W)"}
_RANK_HINT = {1: "; for images use 'mlp', for signals 'cnn1d'", 2: "; for tables use 'tabular-mlp'",
              3: "; for tables (D,) use 'tabular-mlp', for signals (C, T) 'cnn1d'"}


def _check_shape(
    cls_name: str, in_shape: Sequence[int], num_classes: int, *, min_side: int = 1, rank: int = 3
) -> tuple[int, ...]:
    """Validate constructor arguments shared by every architecture; return ``in_shape`` as a tuple.

    ``rank`` 3 is an image ``(C, H, W)`` (``min_side`` bounds H and W), 2 a signal ``(C, T)``
    (``min_side`` bounds T), 1 a table ``(D,)``.
    """
    if isinstance(in_shape, torch.Size):
        in_shape = tuple(in_shape)
    is_seq = isinstance(in_shape, Sequence) and not isinstance(in_shape, str)
    if (
        not is_seq
        or len(in_shape) != rank
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in in_shape)
    ):
        hint = _RANK_HINT[rank] if is_seq and len(in_shape) in _SHAPE_TEXT and len(in_shape) != rank else ""
        raise ValueError(f"{cls_name}: in_shape must be {_SHAPE_TEXT[rank]}, got {in_shape!r}{hint}")
    dims = tuple(int(d) for d in in_shape)
    if dims[0] < 1:
        what = "features" if rank == 1 else "channels"
        raise ValueError(f"{cls_name}: in_shape {what} must be >= 1, got {in_shape!r}")
    if rank == 3 and (dims[1] < min_side or dims[2] < min_side):
        raise ValueError(
            f"{cls_name}: needs inputs of at least {min_side}x{min_side} pixels, got in_shape={in_shape!r}"
        )
    if rank == 2 and dims[1] < min_side:
        raise ValueError(f"{cls_name}: needs signals of at least {min_side} time steps, got in_shape={in_shape!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"{cls_name}: num_classes must be an integer >= 2, got {num_classes!r}")
    return dims


class MLP(nn.Module):
    """Fully connected classifier: flatten → 256 → 128 → ``num_classes`` with ReLU.

    ``hidden`` sets other widths (``()`` is multinomial logistic regression); checkpoints record
    them. Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``.
    """

    HIDDEN = (256, 128)
    OPTIONS = ("hidden",)

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int,
                 hidden: Sequence[int] = HIDDEN) -> None:
        super().__init__()
        self.in_shape = _check_shape("MLP", in_shape, num_classes)
        self.num_classes = num_classes
        self.hidden = _check_hidden("MLP", hidden)
        c, h, w = self.in_shape
        self.net = _dense(c * h * w, self.hidden, num_classes, act=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, K)


def _check_hidden(cls_name: str, hidden: Sequence[int]) -> tuple[int, ...]:
    """Validate a sequence of hidden widths (possibly empty); return it as a tuple."""
    if (not isinstance(hidden, Sequence) or isinstance(hidden, str)
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden)):
        raise ValueError(f"{cls_name}: hidden must be a sequence of positive ints, got {hidden!r}")
    return tuple(int(h) for h in hidden)


class BatchNormMLP(nn.Module):
    """The fully connected network of Miyato et al.'s VAT experiments on MNIST (TPAMI 2018, Sec. 4):
    flatten → 1200 → 600 → 300 → 150 → ``num_classes``, each hidden layer Linear → BatchNorm → ReLU.

    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``. Batch statistics in training mode, running
    statistics in eval mode (so a sample's logits do not depend on its batch when attacked).
    """

    HIDDEN = (1200, 600, 300, 150)

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.in_shape = _check_shape("BatchNormMLP", in_shape, num_classes)
        self.num_classes = num_classes
        c, h, w = self.in_shape
        self.net = _dense(c * h * w, self.HIDDEN, num_classes, act=nn.ReLU, batchnorm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, K)


def _hidden_layers(width: int, hidden: Sequence[int], *, act: type[nn.Module],
                   batchnorm: bool = False) -> list[nn.Module]:
    """``flatten → (linear → [BatchNorm] → act)`` per hidden width."""
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(width, h), *([nn.BatchNorm1d(h)] if batchnorm else []), act()]
        width = h
    return layers


def _dense(width: int, hidden: Sequence[int], num_classes: int, *, act: type[nn.Module],
           batchnorm: bool = False) -> nn.Sequential:
    """``flatten → (linear → [BatchNorm] → act)`` per hidden width ``→ linear num_classes``."""
    last = hidden[-1] if hidden else width
    return nn.Sequential(*_hidden_layers(width, hidden, act=act, batchnorm=batchnorm),
                         nn.Linear(last, num_classes))


def _conv_blocks(channels: int, widths: Sequence[int], *, kernel: int, act: type[nn.Module],
                 pool: type[nn.Module]) -> nn.Sequential:
    """``(conv → act → pool2)`` per width, "same" padding: halves H and W per block."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(channels, width, kernel_size=kernel, padding=kernel // 2), act(), pool(2)]
        channels = width
    return nn.Sequential(*layers)


class _ConvNet(nn.Module):
    """Two ``conv → act → pool2`` blocks, then a dense head: what LeNet-5 and SmallCNN share."""

    def __init__(self, name: str, *, in_shape: tuple[int, int, int], num_classes: int,
                 widths: tuple[int, int], kernel: int, act: type[nn.Module], pool: type[nn.Module],
                 hidden: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = _check_shape(name, in_shape, num_classes, min_side=4)
        self.num_classes = num_classes
        c, h, w = self.in_shape
        self.features = _conv_blocks(c, widths, kernel=kernel, act=act, pool=pool)
        self.classifier = _dense(widths[-1] * (h // 4) * (w // 4), hidden, num_classes, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, width, H/4, W/4) -> (B, K)


class LeNet5(_ConvNet):
    """LeNet-5 (LeCun et al., 1998) with tanh and average pooling, as in the original.

    conv5(6) → tanh → avgpool2 → conv5(16) → tanh → avgpool2 → fc120 → fc84 → fc ``num_classes``.
    Both convolutions use padding 2, so inputs as small as 4x4 (e.g. 8x8 digits) work.
    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__("LeNet5", in_shape=in_shape, num_classes=num_classes, widths=(6, 16),
                         kernel=5, act=nn.Tanh, pool=nn.AvgPool2d, hidden=(120, 84))


class SmallCNN(_ConvNet):
    """Two-layer ReLU CNN, the demo's main model.

    conv3(32) → ReLU → maxpool2 → conv3(64) → ReLU → maxpool2 → fc128 → ReLU → fc ``num_classes``.
    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__("SmallCNN", in_shape=in_shape, num_classes=num_classes, widths=(32, 64),
                         kernel=3, act=nn.ReLU, pool=nn.MaxPool2d, hidden=(128,))


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers plus an identity or 1x1 projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-8: a 3x3 stem and three basic blocks (16, 32, 64 channels; the last two stride 2).

    BatchNorm throughout, global average pooling, one linear layer (He et al., 2016).
    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``.
    """

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.in_shape = _check_shape("SmallResNet", in_shape, num_classes)
        self.num_classes = num_classes
        c = self.in_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(
            _BasicBlock(16, 16, stride=1),
            _BasicBlock(16, 32, stride=2),
            _BasicBlock(32, 64, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(x))  # (B, 64, H/4, W/4)
        return self.fc(torch.flatten(self.pool(out), 1))  # (B, K)


class RBFNet(nn.Module):
    """A network whose output layer is radial-basis units (Goodfellow, Shlens & Szegedy, ICLR 2015,
    "Explaining and harnessing adversarial examples", Sec. 7).

    The paper's shallow RBF unit is ``p(y = k | x) = exp(−(x − μ_k)ᵀ β_k (x − μ_k))``: confident only
    near its centre ``μ_k``, so it "responds to adversarial inputs with low confidence", but is hard
    to train. Here a feature map ``h = φ(x)`` (flatten → ``(linear → ReLU)`` per ``hidden`` width;
    ``hidden=()`` is the paper's shallow network on the pixels) is followed by one unit per class,
    with a learnable centre ``μ_k`` and a diagonal precision ``β_k = exp(ρ_k) > 0``::

        logit_k(x) = −½ Σ_i β_{k,i} (h_i − μ_{k,i})²          (≤ 0; → −∞ away from μ_k)

    ``exp(logit_k)`` in ``(0, 1]`` is the paper's unit output (:meth:`unit_outputs`); training and
    attacks use the softmax of the logits (cross-entropy), as for every zoo model. There is no bias:
    a per-class bias ``b_k`` would only add a class prior to the softmax (the classes are balanced in
    the data sets used here) and would let ``exp(logit_k)`` exceed 1, losing the reading of a unit's
    output as a confidence that decays to 0 away from its centre.

    Note that the *softmax* of RBF logits does not fade away from the centres: along a ray
    ``h = t·v`` the logit differences grow with ``t``, so the softmax confidence tends to 1 (the
    class with the smallest ``vᵀβ_k v`` wins); only the unit outputs tend to 0.

    The defaults (hidden 256 → 128) give the feature map of :class:`MLP`, so ``MLP(hidden=w)`` is the
    same-size ReLU network with a linear output layer. Centres start uniform in ``[0, 1)`` (inputs and
    ReLU features are non-negative), precisions at ``precision_init`` (on digits, shallow or deep, 1
trains as fast as 4 and faster than 0.1 or 1/D); at that init a logit is about ``−D/12`` for uniform
inputs, so for ``D = 3072`` the unit outputs underflow to 0 in float32 while the logits stay finite.
    Shapes: ``(B, C, H, W)`` → ``(B, num_classes)``.

    Example::

        model = RBFNet(in_shape=(1, 8, 8), num_classes=10, hidden=())  # the paper's shallow RBF
        confidence = model.unit_outputs(x).max(dim=1).values            # (B,), in (0, 1]
    """

    OPTIONS = ("hidden", "precision_init")

    def __init__(self, *, in_shape: tuple[int, int, int], num_classes: int,
                 hidden: Sequence[int] = MLP.HIDDEN, precision_init: float = 1.0) -> None:
        super().__init__()
        self.in_shape = _check_shape("RBFNet", in_shape, num_classes)
        self.num_classes = num_classes
        self.hidden = _check_hidden("RBFNet", hidden)
        if not (isinstance(precision_init, (int, float)) and not isinstance(precision_init, bool)
                and 0 < precision_init < float("inf")):
            raise ValueError(f"RBFNet: precision_init must be a positive number, got {precision_init!r}")
        self.precision_init = float(precision_init)
        c, h, w = self.in_shape
        self.features = nn.Sequential(*_hidden_layers(c * h * w, self.hidden, act=nn.ReLU))
        width = self.hidden[-1] if self.hidden else c * h * w
        self.centres = nn.Parameter(torch.rand(num_classes, width))  # μ, (K, D)
        self.log_precision = nn.Parameter(torch.full((num_classes, width), math.log(precision_init)))  # ρ

    @property
    def precision(self) -> torch.Tensor:
        """``β = exp(ρ)``, ``(K, D)``, positive."""
        return self.log_precision.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, D)
        beta, mu = self.precision, self.centres  # (K, D), (K, D)
        # Σ_i β_ki (h_i − μ_ki)² expanded into matrix products: no (B, K, D) intermediate (half the
        # time of broadcasting, forward and backward, at B=64, D=128). Rounding can leave a sum
        # slightly below 0 at a centre: clamp it (the true gradient there is 0 anyway).
        sq = h.square() @ beta.T - 2.0 * (h @ (beta * mu).T) + (beta * mu.square()).sum(dim=1)
        return -0.5 * sq.clamp(min=0.0)  # (B, K)

    def unit_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's RBF unit outputs ``exp(logit_k)``, ``(B, K)`` in ``(0, 1]``, not normalised."""
        return self.forward(x).exp()


class TabularMLP(nn.Module):
    """Fully connected classifier for a table: ``D`` features → 64 → 64 → ``num_classes`` with ReLU.

    For the small tables of :mod:`advlab.data.tabular` (breast-cancer's 30 features, wine's 13):
    narrower than :class:`MLP`, which is sized for images. ``hidden`` sets other widths (``()`` is
    multinomial logistic regression). Shapes: ``(B, D)`` → ``(B, num_classes)``.

    Example::

        model = build_seeded("tabular-mlp", in_shape=(30,), num_classes=2, seed=0)
        logits = model(torch.rand(8, 30))  # (8, 2)
    """

    HIDDEN = (64, 64)
    OPTIONS = ("hidden",)

    def __init__(self, *, in_shape: tuple[int], num_classes: int, hidden: Sequence[int] = HIDDEN) -> None:
        super().__init__()
        self.in_shape = _check_shape("TabularMLP", in_shape, num_classes, rank=1)
        self.num_classes = num_classes
        self.hidden = _check_hidden("TabularMLP", hidden)
        self.net = _dense(self.in_shape[0], self.hidden, num_classes, act=nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, D) -> (B, K)


class CNN1d(nn.Module):
    """A small 1-D CNN for multichannel signals such as accelerometer and gyroscope recordings.

    conv1d(k) → ReLU → maxpool2 → conv1d(k) → ReLU → maxpool2 → flatten → linear ``num_classes``,
    with ``widths`` filters (default 16, 32), kernel ``kernel`` (default 5) and "same" padding, so
    ``T`` steps become ``T // 4`` (at least 4 steps). The flattened features keep where in time a
    pattern occurs. Shapes: ``(B, C, T)`` → ``(B, num_classes)``.

    Example::

        model = build_seeded("cnn1d", in_shape=(6, 100), num_classes=4, seed=0)  # BasicMotions
        logits = model(torch.rand(8, 6, 100))  # (8, 4)
    """

    WIDTHS = (16, 32)
    OPTIONS = ("widths", "kernel")

    def __init__(self, *, in_shape: tuple[int, int], num_classes: int, widths: Sequence[int] = WIDTHS,
                 kernel: int = 5) -> None:
        super().__init__()
        self.in_shape = _check_shape("CNN1d", in_shape, num_classes, min_side=4, rank=2)
        self.num_classes = num_classes
        self.widths = _check_hidden("CNN1d", widths)
        if len(self.widths) != 2:
            raise ValueError(f"CNN1d: widths must be two positive ints (one per conv layer), got {widths!r}")
        if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"CNN1d: kernel must be an odd positive int (for 'same' padding), got {kernel!r}")
        self.kernel = kernel
        channels, steps = self.in_shape
        layers: list[nn.Module] = []
        for width in self.widths:
            layers += [nn.Conv1d(channels, width, kernel_size=kernel, padding=kernel // 2), nn.ReLU(),
                       nn.MaxPool1d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(self.widths[-1] * (steps // 4), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, C, T) -> (B, width, T/4) -> (B, K)


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "mlp-bn": BatchNormMLP,
    "lenet5": LeNet5,
    "small-cnn": SmallCNN,
    "small-resnet": SmallResNet,
    "rbf": RBFNet,
    "tabular-mlp": TabularMLP,
    "cnn1d": CNN1d,
}
"""Registry of architecture names; :func:`build` and checkpoints look names up here."""


def list_architectures() -> list[str]:
    """Return the registered architecture names, sorted."""
    return sorted(ARCHITECTURES)


def _lookup(name: str) -> type[nn.Module]:
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown architecture {name!r}; valid names: {', '.join(list_architectures())}"
        ) from None


def _check_options(name: str, cls: type[nn.Module], options: dict[str, Any]) -> None:
    allowed = tuple(getattr(cls, "OPTIONS", ()))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
        raise ValueError(f"architecture {name!r}: unknown option(s) {unknown}; it {takes} "
                         "beyond in_shape and num_classes")


def architecture_options(model: nn.Module) -> dict[str, Any]:
    """The options a zoo model was built with (its class's ``OPTIONS``), JSON-ready (tuples as lists).

    ``build(name, in_shape=..., num_classes=..., **architecture_options(model))`` builds a model with
    the same parameter shapes. ``{}`` for an architecture without options.
    """
    out: dict[str, Any] = {}
    for option in getattr(type(model), "OPTIONS", ()):
        value = getattr(model, option)
        out[option] = list(value) if isinstance(value, tuple) else value
    return out


def build(name: str, *, in_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
    """Build the registered architecture ``name`` with freshly initialised weights.

    ``options`` are the architecture's own keyword arguments (its ``OPTIONS``, e.g. ``hidden=(64,)``
    for ``"mlp"``). Initialisation draws from the global torch RNG; use :func:`build_seeded` for a
    reproducible model that leaves the global RNG untouched.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones), an option the
            architecture does not take, or invalid shapes.
    """
    cls = _lookup(name)
    _check_options(name, cls, options)
    return cls(in_shape=in_shape, num_classes=num_classes, **options)


def build_seeded(
    name: str, *, in_shape: tuple[int, ...], num_classes: int, seed: int, **options: Any
) -> nn.Module:
    """Like :func:`build`, with weights initialised from ``seed`` under a forked RNG.

    The same ``seed`` gives the same weights, and the global torch RNG state is the same before and
    after the call.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    cls = _lookup(name)
    _check_options(name, cls, options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(in_shape=in_shape, num_classes=num_classes, **options)
