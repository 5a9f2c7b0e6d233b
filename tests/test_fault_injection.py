"""#11: ``kill -9`` at random moments of a file-writing command, then the same command again:
nothing half-written, no orphan temporary file, and the result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advlab._io import TMP_SUFFIX, atomic_write_text, clean_orphans


def _advlab(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "advlab", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def test_a_killed_writer_leaves_an_orphan_that_the_next_write_removes(tmp_path):
    """A temp file of a dead writer (pid gone) beside the target is removed by the next write of
    that file; a live writer's is kept."""
    target = tmp_path / "results.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".results.json.{dead.pid}.abcd1234{TMP_SUFFIX}"
    orphan.write_text("half")
    live = tmp_path / f".results.json.{os.getpid()}.efgh5678{TMP_SUFFIX}"
    live.write_text("in progress")
    atomic_write_text(target, "{}")
    assert not orphan.exists() and live.exists() and target.read_text() == "{}"
    assert clean_orphans(tmp_path) == [] and live.exists()


ARGS = ["evaluate", "--attacks", "fgsm,pgd", "--eps", "0.05,0.1", "--n", "60", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault")
    ck = root / "ck"
    assert subprocess.run([sys.executable, "-m", "advlab", "train", "--data", "digits", "--epochs", "1",
                           "--out", str(ck), "--no-progress"], capture_output=True).returncode == 0
    clean = root / "clean"
    assert _advlab(*ARGS, "--checkpoint", str(ck), "--out", str(clean)).wait() == 0
    return ck, clean


@pytest.mark.parametrize("round_", range(3))
def test_evaluate_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(tmp_path, round_,
                                                                                  uninterrupted):
    ck, clean = uninterrupted
    args = [*ARGS, "--checkpoint", str(ck)]
    out = tmp_path / "killed"
    rng = random.Random(round_)
    proc = _advlab(*args, "--out", str(out))
    time.sleep(rng.uniform(2.0, 6.0))   # start-up is ~2 s: the kill lands in the work or the writes
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for f in out.glob("*.json") if out.exists() else []:
        json.loads(f.read_text())        # every JSON file there is whole
    assert _advlab(*args, "--out", str(out)).wait() == 0
    assert _temps(out) == []
    a = json.loads((clean / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a["rows"]) == strip(b["rows"])
