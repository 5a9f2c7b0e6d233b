"""The generator ``g: R^d -> [0, 1]^D`` and the classifiers on its outputs: argument checks, the
device and mode handling, and the margin test every measurement of :mod:`advlab.evaluation.theory`
uses to decide that a label changed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advlab._checks import eval_mode, model_device
from advlab.losses import cw_margin

Generator = Callable[[Tensor], Tensor]


# A point counts as misclassified only when its margin exceeds this fraction of its largest |logit|,
# so that re-evaluating it in another batch (float32 noise ~1e-6 relative) gives the same label.
MARGIN_RTOL = 1e-5


def _module_of(g: Any) -> nn.Module | None:
    if isinstance(g, nn.Module):
        return g
    owner = getattr(g, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _generator_device(g: Generator) -> torch.device:
    module = _module_of(g)
    dev = model_device(module) if module is not None else None
    return dev if dev is not None else torch.device("cpu")


@contextlib.contextmanager
def _frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode for each module (restored afterwards), gradients enabled for the inputs."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            if m is not None:
                stack.enter_context(eval_mode(m))
        stack.enter_context(torch.enable_grad())
        yield


def _check_generator(g: Any, latent_dim: int, device: torch.device) -> tuple[int, ...]:
    """Run ``g`` on two codes; return its sample shape. Raises a ValueError a person can act on."""
    if not callable(g):
        raise TypeError(f"g must be a callable mapping latent codes (B, d) to inputs (B, ...), "
                        f"got {type(g).__name__}")
    z = torch.zeros(2, latent_dim, device=device)
    try:
        with torch.no_grad():
            x = g(z)
    except (RuntimeError, ValueError, IndexError) as err:
        raise ValueError(f"the generator failed on latent codes of shape (2, {latent_dim}) ({err}); "
                         "check latent_dim") from err
    if not isinstance(x, Tensor) or x.dim() < 2 or x.shape[0] != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"the generator must return a batch (B, ...) for codes (B, {latent_dim}), got {shape}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the generator returned NaN or Inf")
    return tuple(x.shape[1:])


def _classifier_shape(f: nn.Module) -> tuple[int, ...] | None:
    for m in (f, getattr(f, "model", None)):
        shape = getattr(m, "in_shape", None)
        if shape is not None:
            return tuple(int(s) for s in shape)
    return None


def _clearly_flipped(logits: Tensor, label: Tensor) -> Tensor:
    """``(B,)`` bool: the predicted class differs from ``label`` by a margin that survives rounding."""
    margin = cw_margin(logits, label)
    return margin > MARGIN_RTOL * logits.detach().abs().amax(dim=1)


def _check_shapes(f: nn.Module, sample_shape: tuple[int, ...], input_shape: Sequence[int] | None,
                  name: str) -> None:
    want = tuple(input_shape) if input_shape is not None else _classifier_shape(f)
    if want is not None and tuple(want) != tuple(sample_shape):
        raise ValueError(f"the generator makes inputs of shape {tuple(sample_shape)} but classifier "
                         f"{name!r} takes {tuple(want)}; use a generator trained on the classifier's data")



def _flat_norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1)

