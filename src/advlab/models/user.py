"""The user's own model: a factory named by its import path, weights from safetensors, and the
device to run on.

Loading a user's code is explicit: they name the factory (``package.module:function``, or
``path/to/file.py:function``), and only that module is imported. Loading weights never runs code:
they are read with safetensors and loaded strictly. Normalisation, when given, goes inside the
model (a :class:`~advlab.models.wrappers.Normalize` in front), so attacks see inputs in their
bounds.

Example::

    from advlab.models.user import UserModel, resolve_device

    spec = UserModel(factory="mypkg.nets:resnet8", weights="resnet8.safetensors",
                     input_shape=(3, 32, 32), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    model, card = spec.load(device=resolve_device("auto"))
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from advlab.models.checkpoint import ModelCard

#: what ``--device`` accepts
DEVICES = "cpu, cuda, cuda:N, mps or auto"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The ``torch.device`` for a ``--device`` value: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or
    ``auto`` (CUDA if there is one, else CPU). A device that is not there is a ``ValueError``
    saying what this machine has, not a torch assertion at the first tensor."""
    if isinstance(name, torch.device):
        text = str(name)
    else:
        text = (name or "cpu").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}: use {DEVICES}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {text}: this machine has no CUDA device (torch {torch.__version__}, "
                             "torch.cuda.is_available() is False); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"--device {text}: MPS is not available on this machine; use --device cpu")
        return device
    raise ValueError(f"unsupported device {name!r}: use {DEVICES}")


def import_factory(path: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:attr"`` (``attr`` may be dotted: ``Class.build``)
    or ``"file.py:attr"``. Only that module is imported; errors name the path and what is wrong."""
    if not isinstance(path, str) or path.count(":") < 1:
        raise ValueError(f"a model factory is 'module.path:callable' or 'file.py:callable', got {path!r}")
    module_name, _, attr = path.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"a model factory is 'module.path:callable' or 'file.py:callable', got {path!r}")
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        file = Path(module_name)
        if not file.is_file():
            raise FileNotFoundError(f"model factory {path!r}: no such file {file}")
        unique = f"advlab_user_model_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(unique, file)
        if spec is None or spec.loader is None:
            raise ValueError(f"model factory {path!r}: {file} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(unique, None)
            raise ValueError(f"model factory {path!r}: importing {file} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ValueError(f"model factory {path!r}: cannot import {module_name!r} ({exc}); is it "
                             "installed, or on PYTHONPATH?") from None
        except Exception as exc:
            raise ValueError(f"model factory {path!r}: importing {module_name!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ValueError(f"model factory {path!r}: {module_name} has no {attr!r}"
                             + (f"; callables there: {', '.join(names[:12])}" if names else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model factory {path!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def _tuple(name: str, values: Sequence[float] | None) -> tuple[float, ...] | None:
    if values is None:
        return None
    out = tuple(float(v) for v in values)
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return out


@dataclass(frozen=True)
class UserModel:
    """A model the user brings: ``factory()`` returns an ``nn.Module`` that maps inputs of
    ``input_shape`` to logits.

    Attributes:
        factory: ``"package.module:callable"`` or ``"path/file.py:callable"``, called with no
            arguments.
        weights: a ``.safetensors`` state dict for the factory's model (loaded strictly), or None
            to keep the factory's own weights.
        input_shape: one input's shape, e.g. ``(3, 32, 32)``; ``None`` takes the data's.
        num_classes: the number of logits; ``None`` reads it off one forward pass.
        mean, std: per-channel normalisation to put inside the model (inputs stay in ``bounds``).
        bounds: the input box the model takes (attacks keep every point in it).
        dataset: the data the model is evaluated on (a ``--data`` name), for reports.
        class_names: one name per class, or None.
    """

    factory: str
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)
    dataset: str | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.input_shape is not None:
            shape = tuple(self.input_shape)
            if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
                raise ValueError(f"input_shape must be positive integers, got {self.input_shape!r}")
            object.__setattr__(self, "input_shape", shape)
        if self.num_classes is not None and (isinstance(self.num_classes, bool) or not isinstance(
                self.num_classes, int) or self.num_classes < 2):
            raise ValueError(f"num_classes must be an integer >= 2, got {self.num_classes!r}")
        mean, std = _tuple("mean", self.mean), _tuple("std", self.std)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        lo, hi = (float(b) for b in self.bounds)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds must be finite with low < high, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (lo, hi))

    @property
    def name(self) -> str:
        """How reports name the model: the factory's last component."""
        return self.factory.rpartition(":")[2]

    def load(self, *, device: torch.device | str = "cpu",
             input_shape: Sequence[int] | None = None) -> tuple[nn.Module, ModelCard]:
        """Build, load the weights, normalise, check with one forward pass, move to ``device``;
        return the model in eval mode and a card describing it (architecture ``user:<factory>``).

        ``input_shape`` (e.g. the data's) is used when the spec gives none; they must agree."""
        device = resolve_device(device) if isinstance(device, str) else device
        shape = self.input_shape or (tuple(input_shape) if input_shape is not None else None)
        if shape is None:
            raise ValueError(f"model {self.factory!r}: give its input shape (--input-shape C,H,W)")
        if self.input_shape is not None and input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(f"model {self.factory!r} takes inputs {self.input_shape} but the data has "
                             f"{tuple(input_shape)}")
        factory = import_factory(self.factory)
        try:
            # a factory's layers draw their initial weights from the global RNG: loading a model
            # must not change the caller's random stream
            with torch.random.fork_rng(devices=[]):
                model = factory()
        except Exception as exc:
            raise ValueError(f"model factory {self.factory!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ValueError(f"model factory {self.factory!r} returned a {type(model).__name__}, not a "
                             "torch.nn.Module")
        if self.weights is not None:
            _load_weights(model, self.weights, self.factory)
        if self.mean is not None and self.std is not None:
            if len(self.mean) != shape[0] or len(self.std) != shape[0]:
                raise ValueError(f"mean and std need {shape[0]} values (one per input channel), got "
                                 f"{len(self.mean)} and {len(self.std)}")
            from advlab.models.wrappers import Normalize

            model = Normalize(model, mean=self.mean, std=self.std)
        model = model.to(device).eval()
        num_classes = self._check_forward(model, shape, device)
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model with {num_classes} logits")
        card_shape = shape if len(shape) == 3 else None
        if card_shape is None:
            raise ValueError(f"model {self.factory!r}: inputs of shape {shape} are not images (C, H, W); "
                             "only image models are supported by the commands so far")
        card = ModelCard(architecture=f"user:{self.factory}", in_shape=card_shape, num_classes=num_classes,
                         mean=self.mean, std=self.std, dataset=self.dataset, class_names=self.class_names,
                         training={"weights": str(self.weights) if self.weights else None,
                                   "bounds": list(self.bounds)})
        return model, card

    def _check_forward(self, model: nn.Module, shape: tuple[int, ...], device: torch.device) -> int:
        """One forward pass on two points in the box: logits of shape (2, K), finite, not
        probabilities (rows summing to one); returns K."""
        lo, hi = self.bounds
        probe = torch.linspace(0.25, 0.75, 2, device=device).view(2, *([1] * len(shape))).expand(2, *shape)
        probe = (lo + (hi - lo) * probe).contiguous()
        try:
            with torch.no_grad():
                out = model(probe)
        except Exception as exc:
            raise ValueError(f"model {self.factory!r} fails on inputs of shape {shape}: "
                             f"{type(exc).__name__}: {exc}") from None
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model {self.factory!r} must return logits of shape (batch, classes); for a "
                             f"batch of 2 it returned {got}")
        k = int(out.shape[1])
        if self.num_classes is not None and k != self.num_classes:
            raise ValueError(f"model {self.factory!r} returns {k} logits but --classes says {self.num_classes}")
        if k < 2:
            raise ValueError(f"model {self.factory!r} returns {k} logit(s); a classifier needs >= 2")
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"model {self.factory!r} returns non-finite logits on inputs in its bounds")
        return k


def _load_weights(model: nn.Module, weights: str, factory: str) -> None:
    """Load a safetensors state dict strictly; mismatches are named, nothing is executed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(weights)
    if path.suffix != ".safetensors":
        raise ValueError(f"--weights {path}: advlab loads weights from .safetensors only (never pickle); "
                         "convert with safetensors.torch.save_file(model.state_dict(), 'model.safetensors')")
    if not path.is_file():
        raise FileNotFoundError(f"--weights {path}: no such file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"--weights {path} is not a readable safetensors file: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f"{k}: file {found[k]} vs model {expected[k]}" for k in sorted(set(found) & set(expected))
                  if found[k] != expected[k]]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""))
        if mismatched:
            parts.append("shape mismatch " + "; ".join(mismatched[:5]))
        raise ValueError(f"--weights {path} do not fit the model of {factory!r}: " + ", ".join(parts))
    model.load_state_dict(state, strict=True)
