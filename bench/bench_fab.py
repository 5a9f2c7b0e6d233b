"""FAB: advlab's FAB-T (L∞, at an ε) and FAB (L2, minimal norm) against torchattacks' FAB.

On the small CNN trained 2 epochs on Fashion-MNIST (the checkpoint ``bench_pgd.py`` and
``bench_minimal.py`` cache; trained here if missing) both libraries attack the same points: the
correctly classified ones among the first ``--n`` test images, in batches of 100, with the same
hyperparameters (steps, one restart, α_max 0.1, η 1.05, β 0.9).

Two pairs:

* **FAB-T L∞ at ε**: advlab ``FABT(eps=ε, norm="linf", steps=S, n_target_classes=9)`` against
  torchattacks ``FAB(model, norm="Linf", eps=ε, steps=S, n_restarts=1, multi_targeted=True,
  n_classes=10)``. Reported: robust accuracy over the attacked points (a point is broken when the
  model misclassifies the output and its L∞ distance is at most ε, rechecked here) and time.
* **FAB L2 minimal norm**: advlab ``FAB(norm="l2", steps=S)`` (ε = inf) against torchattacks
  ``FAB(model, norm="L2", eps=inf, steps=S, n_restarts=1)``. Reported: the median L2 distance
  over the attacked points (``inf`` for a point not broken) and time.

Timing: a warm-up call of every contender on 2 points, then ``--rounds`` rounds; in each round
the two contenders of a pair run back to back, A B in odd rounds and B A in even ones, and the
ratio advlab / torchattacks of that round's pair is taken; the median of those per-pair ratios is
reported (for wall seconds and for CPU seconds of this process, ``time.process_time``). Torch,
OpenMP and BLAS run on one thread (``--threads``). Both libraries are deterministic here (one
restart: no random start); later rounds must reproduce the first round's outputs.

Run: ``PYTHONPATH=src .venv-bench/bin/python bench/bench_fab.py`` (``bash bench/setup.sh`` builds
the venv). Writes ``<results>/fab.md`` and ``<results>/fab.json``; ``bench/FAB.md`` holds one run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import datetime as dt
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import _common  # bench/_common.py: provenance helpers shared by the bench scripts
from bench_minimal import Config as ModelConfig, trained_model

logger = logging.getLogger("bench_fab")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BATCH = 100

Contender = Callable[[Tensor, Tensor], Tensor]


def make_pairs(model: nn.Module, eps: float, steps: int) -> dict[str, tuple[Contender, Contender]]:
    import torchattacks

    from advlab.attacks import FAB, FABT

    def advlab(attack: Any) -> Contender:
        def run(x: Tensor, y: Tensor) -> Tensor:
            return torch.cat([attack(model, x[i:i + BATCH], y[i:i + BATCH]).x_adv for i in range(0, len(y), BATCH)])
        return run

    def peer(attack: Any) -> Contender:
        def run(x: Tensor, y: Tensor) -> Tensor:
            return torch.cat([attack(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH)])
        return run

    return {
        "fabt-linf": (advlab(FABT(eps=eps, norm="linf", steps=steps, n_target_classes=9)),
                      peer(torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                            multi_targeted=True, n_classes=10))),
        "fab-l2": (advlab(FAB(norm="l2", steps=steps)),
                   peer(torchattacks.FAB(model, norm="L2", eps=math.inf, steps=steps, n_restarts=1,
                                         n_classes=10))),
    }


@torch.no_grad()
def scores(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float) -> dict[str, Any]:
    wrong = model(x_adv).argmax(dim=1) != y
    delta = (x_adv - x).flatten(1).double()
    linf, l2 = delta.abs().amax(dim=1), delta.norm(dim=1)
    l2_broken = torch.where(wrong, l2, torch.full_like(l2, math.inf))
    return {
        "robust_accuracy_linf": float(1 - (wrong & (linf <= eps + 1e-6)).double().mean()),
        "success_rate": float(wrong.double().mean()),
        "median_l2": float(l2_broken.median()),  # torch's lower median; inf if under half broken
        "in_box": bool(((x_adv >= 0) & (x_adv <= 1)).all()),
        "finite": bool(torch.isfinite(x_adv).all()),
    }


def run_rounds(pairs: dict[str, tuple[Contender, Contender]], x: Tensor, y: Tensor, rounds: int
               ) -> dict[str, dict[str, Any]]:
    for ours, theirs in pairs.values():
        ours(x[:2], y[:2])
        theirs(x[:2], y[:2])
    out: dict[str, dict[str, Any]] = {}
    for name, (ours, theirs) in pairs.items():
        rec: dict[str, Any] = {"wall": {"advlab": [], "torchattacks": []},
                               "cpu": {"advlab": [], "torchattacks": []},
                               "first": {}, "repeatable": {"advlab": True, "torchattacks": True}}
        for r in range(rounds):
            order = [("advlab", ours), ("torchattacks", theirs)]
            if r % 2:
                order.reverse()
            for who, fn in order:
                t0, c0 = time.perf_counter(), time.process_time()
                x_adv = fn(x, y)
                rec["cpu"][who].append(time.process_time() - c0)
                rec["wall"][who].append(time.perf_counter() - t0)
                logger.info("%s round %d %-12s %.2f s wall, %.2f s cpu", name, r + 1, who,
                            rec["wall"][who][-1], rec["cpu"][who][-1])
                if who not in rec["first"]:
                    rec["first"][who] = x_adv
                else:
                    rec["repeatable"][who] &= bool(torch.equal(x_adv, rec["first"][who]))
        for kind in ("wall", "cpu"):
            ratios = [a / b for a, b in zip(rec[kind]["advlab"], rec[kind]["torchattacks"])]
            rec[f"{kind}_ratio_median"] = statistics.median(ratios)
            rec[f"{kind}_ratios"] = ratios
        out[name] = rec
    return out


def render(result: dict[str, Any]) -> str:
    cfg, res = result["config"], result["pairs"]
    a, b = res["fabt-linf"], res["fab-l2"]
    lines = [
        f"FAB on the small CNN trained 2 epochs on Fashion-MNIST (clean test accuracy "
        f"{result['model'].get('clean_accuracy', float('nan')):.3f}): the {result['n_attacked']} correctly "
        f"classified of the first {cfg['n']} test images, batches of {BATCH}, {cfg['steps']} steps, one "
        f"restart; {cfg['threads']} torch thread(s) on a shared {result['machine']['cpu_count']}-core machine; "
        f"{cfg['rounds']} rounds, A B / B A; time ratios are medians of per-round advlab/torchattacks ratios.",
        "",
        "| pair | advlab | torchattacks | ratio advlab/torchattacks |",
        "|---|---:|---:|---:|",
        f"| FAB-T L∞, ε = {cfg['eps']:.4g}: robust accuracy | {a['scores']['advlab']['robust_accuracy_linf']:.4f} | "
        f"{a['scores']['torchattacks']['robust_accuracy_linf']:.4f} | "
        f"{a['scores']['advlab']['robust_accuracy_linf'] / max(a['scores']['torchattacks']['robust_accuracy_linf'], 1e-12):.3f} |",
        f"| FAB-T L∞: wall s (median) | {statistics.median(a['wall']['advlab']):.2f} | "
        f"{statistics.median(a['wall']['torchattacks']):.2f} | {a['wall_ratio_median']:.3f} |",
        f"| FAB-T L∞: CPU s (median) | {statistics.median(a['cpu']['advlab']):.2f} | "
        f"{statistics.median(a['cpu']['torchattacks']):.2f} | {a['cpu_ratio_median']:.3f} |",
        f"| FAB L2 (ε = inf): median L2 | {b['scores']['advlab']['median_l2']:.4f} | "
        f"{b['scores']['torchattacks']['median_l2']:.4f} | "
        f"{b['scores']['advlab']['median_l2'] / b['scores']['torchattacks']['median_l2']:.3f} |",
        f"| FAB L2: success rate | {b['scores']['advlab']['success_rate']:.4f} | "
        f"{b['scores']['torchattacks']['success_rate']:.4f} | |",
        f"| FAB L2: wall s (median) | {statistics.median(b['wall']['advlab']):.2f} | "
        f"{statistics.median(b['wall']['torchattacks']):.2f} | {b['wall_ratio_median']:.3f} |",
        f"| FAB L2: CPU s (median) | {statistics.median(b['cpu']['advlab']):.2f} | "
        f"{statistics.median(b['cpu']['torchattacks']):.2f} | {b['cpu_ratio_median']:.3f} |",
        "",
        "Per-round ratios (wall): FAB-T " + ", ".join(f"{r:.3f}" for r in a["wall_ratios"])
        + "; FAB L2 " + ", ".join(f"{r:.3f}" for r in b["wall_ratios"]) + ".",
        "Checks: outputs in [0, 1] and finite: " + ", ".join(
            f"{p} {who} {'yes' if s['in_box'] and s['finite'] else 'NO'}"
            for p, r in res.items() for who, s in r["scores"].items())
        + "; identical in every round: " + ", ".join(
            f"{p} {who} {'yes' if ok else 'NO'}" for p, r in res.items() for who, ok in r["repeatable"].items()) + ".",
        "",
        f"advlab {result['code_revision']}, {result['date']}; "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="first N test images (default 200)")
    parser.add_argument("--eps", type=float, default=0.03, help="FAB-T's L∞ radius (default 0.03)")
    parser.add_argument("--steps", type=int, default=20, help="FAB steps (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per pair (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the trained model is cached (default: --results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    model_cfg = ModelConfig(n=args.n)
    args.results.mkdir(parents=True, exist_ok=True)
    model, card = trained_model(model_cfg, args.cache or args.results)
    model.eval()
    from advlab.data import load_dataset

    test = load_dataset(model_cfg.dataset, split="test")
    x, y = test.x[:args.n].contiguous(), test.y[:args.n].contiguous()
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    x, y = x[correct].contiguous(), y[correct].contiguous()
    logger.info("%d of the first %d test images are classified correctly; attacking those", len(y), args.n)

    pairs = run_rounds(make_pairs(model, args.eps, args.steps), x, y, args.rounds)
    for rec in pairs.values():
        rec["scores"] = {who: scores(model, x, y, x_adv, args.eps) for who, x_adv in rec.pop("first").items()}
    result: dict[str, Any] = {
        "benchmark": "fab",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": {"n": args.n, "eps": args.eps, "steps": args.steps, "rounds": args.rounds,
                   "threads": args.threads, "batch_size": BATCH},
        "model": card,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_at_end": os.getloadavg()},
        "versions": _common.versions(("torch", "advlab", "torchattacks", "numpy")),
        "code_revision": _common.git_revision(),
        "n_attacked": len(y),
        "pairs": pairs,
    }
    text = render(result)
    print("\n" + text)
    (args.results / "fab.md").write_text(text, encoding="utf-8")
    (args.results / "fab.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.results / "fab.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
