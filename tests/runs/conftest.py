"""Small specs for the runs-layer tests: digits, tiny models, few points (seconds per grid)."""

from __future__ import annotations

import pytest

TINY = """
[study]
name = "tiny"

[data.digits]
name = "digits"
n = 60

[models.mlp]
zoo = "mlp"
data = "digits"
epochs = 2

[models.cnn]
zoo = "small-cnn"
data = "digits"
epochs = 1
limit = 400

[[measure]]
kind = "robust"
models = ["mlp", "cnn"]
data = "digits"
attacks = ["fgsm", { name = "pgd", steps = 3 }]
eps = [0.05, 0.2]

[[measure]]
kind = "minimal"
models = ["mlp"]
data = "digits"
norm = "linf"
attacks = [{ name = "deepfool", steps = 20 }]
"""


@pytest.fixture()
def tiny_spec(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
