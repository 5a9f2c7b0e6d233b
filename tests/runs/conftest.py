"""Small specs for the runs-layer tests: digits, tiny models, few points (seconds per grid)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# 60 digits and two tiny models: the head of the specs here (a study name goes above it)
DIGITS_MODELS = """
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
"""

TINY = """
[study]
name = "tiny"
""" + DIGITS_MODELS + """
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


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """The tiny spec run once, uninterrupted, through the CLI: (spec path, store path)."""
    root = tmp_path_factory.mktemp("grid")
    spec = root / "tiny.toml"
    spec.write_text(TINY)
    db = root / "runs.db"
    done = subprocess.run([sys.executable, "-m", "advlab", "run", str(spec), "--store", str(db), "--no-progress"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr
    return spec, db
