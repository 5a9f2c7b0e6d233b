"""#11: packaging a newcomer expects: a LICENSE, ``py.typed``, one version, ``python -m advlab``,
and CLI runs that keep their speed on a shared machine (OMP_WAIT_POLICY=PASSIVE by default)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import advlab

ROOT = Path(__file__).resolve().parents[1]


def test_license_type_marker_and_one_version():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (Path(advlab.__file__).parent / "py.typed").exists()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]   # advlab.__version__ only


def test_python_dash_m_advlab_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "advlab", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"advlab {advlab.__version__}"


def test_the_cli_waits_passively_unless_the_user_says_otherwise():
    code = ("import os, sys; from advlab.cli import main; main(['list']); "
            "print(os.environ['OMP_WAIT_POLICY'], file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stderr.strip().endswith("PASSIVE")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stderr.strip().endswith("ACTIVE")
