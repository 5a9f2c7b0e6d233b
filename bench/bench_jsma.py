"""JSMA beside ART's ``SaliencyMapMethod`` (issue #13): targeted success at the same feature budget,
median features changed, and time, on the same Fashion-MNIST points, model and targets.

* advlab ``JSMA(theta=1, gamma=γ)``: Papernot et al.'s pair saliency map on the softmax outputs
  (where β = −α, so the best pair is the top two α), batched in torch;
* advlab ``JSMA(saliency="logits")``: the pair search on logits (JSMA-Z), all d² pairs;
* ART ``SaliencyMapMethod(theta=1, gamma=γ)``: the two features with the largest target-class
  gradient per step (no β term), NumPy in and out of a ``PyTorchClassifier``;
* advlab ``PGDL0(eps=⌊γd⌋)`` (Croce & Hein 2019) for reference: a stronger L0 attack.

A point counts as a success when the model predicts its target and at most ⌊γ·d⌋ features
changed (ART may overrun the budget by its last pair; such points are counted apart). The
contenders alternate A B A B over ``--rounds``; time ratios are medians of the per-round pairs.

    .venv-bench/bin/python bench/bench_jsma.py            # about 3 minutes on 2 cores

Writes bench/results/jsma.json and bench/JSMA.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--gamma", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    import bench_pgd
    from _common import git_revision, versions
    from advlab.attacks import JSMA, PGDL0
    from advlab.data import load_dataset

    torch.set_num_threads(2)
    model, _ = bench_pgd.trained_model(bench_pgd.Config(), HERE / "results")
    model.eval()
    test = load_dataset("fashion-mnist", split="test").subset(4 * args.n)
    with torch.no_grad():
        right = model(test.x).argmax(1) == test.y
    x, y = test.x[right][: args.n], test.y[right][: args.n]
    g = torch.Generator().manual_seed(0)
    target = (y + torch.randint(1, 10, y.shape, generator=g)) % 10
    d = x[0].numel()
    budget = math.floor(args.gamma * d + 1e-9)

    from art.attacks.evasion import SaliencyMapMethod
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    onehot = np.eye(10, dtype=np.float32)[target.numpy()]

    def run_advlab() -> torch.Tensor:
        return JSMA(theta=1.0, gamma=args.gamma)(model, x, y, target=target).x_adv

    def run_art() -> torch.Tensor:
        attack = SaliencyMapMethod(clf, theta=1.0, gamma=args.gamma, batch_size=args.n, verbose=False)
        return torch.from_numpy(attack.generate(x.numpy(), y=onehot))

    def run_pgdl0() -> torch.Tensor:
        return PGDL0(eps=budget, steps=100, restarts=1)(model, x, y, target=target,
                                                          generator=torch.Generator().manual_seed(0)).x_adv

    def run_logits() -> torch.Tensor:
        return JSMA(theta=1.0, gamma=args.gamma, saliency="logits")(model, x, y, target=target).x_adv

    contenders = {"advlab JSMA": run_advlab, "ART SaliencyMapMethod": run_art, "advlab PGD-L0": run_pgdl0,
                  "advlab JSMA-Z (logits, all pairs)": run_logits}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, fn in contenders.items():      # A B C A B C ...
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)

    rows = []
    for name, x_adv in outputs.items():
        with torch.no_grad():
            pred = model(x_adv.float()).argmax(1)
        changed = (x_adv != x).flatten(1).sum(1)
        hit = pred == target
        ok = hit & (changed <= budget)
        rows.append({"contender": name, "success": float(ok.float().mean()),
                     "hit_over_budget": int((hit & (changed > budget)).sum()),
                     "median_changed_success": float(changed[ok].float().median()) if bool(ok.any()) else None,
                     "max_changed": int(changed.max()),
                     "median_s": statistics.median(times[name]), "times_s": times[name]})
    ratio = statistics.median(a / b for a, b in zip(times["ART SaliencyMapMethod"], times["advlab JSMA"]))
    out = {"n": args.n, "gamma": args.gamma, "features": d, "budget": budget, "rounds": args.rounds,
           "rows": rows, "time_ratio_art_over_advlab_jsma": ratio,
           "versions": versions(), "revision": git_revision()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "jsma.json").write_text(json.dumps(out, indent=2))
    lines = ["# JSMA beside ART's SaliencyMapMethod (Fashion-MNIST small CNN)", "",
             f"`{' '.join(['.venv-bench/bin/python', 'bench/bench_jsma.py'] + sys.argv[1:])}` at {out['revision']}; "
             f"n = {args.n} correctly classified test points, random targets (the same for all), "
             f"θ = 1, γ = {args.gamma} (budget {budget} of {d} features), {args.rounds} interleaved rounds.", "",
             "| contender | targeted success within budget | median features changed (successes) | "
             "max changed | hits over budget | median time (s) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        med = "—" if r["median_changed_success"] is None else f"{r['median_changed_success']:.0f}"
        lines.append(f"| {r['contender']} | {100 * r['success']:.1f}% | {med} | {r['max_changed']} | "
                     f"{r['hit_over_budget']} | {r['median_s']:.2f} |")
    lines += ["", f"Time, ART ÷ advlab JSMA (median of per-round ratios): {ratio:.2f}×", ""]
    (HERE / "JSMA.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
