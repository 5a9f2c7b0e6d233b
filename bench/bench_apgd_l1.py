"""L1-APGD (Croce & Hein 2021) against PGD-L1 and ART's APGD with ``norm=1``: robust accuracy vs ε.

The standard small CNN on Fashion-MNIST of ``bench_pgd.py`` / ``bench_strong.py`` (cached
checkpoint in ``bench/results``, or trained here the same way), the first ``--n`` test images, L1
radii ``--eps``; each contender gets ``--steps`` gradient steps per point and one run (no restarts):

* ``pgd-l1``   advlab ``PGD(norm="l1")``: SLIDE-style sparse steps (Tramèr & Boneh 2019, the top 5%
               of ``|g|``), default ``α = 2.5ε/steps``, random start, ball projection then clip;
* ``apgd-l1``  advlab ``APGD(norm="l1")``: L1-APGD (adaptive sparsity and step size, the exact
               projection onto L1-ball ∩ box);
* ``art-apgd`` ART ``AutoProjectedGradientDescent(norm=1)`` (CE, ``eps_step = 2ε`` as the 2020
               paper's η⁽⁰⁾), when ART is installed: the 2020 APGD with a dense ``g/‖g‖₁`` step
               and ball projection then clip, not the 2021 L1-APGD;
* ``apgdt-l1`` (``--apgdt``) advlab ``APGDT(norm="l1")`` with 9 targets, once, for reference.

Contenders run interleaved (A B C, A B C, … per ε, ``--rounds`` times); every output is checked
(inside the L1 ball, within float rounding, and the box) and robust points recomputed with one
forward pass. Time per point is the median over rounds of wall and CPU seconds divided by ``n``;
ratios are medians of the per-round ratios.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv-bench/bin/python bench/bench_apgd_l1.py

Writes ``bench/results/apgd_l1.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

import _common

logger = logging.getLogger("bench_apgd_l1")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def pgd_l1(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, seed: int) -> Tensor:
    from advlab.attacks import PGD

    return PGD(eps=eps, norm="l1", steps=steps)(model, x, y, generator=torch.Generator().manual_seed(seed)).x_adv


def apgd_l1(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, seed: int) -> Tensor:
    from advlab.attacks.apgd import APGD

    return APGD(eps=eps, norm="l1", steps=steps)(model, x, y, generator=torch.Generator().manual_seed(seed)).x_adv


def apgdt_l1(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, seed: int) -> Tensor:
    from advlab.attacks.apgd import APGDT

    return APGDT(eps=eps, norm="l1", steps=steps, early_stop=True)(
        model, x, y, generator=torch.Generator().manual_seed(seed)).x_adv


def art_apgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, seed: int) -> Tensor:
    import numpy as np
    from art.attacks.evasion import AutoProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    np.random.seed(seed)  # ART draws its random start from NumPy's global RNG
    atk = AutoProjectedGradientDescent(estimator=clf, norm=1, eps=eps, eps_step=2 * eps, max_iter=steps,
                                       nb_random_init=1, batch_size=x.shape[0], loss_type="cross_entropy",
                                       verbose=False)
    return torch.from_numpy(atk.generate(x=x.numpy(), y=y.numpy())).to(x.dtype)


CONTENDERS: dict[str, Callable[..., Tensor]] = {"pgd-l1": pgd_l1, "apgd-l1": apgd_l1, "art-apgd": art_apgd}
LABELS = {
    "pgd-l1": "advlab `PGD(norm=\"l1\")` (top 5% of \\|g\\|, α = 2.5ε/steps)",
    "apgd-l1": "advlab `APGD(norm=\"l1\")` (L1-APGD, Croce & Hein 2021)",
    "art-apgd": "ART `AutoProjectedGradientDescent(norm=1)` (2020 APGD, dense g/‖g‖₁ step)",
    "apgdt-l1": "advlab `APGDT(norm=\"l1\")`, 9 targets (9× the budget)",
}


def check(x_adv: Tensor, x: Tensor, eps: float) -> None:
    d = x[0].numel()
    dist = (x_adv.double() - x.double()).flatten(1).abs().sum(1)
    slack = eps * 1e-5 + 2 * torch.finfo(torch.float32).eps * d
    if not (bool((dist <= eps + slack).all()) and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1):
        raise AssertionError(f"outside the threat model: max L1 {float(dist.max())} > {eps}")


def robust(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--eps", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--apgdt", action="store_true", help="also APGD-T-L1 (9 targets), once per ε")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=RESULTS)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    _common.start(args.threads)

    from bench_strong import Config, standard_model
    from advlab.data import load_dataset

    model = standard_model(Config(), args.cache).eval()
    test = load_dataset("fashion-mnist", split="test")
    x, y = test.x[: args.n], test.y[: args.n]
    clean = robust(model, x, y)
    names = [k for k in CONTENDERS if k != "art-apgd" or _has("art")]
    rows: list[dict[str, Any]] = []
    for eps in args.eps:
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
        acc: dict[str, float] = {}
        left: dict[str, Tensor] = {}
        for r in range(args.rounds):
            for name in names:
                w0, c0 = time.perf_counter(), time.process_time()
                x_adv = CONTENDERS[name](model, x, y, eps, args.steps, args.seed)
                times[name].append((time.perf_counter() - w0, time.process_time() - c0))
                check(x_adv, x, eps)
                still = robust(model, x_adv, y) & clean
                if r == 0:
                    acc[name], left[name] = float(still.float().mean()), still
                logger.info("eps %g round %d %s: robust %.4f, %.2f s", eps, r, name, float(still.float().mean()),
                            times[name][-1][0])
        if args.apgdt:
            w0, c0 = time.perf_counter(), time.process_time()
            x_adv = apgdt_l1(model, x, y, eps, args.steps, args.seed)
            times["apgdt-l1"] = [(time.perf_counter() - w0, time.process_time() - c0)]
            check(x_adv, x, eps)
            still = robust(model, x_adv, y) & clean
            acc["apgdt-l1"], left["apgdt-l1"] = float(still.float().mean()), still
        for name in times:
            wall = statistics.median(t[0] for t in times[name])
            cpu = statistics.median(t[1] for t in times[name])
            row = {"eps": eps, "contender": name, "robust_accuracy": acc[name],
                   "wall_ms_per_point": 1e3 * wall / args.n, "cpu_ms_per_point": 1e3 * cpu / args.n,
                   "rounds": len(times[name])}
            if name != "apgd-l1":
                base = times["apgd-l1"]
                row["wall_ratio_to_apgd"] = statistics.median(a[0] / b[0] for a, b in zip(times[name], base))
                row["cpu_ratio_to_apgd"] = statistics.median(a[1] / b[1] for a, b in zip(times[name], base))
                row["broken_only_by_apgd"] = int((left[name] & ~left["apgd-l1"]).sum())
                row["broken_only_by_this"] = int((left["apgd-l1"] & ~left[name]).sum())
            rows.append(row)
    result = {"command": "OMP_NUM_THREADS=1 PYTHONPATH=src " + Path(sys.executable).as_posix() + " "
              + " ".join(["bench/bench_apgd_l1.py", *(argv if argv is not None else sys.argv[1:])]),
              "n": args.n, "clean_accuracy": float(clean.float().mean()), "steps": args.steps,
              "rows": rows, "versions": _common.versions(), "revision": _common.git_revision()}
    text = render(result)
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "apgd_l1.md").write_text(f"`{result['command']}`\n\n" + text, encoding="utf-8")
    (args.results / "apgd_l1.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def render(result: dict[str, Any]) -> str:
    lines = [f"Fashion-MNIST small CNN, first {result['n']} test images (clean accuracy "
             f"{result['clean_accuracy']:.3f}; robust accuracy over all {result['n']}), {result['steps']} "
             f"steps, one run each; revision {result['revision']}, "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             "| L1 ε | contender | robust acc. | ms/point wall | ms/point CPU | CPU ÷ APGD-L1 | "
             "broken only by APGD-L1 / only by it |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ratio = f"{r['cpu_ratio_to_apgd']:.2f}×" if "cpu_ratio_to_apgd" in r else "1"
        only = (f"{r['broken_only_by_apgd']} / {r['broken_only_by_this']}" if "broken_only_by_apgd" in r else "")
        lines.append(f"| {r['eps']:g} | {LABELS[r['contender']]} | {r['robust_accuracy']:.3f} | "
                     f"{r['wall_ms_per_point']:.2f} | {r['cpu_ms_per_point']:.2f} | {ratio} | {only} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
