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
