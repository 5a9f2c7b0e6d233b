"""Tiny deterministic CPU models on scikit-learn's 8x8 digits, shared by the tests.

Built here from plain torch layers (not the zoo) so attack tests do not depend on the models
package. Each model is trained once per session, seeded, in well under a second.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from sklearn.datasets import load_digits
from torch import nn

# Property-test budgets: "ci" (the default, `make test`) runs about 10,000 cases over the registry
# (tests/attacks/test_registry_properties.py: 23 distinct attacks x 450), "long" (`make test-long`) ten
# times that, "dev" a quick look. Chosen with HYPOTHESIS_PROFILE.
_COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=450, **_COMMON)
settings.register_profile("long", max_examples=4500, **_COMMON)
settings.register_profile("dev", max_examples=30, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def digits() -> dict[str, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"x_train": x[:1400], "y_train": y[:1400], "x_test": x[1400:], "y_test": y[1400:]}


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
           lr: float = 1e-2) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


@pytest.fixture(scope="session")
def linear_model(digits) -> nn.Module:
    """Softmax regression: logits = W x + b."""
    m = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), 0)
    return _train(m, digits["x_train"], digits["y_train"], epochs=20, seed=0)


@pytest.fixture(scope="session")
def cnn_model(digits) -> nn.Module:
    m = _seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10)), 1)
    return _train(m, digits["x_train"], digits["y_train"], epochs=8, seed=1, lr=3e-3)


@pytest.fixture(scope="session")
def mlp_model(digits) -> nn.Module:
    m = _seeded(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)), 2)
    return _train(m, digits["x_train"], digits["y_train"], epochs=15, seed=2, lr=3e-3)
