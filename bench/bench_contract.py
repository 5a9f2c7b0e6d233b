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
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

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
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(32 * 49, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
x = torch.rand(256, 1, 28, 28)
y = torch.randint(0, 10, (256,))
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
    args = p.parse_args()
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
