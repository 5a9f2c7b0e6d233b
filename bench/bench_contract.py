"""What the attack contract's lifecycle costs: the same attacks timed at two code revisions.

Each revision's ``src/`` runs in its own subprocess (one package name can be imported once per
process); the subprocesses alternate A B A B for ``--rounds`` rounds on the same machine, each
timing every attack ``--reps`` times on one fixed batch (the minimum of the reps, after a
warm-up call). The report is the median over rounds of the per-round ratio B / A, so slow drift
of a noisy machine cancels. The workload is a small CNN on 28×28 inputs (random weights and
data; timing does not depend on accuracy), batch 256, one thread per process by default.

    python bench/bench_contract.py --a /tmp/advlab-old/src --b src --rounds 7

Fixed-budget attacks (FGSM, PGD-10, MI-FGSM-10, ``perturb`` of PGD-7) should cost the same;
the limit set by the attack-contract issue is 1% over the old code.

Wall-clock time on a shared 2-core machine moves by 20-40% between rounds, far more than that
1%. ``--instructions`` counts instructions instead (valgrind's callgrind, one process per
revision, deterministic to well under 0.1%): the worker calls ``os.getppid()`` around each
attack's timed calls and callgrind dumps its counters there (``--dump-before``), so each phase's
count is read separately. Batch 64, one thread; about 5 minutes per revision.

    python bench/bench_contract.py --a /tmp/advlab-old/src --b src --instructions
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import SMALL_CNN_BATCH

WORKER = r"""
import json, sys, time, torch
from torch import nn
torch.set_num_threads(int(sys.argv[1]))
reps = int(sys.argv[2])
from advlab.attacks import FGSM, PGD, MIFGSM, APGD, DeepFool
try:
    from advlab.attacks.contract import perturb
except ImportError:
    from advlab.attacks import perturb
""" + SMALL_CNN_BATCH + r"""
work = {
    "FGSM": lambda g: FGSM(eps=0.1)(model, x, y, generator=g),
    "PGD-10": lambda g: PGD(eps=0.1, steps=10)(model, x, y, generator=g),
    "MI-FGSM-10": lambda g: MIFGSM(eps=0.1, steps=10)(model, x, y, generator=g),
    "perturb(PGD-7)": lambda g: perturb(PGD(eps=0.1, steps=7), model, x, y, generator=g),
    "PGD-10 early_stop": lambda g: PGD(eps=0.1, steps=10, early_stop=True)(model, x, y, generator=g),
    "APGD-CE-10": lambda g: APGD(eps=0.1, steps=10)(model, x, y, generator=g),
    "DeepFool-10": lambda g: DeepFool(steps=10)(model, x[:64], y[:64]),
}
out = {}
for name, fn in work.items():
    fn(torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(torch.Generator().manual_seed(0))
        best = min(best, time.perf_counter() - t0)
    out[name] = best
print(json.dumps(out))
"""


INSTR_WORKER = WORKER.split("out = {}")[0].replace("torch.rand(256", "torch.rand(64").replace(
    "torch.randint(0, 10, (256,))", "torch.randint(0, 10, (64,))") + r"""
import os
calls = int(sys.argv[2])
only = [n for n in sys.argv[3].split(",") if n] if len(sys.argv) > 3 else []
work = {k: v for k, v in work.items() if not only or k in only}
for name, fn in work.items():
    fn(torch.Generator().manual_seed(0))          # warm-up, outside the counted phase
    os.getppid()                                  # callgrind dumps here: the phase starts
    for _ in range(calls):
        fn(torch.Generator().manual_seed(0))
    os.getppid()                                  # and ends here
print(json.dumps(list(work)))
"""


def count(src: str, calls: int, tmp: str, only: str = "") -> dict[str, float]:
    """Instructions per call of each attack at revision ``src`` (one callgrind process)."""
    import glob

    env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS="1")
    stem = os.path.join(tmp, "cg")
    for f in glob.glob(stem + "*"):
        os.remove(f)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--dump-before=*getppid*",
                          f"--callgrind-out-file={stem}.%p", sys.executable, "-c", INSTR_WORKER, "1",
                          str(calls), only], env=env, capture_output=True, text=True, check=True)
    names = json.loads(out.stdout.strip().splitlines()[-1])
    files = sorted(glob.glob(stem + ".*.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
    totals = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            line = next(ln for ln in fh if ln.startswith("totals:"))
        totals.append(int(line.split()[1]))
    segments = [t for t in totals if t > 100_000]  # the marker's own two symbols dump ~1k each
    # segments: setup + warm-up 1, phase 1, warm-up 2, phase 2, ...
    return {name: segments[2 * i + 1] / calls for i, name in enumerate(names)}


def run(src: str, threads: int, reps: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads), str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="src/ of the baseline revision")
    p.add_argument("--b", required=True, help="src/ of the revision to compare")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the per-round timings here")
    p.add_argument("--instructions", action="store_true",
                   help="count instructions under callgrind instead of timing (deterministic)")
    p.add_argument("--calls", type=int, default=2, help="--instructions: counted calls per attack")
    p.add_argument("--only", default="", help="--instructions: comma-separated attack names to count")
    args = p.parse_args()
    if args.instructions:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            a, b = count(args.a, args.calls, tmp, args.only), count(args.b, args.calls, tmp, args.only)
        print("| attack | A (instructions/call) | B | B/A |\n|---|---:|---:|---:|")
        for k in a:
            print(f"| {k} | {a[k]:,.0f} | {b[k]:,.0f} | {b[k] / a[k]:.4f} |")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"a": a, "b": b, "args": vars(args)}, fh, indent=1)
        return
    rounds = []
    for r in range(args.rounds):
        a = run(args.a, args.threads, args.reps)
        b = run(args.b, args.threads, args.reps)
        rounds.append({"a": a, "b": b})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {b[k] / a[k]:.3f}" for k in a), flush=True)
    print("\n| attack | A (s, median) | B (s, median) | median B/A over rounds |\n|---|---:|---:|---:|")
    for k in rounds[0]["a"]:
        ratio = statistics.median(r["b"][k] / r["a"][k] for r in rounds)
        print(f"| {k} | {statistics.median(r['a'][k] for r in rounds):.4f} | "
              f"{statistics.median(r['b'][k] for r in rounds):.4f} | {ratio:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"rounds": rounds, "args": vars(args)}, fh, indent=1)


if __name__ == "__main__":
    main()
