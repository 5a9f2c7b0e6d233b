"""Wrappers that put input preprocessing inside the model.

Attacks work in input space with explicit bounds (``[0, 1]`` for images). A network trained on
standardised inputs is therefore wrapped so that the standardisation is part of the model:
``Normalize(net, mean=..., std=...)(x) == net((x - mean) / std)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize"]


def _as_channel_vector(name: str, value: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Turn a float, a sequence of floats or a 0/1-D tensor into a float32 CPU vector ``(C,)``."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to(device="cpu", dtype=torch.float32).reshape(-1).clone()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        tensor = torch.tensor([float(value)], dtype=torch.float32)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        try:
            tensor = torch.tensor([float(v) for v in value], dtype=torch.float32)
        except (TypeError, ValueError):
            raise TypeError(f"Normalize: {name} must contain numbers, got {value!r}") from None
    else:
        raise TypeError(
            f"Normalize: {name} must be a float, a sequence of floats or a tensor, "
            f"got {type(value).__name__}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"Normalize: {name} is empty; give one value per input channel")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"Normalize: {name} must be finite, got {tensor.tolist()}")
    return tensor


class Normalize(nn.Module):
    """Standardise inputs per channel (per feature of a table), then call the wrapped model.

    ``forward(x) = model((x - mean) / std)`` with ``mean`` and ``std`` of shape ``(C,)`` stored as
    buffers (they follow ``.to(device)`` and appear in the state dict), taken along axis 1 of any
    input: images ``(B, C, H, W)``, signals ``(B, C, T)`` (per channel), tables ``(B, D)`` (per
    feature, ``C = D``) → whatever ``model`` returns, normally logits ``(B, num_classes)``.

    Example::

        net = build("small-cnn", in_shape=(3, 32, 32), num_classes=10)
        model = Normalize(net, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
        logits = model(torch.rand(8, 3, 32, 32))  # inputs in [0, 1]

    Args:
        model: the network that expects standardised inputs.
        mean: per-channel mean; one value per input channel.
        std: per-channel standard deviation; every entry must be > 0.

    Raises:
        ValueError: if ``std`` has an entry <= 0, ``mean`` and ``std`` differ in length, or the
            length disagrees with ``model.in_shape[0]`` when the model declares an ``in_shape``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: float | Sequence[float] | torch.Tensor,
        std: float | Sequence[float] | torch.Tensor,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"Normalize: model must be a torch.nn.Module, got {type(model).__name__}")
        mean_t = _as_channel_vector("mean", mean)
        std_t = _as_channel_vector("std", std)
        if mean_t.numel() != std_t.numel():
            raise ValueError(
                f"Normalize: mean has {mean_t.numel()} channels but std has {std_t.numel()}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"Normalize: every std must be > 0, got {std_t.tolist()}")
        in_shape = getattr(model, "in_shape", None)
        if in_shape is not None and int(in_shape[0]) != mean_t.numel():
            raise ValueError(
                f"Normalize: model expects {int(in_shape[0])} input channels "
                f"(in_shape={tuple(in_shape)}) but mean/std have {mean_t.numel()}"
            )
        self.model = model
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @property
    def num_channels(self) -> int:
        """Number of input channels ``C`` this wrapper standardises."""
        return self.mean.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"Normalize: expected input of shape (B, {self.num_channels}, ...) (an image "
                f"(B, C, H, W), a signal (B, C, T) or a table (B, D)), got {tuple(x.shape)}"
            )
        if x.device != self.mean.device:
            raise ValueError(
                f"Normalize: input is on {x.device} but mean/std are on {self.mean.device}; "
                "move the model or the input so they agree"
            )
        shape = (1, self.num_channels) + (1,) * (x.dim() - 2)  # (1, C, 1, ...)
        mean = self.mean.to(x.dtype).view(shape)
        std = self.std.to(x.dtype).view(shape)
        return self.model((x - mean) / std)

    def extra_repr(self) -> str:
        def fmt(t: torch.Tensor) -> str:
            return "(" + ", ".join(f"{v:.4g}" for v in t.tolist()) + ")"

        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"

