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
