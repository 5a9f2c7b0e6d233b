"""Cost of an adversarial-training epoch against a standard epoch, interleaved (issue #5's targets).

The targets: a PGD-k training epoch costs at most 1.1 × (k + 1) standard epochs, and fast FGSM
training (Wong et al. 2020) runs in under a third of PGD training's time. This script times one
epoch of each recipe on the same ``--n-train`` Fashion-MNIST images (small CNN, batch 128, Adam,
one torch thread), in ``--rounds`` interleaved rounds (standard, pgd, fast, standard, pgd, ...),
and reports the median over rounds of the per-round ratios, for wall and CPU seconds
(``time.process_time``), next to the ideal ratio (k + 1 passes for PGD-k: k attack
forward+backward passes plus the training one; 2 for fast).

Run on a quiet machine: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_train_timing.py``.
Writes ``bench/results/train_timing.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from _common import git_revision, versions
from advlab.data import load_dataset
from advlab.defenses.adversarial import FastFGSM, PGDTraining
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.models import build_seeded

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=7, help="PGD steps of PGD training")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion-mnist", split="train")
    x, y = ds.x[: args.n_train], ds.y[: args.n_train]
    recipes = {"standard": Standard(), f"pgd-{args.k}": PGDTraining(eps=args.eps, steps=args.k),
               "fast": FastFGSM(eps=args.eps)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in recipes}
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, recipe in recipes.items():
            model = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
            w0, c0 = time.perf_counter(), time.process_time()
            train(model, recipe, x, y, epochs=1, batch_size=128, lr=1e-3, seed=r, progress=False)
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
            print(f"round {r + 1} {name}: {times[name][-1][0]:.1f} s wall, {times[name][-1][1]:.1f} s CPU",
                  flush=True)
    pgd = f"pgd-{args.k}"
    ideal = {"standard": 1.0, pgd: args.k + 1.0, "fast": 2.0}

    def ratio(a: str, b: str, i: int) -> float:
        return statistics.median(ta[i] / tb[i] for ta, tb in zip(times[a], times[b]))

    rows = []
    for name in recipes:
        rows.append({"recipe": name, "wall_s": statistics.median(t[0] for t in times[name]),
                     "cpu_s": statistics.median(t[1] for t in times[name]),
                     "x_standard_wall": ratio(name, "standard", 0), "x_standard_cpu": ratio(name, "standard", 1),
                     "ideal": ideal[name]})
    fast_over_pgd = {"wall": ratio("fast", pgd, 0), "cpu": ratio("fast", pgd, 1)}
    meta = {"revision": git_revision(), "versions": versions(("torch", "advlab")),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_at_start": load0,
            "load_at_end": os.getloadavg()[0], "args": vars(args)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train_timing.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "fast_over_pgd": fast_over_pgd, "raw": times}, indent=1) + "\n")
    print(f"\n{meta['date']}, advlab {meta['revision']}, {args.threads} thread(s), load {load0:.1f} → "
          f"{meta['load_at_end']:.1f}; one epoch of {args.n_train} images, {args.rounds} interleaved rounds, "
          "medians of per-round ratios.\n")
    print("| recipe | epoch wall s | epoch CPU s | × standard (wall) | × standard (CPU) | ideal (passes) |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['recipe']} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['x_standard_wall']:.2f} | "
              f"{row['x_standard_cpu']:.2f} | {row['ideal']:g} |")
    target = 1.1 * (args.k + 1)
    got = rows[1]["x_standard_wall"]
    print(f"\n- PGD-{args.k} epoch / standard epoch: {got:.2f} (wall), target ≤ 1.1 × ({args.k} + 1) = "
          f"{target:.1f}: {'meets' if got <= target else 'MISSES'}.")
    print(f"- fast / PGD-{args.k} epoch: {fast_over_pgd['wall']:.2f} (wall), {fast_over_pgd['cpu']:.2f} (CPU); "
          f"target < 0.33: {'meets' if fast_over_pgd['wall'] < 1 / 3 else 'MISSES'}.")


if __name__ == "__main__":
    main()
