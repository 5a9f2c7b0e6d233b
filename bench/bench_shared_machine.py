"""PGD on a shared machine: advlab against torchattacks, quiet and with a CPU-bound neighbour.

Issue #11 found that with another CPU-bound process on the 2 cores, fixed-budget PGD ran 1.14x
torchattacks and evaluation mode lost most of its lead: OpenMP's spin-waiting workers stall
torch's 2 threads when a core is taken. The `advlab` command now sets OMP_WAIT_POLICY=PASSIVE.
This bench times both libraries in fresh subprocesses (2 threads each), interleaved A B A B, in
four conditions: {quiet, loaded} x {OMP default, PASSIVE}; "loaded" runs a busy-looping Python
process beside them. It reports the median over rounds of the per-round ratio advlab/torchattacks
(< 1: advlab faster). Workload: a small CNN (random weights) on 28x28 inputs, batch 256, L-inf
PGD-10 with a fixed budget (no random start, identical arithmetic to torchattacks).

    python bench/bench_shared_machine.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import SMALL_CNN_BATCH
import time

WORKER = r"""
import json, sys, time, torch
from torch import nn
lib, reps = sys.argv[1], int(sys.argv[2])
""" + SMALL_CNN_BATCH + r"""
if lib == "advlab":
    from advlab.attacks import PGD
    attack = PGD(eps=0.1, steps=10, step_size=0.01, random_start=False)
    run = lambda: attack(model, x, y)
else:
    import torchattacks
    attack = torchattacks.PGD(model, eps=0.1, alpha=0.01, steps=10, random_start=False)
    run = lambda: attack(x, y)
run()
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t0)
print(json.dumps(best))
"""

BUSY = "import time\nwhile True:\n    sum(i * i for i in range(10000))\n"


def _time(lib: str, policy: str | None, reps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_NUM_THREADS="2", PYTHONPATH=os.path.abspath("src"))
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", WORKER, lib, str(reps)], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--json", help="write the per-round timings here")
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {}
    for loaded in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if loaded else None
        try:
            time.sleep(0.5 if loaded else 0)
            for policy in (None, "PASSIVE"):
                key = f"{'loaded' if loaded else 'quiet'}, OMP_WAIT_POLICY={policy or 'default'}"
                rows = results.setdefault(key, [])
                for r in range(args.rounds):
                    a = _time("advlab", policy, args.reps)
                    t = _time("torchattacks", policy, args.reps)
                    rows.append({"advlab": a, "torchattacks": t})
                    print(f"{key} round {r + 1}: advlab {a:.3f} s, torchattacks {t:.3f} s, ratio {a / t:.3f}",
                          flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print("\n| condition | advlab (s, median) | torchattacks (s, median) | median advlab/torchattacks |")
    print("|---|---:|---:|---:|")
    for key, rows in results.items():
        ratio = statistics.median(r["advlab"] / r["torchattacks"] for r in rows)
        print(f"| {key} | {statistics.median(r['advlab'] for r in rows):.3f} | "
              f"{statistics.median(r['torchattacks'] for r in rows):.3f} | {ratio:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
