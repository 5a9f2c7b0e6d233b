"""The runs layer's speed and scale targets (issue #12), measured in one run:

* ``ray``:       a 16-cell grid (2 checkpoints x 2 attacks x 4 seeds: fixed-budget PGD-50 and
                 MI-FGSM-50, robust accuracy at 4 ε on the 450 digits test points; about 2 s per
                 cell) on Ray with 2 one-thread workers, against 1 one-thread worker. The clock
                 starts after ray.init, so the workers' start (importing torch) is inside it.
                 Target: at least 1.8x faster.
* ``store``:     the same grid on the local executor, one thread; the seconds spent inside the
                 results store (start_run, done, record, finish_run: SQLite writes of metrics and
                 per-point outcomes) as a share of the grid's wall time. Target: under 2%.
* ``streaming``: ``evaluate`` over a DataLoader of Fashion-MNIST's 60,000 training images read
                 from disk one image at a time (an uncompressed IDX file, ``os.pread``: the data
                 never sits in memory), FGSM + 5-step PGD at ε = 0.1, against the first 1,000.
                 Peak RSS of each in a fresh process. Target: within 10%.

Each measurement runs in its own subprocess; ``ray`` alternates the contenders (1, 2, 2, 1, ...)
and reports the median of the per-pair ratios. OMP_WAIT_POLICY=PASSIVE as advlab's commands set.

    .venv/bin/python bench/bench_runs.py               # about 10 minutes on 2 cores
    .venv/bin/python bench/bench_runs.py --tasks ray --rounds 3

Writes bench/results/runs.md and runs.json (the checkpoints are cached in bench/results/runs/).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = RESULTS / "runs"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

GRID = """
[study]
name = "bench-grid"

[data.digits]
name = "digits"

[models.cnn]
checkpoint = "{cnn}"

[models.mlp]
checkpoint = "{mlp}"

[[measure]]
kind = "robust"
models = ["cnn", "mlp"]
data = "digits"
attacks = [{{ name = "pgd", steps = 50, early_stop = false }}, {{ name = "mifgsm", steps = 50, early_stop = false }}]
eps = [0.05, 0.1, 0.2, 0.3]
seeds = [0, 1, 2, 3]
"""


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), PYTHONPATH=str(HERE.parent / "src"),
               MALLOC_MMAP_THRESHOLD_="65536")
    return env


def _sub(*args: str, threads: int = 1) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(Path(__file__)), "--worker", *args], env=_env(threads),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- workers ------------------------------------------------------------------------------------

def _checkpoints() -> tuple[Path, Path]:
    from advlab.cli import main

    CACHE.mkdir(parents=True, exist_ok=True)
    paths = []
    for arch in ("small-cnn", "mlp"):
        out = CACHE / arch
        if not out.exists():
            assert main(["train", "--data", "digits", "--model", arch, "--epochs", "8", "--seed", "0",
                         "--out", str(out), "--no-progress"]) == 0
        paths.append(out)
    return paths[0], paths[1]


def _spec_file(tmp: Path) -> Path:
    cnn, mlp = _checkpoints()
    path = tmp / "grid.toml"
    path.write_text(GRID.format(cnn=cnn, mlp=mlp))
    return path


def work_grid(executor: str, workers: int) -> dict[str, Any]:
    """One grid, timed: Ray with ``workers`` one-thread workers, or local with one thread, with the
    time spent inside the store's methods counted."""
    import torch

    from advlab.runs import store as store_mod
    from advlab.runs.grid import run_spec
    from advlab.runs.spec import load_spec

    torch.set_num_threads(1)
    spent = {"seconds": 0.0, "calls": 0}
    for name in ("start_run", "done", "record", "record_failure", "finish_run"):
        original = getattr(store_mod.Store, name)

        def timed(self: Any, *a: Any, _f: Any = original, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _f(self, *a, **k)
            finally:
                spent["seconds"] += time.perf_counter() - t
                spent["calls"] += 1
        setattr(store_mod.Store, name, timed)
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(_spec_file(Path(tmp)))
        assert len(spec.cells) == 16, len(spec.cells)
        if executor == "ray":
            import ray

            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                                               "PYTHONPATH": str(HERE.parent / "src")}})
        t0 = time.perf_counter()
        with store_mod.Store(Path(tmp) / "runs.db") as store:
            summary = run_spec(spec, store, executor=executor, progress=False, threads=1, cpus_per_cell=1.0)
            rows = store.query("SELECT COUNT(*) AS n FROM outcomes")[0]["n"]
        wall = time.perf_counter() - t0
        if executor == "ray":
            ray.shutdown()
    assert not summary.failed, summary.failed
    return {"wall": wall, "store_seconds": spent["seconds"], "store_calls": spent["calls"], "outcomes": rows,
            "cells": len(summary.done)}


def _raw_idx(tmp: Path) -> Path:
    """Fashion-MNIST's training images as an uncompressed IDX file (16-byte header, then bytes)."""
    raw = tmp / "train-images-idx3-ubyte"
    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz", "rb") as src, open(raw, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return raw


def work_stream(n: int, raw: str) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from advlab.attacks import FGSM, PGD
    from advlab.data.idx import read_idx
    from advlab.evaluation import evaluate
    from advlab.models import build_seeded, fit

    labels = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")[:n].astype(np.int64)   # 60,000: 480 kB

    class FromDisk(Dataset):
        """One 28x28 image per read (os.pread): nothing of the file is kept."""

        def __init__(self) -> None:
            self.fd = os.open(raw, os.O_RDONLY)

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            b = os.pread(self.fd, 784, 16 + 784 * i)
            x = torch.from_numpy(np.frombuffer(b, dtype=np.uint8).astype(np.float32) / 255.0).view(1, 28, 28)
            return x, int(labels[i])

    torch.manual_seed(0)
    model = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
    first = [FromDisk()[i] for i in range(512)]
    fit(model, torch.stack([a for a, _ in first]), torch.tensor([b for _, b in first]), epochs=2, batch_size=64,
        seed=0, progress=False)
    model.eval()
    t0 = time.perf_counter()
    ev = evaluate(model, DataLoader(FromDisk(), batch_size=500),
                  attacks={"FGSM": FGSM(eps=0.1), "PGD-5": PGD(eps=0.1, steps=5, early_stop=True)},
                  eps=[0.1], progress=False)
    wall = time.perf_counter() - t0
    assert ev.rows[0].n == n
    return {"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "wall": wall,
            "robust_accuracy": ev.rows[-1].robust_accuracy, "clean_accuracy": ev.rows[0].clean_accuracy}


# --- driver -------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="ray,store,streaming")
    p.add_argument("--rounds", type=int, default=2, help="ray: pairs of (1 worker, 2 workers)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "grid":
            out = work_grid(rest[0], int(rest[1]))
        elif kind == "stream":
            out = work_stream(int(rest[0]), rest[1])
        else:
            _checkpoints()
            out = {}
        print(json.dumps(out))
        return
    tasks = [t for t in args.tasks.split(",") if t]
    RESULTS.mkdir(parents=True, exist_ok=True)
    _sub("checkpoints")
    result: dict[str, Any] = {"tasks": tasks, "started": time.strftime("%Y-%m-%d %H:%M"),
                              "cpus": os.cpu_count(), "load_start": os.getloadavg()[0]}
    lines = [f"`python bench/bench_runs.py --tasks {','.join(tasks)} --rounds {args.rounds}` "
             f"({result['started']}, {os.cpu_count()} CPUs, load {result['load_start']:.1f} at the start)", ""]
    if "ray" in tasks:
        pairs = []
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            got = {w: _sub("grid", "ray", str(w)) for w in order}
            pairs.append(got)
            print(f"ray round {r + 1}: 1 worker {got[1]['wall']:.1f} s, 2 workers {got[2]['wall']:.1f} s", flush=True)
        speedup = statistics.median(p[1]["wall"] / p[2]["wall"] for p in pairs)
        result["ray"] = {"pairs": pairs, "speedup": speedup}
        lines += ["| Ray, 16-cell grid | 1 one-thread worker (s) | 2 one-thread workers (s) | speed-up | target |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| round {i + 1} | {p[1]['wall']:.1f} | {p[2]['wall']:.1f} | {p[1]['wall'] / p[2]['wall']:.2f}× | |"
                  for i, p in enumerate(pairs)]
        lines += [f"| **median of pairs** | | | **{speedup:.2f}×** | ≥ 1.8× ({'holds' if speedup >= 1.8 else 'MISSED'}) |",
                  ""]
    if "store" in tasks:
        g = _sub("grid", "local", "1")
        share = g["store_seconds"] / g["wall"]
        result["store"] = {**g, "share": share}
        print(f"store: {g['store_seconds']:.3f} s of {g['wall']:.1f} s", flush=True)
        lines += ["| local executor, 16-cell grid, 1 thread | grid (s) | inside the store (s) | store calls | "
                  "outcome rows | share | target |", "|---|---:|---:|---:|---:|---:|---|",
                  f"| | {g['wall']:.1f} | {g['store_seconds']:.3f} | {g['store_calls']} | {g['outcomes']} | "
                  f"{100 * share:.2f}% | < 2% ({'holds' if share < 0.02 else 'MISSED'}) |", ""]
    if "streaming" in tasks:
        if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
            lines += ["streaming: skipped (no Fashion-MNIST at /usr/share/datasets/fashion-mnist)", ""]
        else:
            with tempfile.TemporaryDirectory() as tmp:
                raw = str(_raw_idx(Path(tmp)))
                small, large = _sub("stream", "1000", raw), _sub("stream", "60000", raw)
            ratio = large["peak_kib"] / small["peak_kib"]
            result["streaming"] = {"1000": small, "60000": large, "ratio": ratio}
            print(f"streaming: 1,000 points {small['peak_kib'] / 1024:.0f} MB, 60,000 points "
                  f"{large['peak_kib'] / 1024:.0f} MB", flush=True)
            lines += ["| streaming evaluate (FGSM + PGD-5, Fashion-MNIST from disk) | points | peak RSS (MB) | "
                      "wall (s) | robust acc. (worst case) |", "|---|---:|---:|---:|---:|",
                      f"| | 1,000 | {small['peak_kib'] / 1024:.0f} | {small['wall']:.1f} | "
                      f"{100 * small['robust_accuracy']:.1f}% |",
                      f"| | 60,000 | {large['peak_kib'] / 1024:.0f} | {large['wall']:.1f} | "
                      f"{100 * large['robust_accuracy']:.1f}% |",
                      f"| **60,000 ÷ 1,000** | | **{ratio:.3f}** | | within 1.10 "
                      f"({'holds' if ratio <= 1.10 else 'MISSED'}) |", ""]
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "runs.md").write_text(text, encoding="utf-8")
    (RESULTS / "runs.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
