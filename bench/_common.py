"""Provenance helpers shared by the bench scripts (run as ``python bench/<script>.py``, so this
directory is on ``sys.path``): library versions and the code revision of the checkout."""

from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent

DEFAULT_DISTS = ("torch", "advlab", "torchattacks", "adversarial-robustness-toolbox", "numpy")


def versions(dists: Sequence[str] = DEFAULT_DISTS) -> dict[str, str]:
    """``{"python": ..., dist: version or "missing"}``."""
    out = {"python": platform.python_version()}
    for dist in dists:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "missing"
    return out


def git_revision(*, dirty_note: str = "+dirty-src") -> str:
    """Short HEAD, with ``dirty_note`` appended when ``src/`` has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=HERE.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev + (dirty_note if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start(threads: int) -> None:
    """The bench scripts' logging format and torch thread count."""
    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(threads)


def fashion_mnist(n_train: int, n_eval: int):  # -> (x, y, x_eval, y_eval)
    """The first ``n_train`` Fashion-MNIST training images and the first ``n_eval`` test images."""
    from advlab.data import load_dataset

    train_set = load_dataset("fashion-mnist", split="train")
    test_set = load_dataset("fashion-mnist", split="test")
    return (train_set.x[:n_train], train_set.y[:n_train], test_set.x[:n_eval], test_set.y[:n_eval])


def static_models() -> tuple:
    """The cached standard MLP and LeNet-5 (``bench/results``) that ensemble adversarial training
    draws examples from; ``make bench`` trains them first."""
    from advlab.models import load

    return (load(HERE / "results" / "mlp-fashion-mnist-seed0-e2"),
            load(HERE / "results" / "lenet5-fashion-mnist-seed0-e2"))


#: the timing workers' model and batch, as source run in a fresh subprocess: a small CNN with fixed
#: random weights on 28x28 inputs, batch 256 (timing does not depend on accuracy)
SMALL_CNN_BATCH = """
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(32 * 49, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
x = torch.rand(256, 1, 28, 28)
y = torch.randint(0, 10, (256,))
"""
