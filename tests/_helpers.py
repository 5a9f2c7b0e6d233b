"""Assertions shared by tests (imported as a plain module; tests/ is on sys.path)."""

from __future__ import annotations

import torch
from torch import nn


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def snapshot(model: nn.Module) -> dict:
    """Everything an attack must leave untouched on a model."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k



def require_peer(name: str):
    """Import a peer library the parity tests compare against. Missing, it skips the test, except
    where ``ADVLAB_REQUIRE_PEERS`` is set (CI and ``make test`` set it): then a missing peer fails
    loudly instead of silently skipping the bit-for-bit comparisons."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(name)
    except ImportError as err:
        if os.environ.get("ADVLAB_REQUIRE_PEERS"):
            pytest.fail(f"{name} is required here (ADVLAB_REQUIRE_PEERS is set) but cannot be imported: "
                        f"{err}; install it with `pip install --no-deps {name}`", pytrace=False)
        pytest.skip(f"{name} is not installed", allow_module_level=True)


def linear_two_class(d: int = 16, seed: int = 0) -> nn.Module:
    """Two logits whose boundary w·x + b = 0 (w = w_1 - w_0) passes through the box's centre: the
    linear model of the closed-form tests (minimal distances, certified radii)."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        m[1].weight.copy_(torch.randn(2, d, generator=g))
        w = m[1].weight[1] - m[1].weight[0]
        m[1].bias.copy_(torch.tensor([0.0, float(-(w * 0.5).sum())]))
    return m.eval()
