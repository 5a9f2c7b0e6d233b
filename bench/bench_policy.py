"""Attacks on a CartPole policy's observations (Huang et al. 2017; issue #14 item 5).

Part 1, the curve: the default policy (``train_policy(seed=0)``, DAgger imitation of a linear
controller), FGSM, PGD-10 and same-norm noise under L∞ and L2, ``--episodes`` episodes per cell
(env seeds 0..N-1, the same for every cell), cross-entropy against the greedy action (Huang et
al.'s loss). Part 2, seeds and training choices: at L2 ε = 0.5 and L∞ ε = 0.1, FGSM against
noise for policies trained with seeds 0, 1, 2 under the defaults and with one training choice
changed (state jitter, no weight decay, label smoothing 0.1), with the fraction of observations
FGSM left unchanged (its gradient exactly 0). Part 3, the saturated policy (no weight decay,
seed 1): cross-entropy against the logit-margin loss (``loss="cw"``). With two actions both
losses' gradients point the same way wherever CE's is not exactly 0, so on an unsaturated policy
the two give the same points; they differ only where the softmax saturates.

One thread, seeds fixed. Run: ``PYTHONPATH=src python bench/bench_policy.py`` (about 3 min on a
shared 2-core CPU). Writes ``bench/results/policy.{md,json,png}``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from advlab.evaluation import policy_return_vs_eps, train_policy
from advlab.reports import policy_return_figure

EPS = {"linf": [0.02, 0.05, 0.1, 0.2, 0.3], "l2": [0.05, 0.1, 0.25, 0.5, 1.0]}
VARIANTS = {"defaults": {}, "state jitter 0.5": {"jitter": 0.5}, "no weight decay": {"weight_decay": 0.0},
            "label smoothing 0.1": {"label_smoothing": 0.1}}
OUT = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--ablation-episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    policy = train_policy(seed=0)
    t_train = time.perf_counter() - t0
    curve = policy_return_vs_eps(policy, eps=EPS, episodes=args.episodes, seed=0)
    t_curves = time.perf_counter() - t0 - t_train
    policy_return_figure(curve, path=OUT / "policy.png")

    ablation = []
    for name, kw in VARIANTS.items():
        for seed in (0, 1, 2):
            pol = train_policy(seed=seed, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c = policy_return_vs_eps(pol, eps={"linf": [0.1], "l2": [0.5]}, methods=("fgsm", "noise"),
                                         episodes=args.ablation_episodes, seed=0)
            ablation.append({"variant": name, "seed": seed, "clean": c.clean.mean,
                             **{f"{m}_{n}": c.row(m, n, e).mean for m in ("FGSM", "noise")
                                for n, e in (("linf", 0.1), ("l2", 0.5))},
                             **{f"unmoved_{n}": c.row("FGSM", n, e).unmoved for n, e in (("linf", 0.1), ("l2", 0.5))}})
    saturated = train_policy(seed=1, weight_decay=0.0)
    losses = {}
    for loss in ("ce", "cw"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            losses[loss] = policy_return_vs_eps(saturated, eps={"linf": [0.1], "l2": [0.25, 0.5]},
                                                methods=("fgsm", "pgd", "noise"),
                                                episodes=args.ablation_episodes, seed=0, loss=loss)
    wall = time.perf_counter() - t0

    lines = [f"# Attacks on a CartPole policy: one run ({wall:.0f} s wall, one thread; training "
             f"{t_train:.1f} s, the curve {t_curves:.0f} s)", "",
             "## The curve: cross-entropy against the greedy action (Huang et al.)", "", curve.table(),
             f"## Seeds and training choices: mean return over {args.ablation_episodes} episodes", "",
             "| training | seed | clean | FGSM L∞ 0.1 | noise L∞ 0.1 | FGSM L2 0.5 | noise L2 0.5 | "
             "FGSM unmoved L∞ / L2 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a in ablation:
        lines.append(f"| {a['variant']} | {a['seed']} | {a['clean']:.1f} | {a['FGSM_linf']:.1f} | "
                     f"{a['noise_linf']:.1f} | {a['FGSM_l2']:.1f} | {a['noise_l2']:.1f} | "
                     f"{a['unmoved_linf']:.2f} / {a['unmoved_l2']:.2f} |")
    lines += ["", "## The saturated policy (no weight decay, seed 1): loss \"ce\" against \"cw\"", ""]
    for loss, c in losses.items():
        lines += [f"### loss = {loss!r} (unmoved: " + ", ".join(
            f"{r.method} {r.norm} {r.eps:g}: {r.unmoved:.2f}" for r in c.rows if r.method in ("FGSM", "PGD")) + ")",
            "", c.table()]
    (OUT / "policy.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (OUT / "policy.json").write_text(json.dumps({"curve": curve.to_dict(), "ablation": ablation,
                                                 "saturated": {k: v.to_dict() for k, v in losses.items()},
                                                 "wall_s": wall}, indent=1) + "\n",
                                     encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
