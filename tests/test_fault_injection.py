"""#11: ``kill -9`` at random moments of every resumable or file-writing command (train, defend,
evaluate, evaluate --strong, measure), then the same command again: nothing half-written, nothing
doubled, no orphan temporary file, and the result equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from advlab._io import COMMIT_FILE, PENDING, TMP_SUFFIX, atomic_write_text, clean_orphans

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _advlab(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advlab", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files of any kind: a writer's temp, a group write's pending files or marker."""
    return [p for p in folder.rglob("*")
            if p.name.endswith((TMP_SUFFIX, PENDING)) or p.name == COMMIT_FILE]


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


# --- what "whole" and "equal" mean for each kind of file ------------------------------------------

_VOLATILE = re.compile(r"(^|_)seconds$|^created$")


def _stable(value, out: Path):
    """A JSON value without what legitimately differs between two runs: timings, creation times
    and the run's own output path."""
    if isinstance(value, dict):
        return {k: _stable(v, out) for k, v in value.items() if not _VOLATILE.search(k)}
    if isinstance(value, list):
        return [_stable(v, out) for v in value]
    if isinstance(value, str):
        return value.replace(str(out), "OUT")
    return value


def _whole(path: Path) -> None:
    """Raise unless ``path`` is a complete file of its kind."""
    data = path.read_bytes()
    assert data, f"{path} is empty"
    if path.suffix == ".json":
        json.loads(data)
    elif path.suffix == ".safetensors":
        load_file(path)
    elif path.suffix == ".png":
        assert data.startswith(b"\x89PNG") and data[-12:-4] == b"\x00\x00\x00\x00IEND", f"{path} is cut"
    elif path.suffix == ".html":
        assert data.rstrip().endswith(b"</html>"), f"{path} is cut"


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def _same(clean: Path, killed: Path) -> None:
    """The rerun's output equals the uninterrupted one: the same files (nothing doubled, nothing
    lost), the same JSON up to timings, the same tensors and the same tensor metadata."""
    a, b = _files(clean), _files(killed)
    assert sorted(a) == sorted(b)
    for name, pa in a.items():
        pb = b[name]
        _whole(pb)
        if pa.suffix == ".json":
            assert _stable(json.loads(pa.read_text()), clean) == _stable(json.loads(pb.read_text()), killed), name
        elif pa.suffix == ".safetensors":
            ta, tb = load_file(pa), load_file(pb)
            assert sorted(ta) == sorted(tb), name
            for k in ta:
                assert torch.equal(ta[k], tb[k]), f"{name}: {k}"
            with safe_open(pa, "pt") as fa, safe_open(pb, "pt") as fb:
                ma, mb = fa.metadata() or {}, fb.metadata() or {}
            assert sorted(ma) == sorted(mb), name
            for k in ma:
                try:
                    va, vb = json.loads(ma[k]), json.loads(mb[k])
                except ValueError:
                    va, vb = ma[k], mb[k]
                assert _stable(va, clean) == _stable(vb, killed), f"{name}: metadata {k}"


# --- the commands -------------------------------------------------------------------------------

EVAL = ["--n", "60", "--no-progress"]
COMMANDS = {
    "train": ["train", "--data", "digits", "--epochs", "3", "--no-progress"],
    "defend": ["defend", "--recipe", "pgd", "--data", "digits", "--epochs", "2", "--steps", "3",
               "--budget", "50", "--eval-eps", "0.05,0.1", *EVAL],
    "evaluate": ["evaluate", "--attacks", "fgsm,pgd", "--eps", "0.05,0.1", *EVAL],
    "evaluate-strong": ["evaluate", "--strong", "--attacks", "fgsm", "--eps", "0.05,0.1", *EVAL],
    "measure": ["measure", "--attacks", "deepfool,fmn", *EVAL],
}
NEEDS_CHECKPOINT = {"evaluate", "evaluate-strong", "measure"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    ck = tmp_path_factory.mktemp("fault") / "ck"
    done = subprocess.run([sys.executable, "-m", "advlab", "train", "--data", "digits", "--epochs", "1",
                           "--out", str(ck), "--no-progress"], capture_output=True, env=ENV)
    assert done.returncode == 0, done.stderr
    return ck


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, checkpoint) -> dict[str, tuple[Path, float]]:
    """Each command run once without interruption: its output folder and its wall time."""
    runs: dict[str, tuple[Path, float]] = {}

    def run(name: str) -> tuple[Path, float]:
        if name not in runs:
            out = tmp_path_factory.mktemp(name) / "out"
            start = time.monotonic()
            proc = _advlab(*_args(name, checkpoint), "--out", str(out))
            _, err = proc.communicate()
            assert proc.returncode == 0, err
            runs[name] = (out, time.monotonic() - start)
        return runs[name]

    return run  # type: ignore[return-value]


def _args(name: str, checkpoint: Path) -> list[str]:
    return [*COMMANDS[name], *(["--checkpoint", str(checkpoint)] if name in NEEDS_CHECKPOINT else [])]


# one random kill per command in `make test` (8–20 s each on 2 cores); `make test-long` runs 5
ROUNDS = int(os.environ.get("ADVLAB_FAULT_ROUNDS", "1"))


@pytest.mark.parametrize("round_", range(ROUNDS))
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(
        tmp_path, name, round_, checkpoint, uninterrupted):
    clean, wall = uninterrupted(name)
    args = _args(name, checkpoint)
    out = tmp_path / "out"
    rng = random.Random(f"{name}-{round_}")
    start = time.monotonic()
    proc = _advlab(*args, "--out", str(out))
    # start-up (imports, data) takes ~2 s of the wall time: the kill lands in the work or the writes
    time.sleep(rng.uniform(min(2.0, 0.4 * wall), 0.95 * wall))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(f"{name}: killed at {time.monotonic() - start:.1f}/{wall:.1f} s, left",
          sorted(_files(out)) if out.exists() else "nothing")
    for path in _files(out).values() if out.exists() else ():
        if path not in _leftovers(out):
            _whole(path)                               # whatever is there under its own name is whole
    rerun = _advlab(*args, "--out", str(out))
    _, err = rerun.communicate()
    if rerun.returncode != 0:
        # only train refuses to overwrite, and only a complete checkpoint
        assert name == "train" and "already holds a checkpoint" in err, err
    assert _leftovers(out) == []
    _same(clean, out)
