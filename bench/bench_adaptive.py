"""Obfuscated gradients on Fashion-MNIST (issue #13): robust accuracy of an input-quantised and of a
randomised small CNN under plain PGD and under the adaptive attacks of Athalye, Carlini & Wagner
(2018): BPDA (identity backward through the quantiser) and EOT (gradients averaged over 16 noisy
forward passes). The CNN is bench_pgd.py's cached model (trained 2 epochs). Robust accuracy is
over the n test points; the randomised model is judged by its expected prediction (32 fresh
noise samples, another seed) for both attacks.

    .venv/bin/python bench/bench_adaptive.py          # about 3 minutes on 2 cores

Writes bench/results/adaptive.md and adaptive.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    import bench_pgd
    from advlab.attacks import BPDA, EOT, PGD
    from advlab.data import load_dataset
    from advlab.defenses import Quantize, RandomNoise

    torch.set_num_threads(2)
    model, _ = bench_pgd.trained_model(bench_pgd.Config(), HERE / "results")
    model.eval()
    test = load_dataset("fashion-mnist", split="test").subset(500)
    x, y = test.x, test.y
    rows = []
    eps_list = (0.03, 0.05, 0.1)
    q = Quantize(levels=4)
    quantised = nn.Sequential(q, model).eval()
    noisy = RandomNoise(model, sigma=0.2, seed=0).eval()
    judge = EOT(RandomNoise(model, sigma=0.2, seed=1).eval(), samples=32)

    def robust(pred: torch.Tensor) -> float:
        return float((pred == y).float().mean())

    with torch.no_grad():
        clean_q = robust(quantised(x).argmax(1))
        clean_r = robust(judge(x).argmax(1))
    for e in eps_list:
        attack = PGD(eps=e, steps=40, step_size=e / 8)
        t0 = time.perf_counter()
        plain = attack(quantised, x, y).x_adv
        t1 = time.perf_counter()
        bpda = attack(BPDA(q, model), x, y).x_adv
        t2 = time.perf_counter()
        with torch.no_grad():
            rows.append({"model": "quantised (4 levels)", "eps": e, "clean": clean_q,
                         "plain_pgd": robust(quantised(plain).argmax(1)), "adaptive": robust(quantised(bpda).argmax(1)),
                         "adaptive_name": "BPDA-PGD", "seconds_plain": t1 - t0, "seconds_adaptive": t2 - t1})
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        t0 = time.perf_counter()
        plain = attack(noisy, x, y, generator=gen()).x_adv
        t1 = time.perf_counter()
        eot = attack(EOT(noisy, samples=16), x, y, generator=gen()).x_adv
        t2 = time.perf_counter()
        with torch.no_grad():
            rows.append({"model": "Gaussian noise σ = 0.2", "eps": e, "clean": clean_r,
                         "plain_pgd": robust(judge(plain).argmax(1)), "adaptive": robust(judge(eot).argmax(1)),
                         "adaptive_name": "EOT-PGD (16 samples)", "seconds_plain": t1 - t0,
                         "seconds_adaptive": t2 - t1})
        print(rows[-2], rows[-1], flush=True)
    lines = [f"`.venv/bin/python bench/bench_adaptive.py` ({time.strftime('%Y-%m-%d')}): bench_pgd.py's small CNN "
             "on 500 Fashion-MNIST test points, L∞ PGD-40 (step ε/8, no random start). Robust accuracy (%).", "",
             "| defended model | ε | clean | plain PGD | adaptive attack | adaptive | plain s | adaptive s |",
             "|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['eps']:g} | {100 * r['clean']:.1f} | {100 * r['plain_pgd']:.1f} | "
                     f"{r['adaptive_name']} | {100 * r['adaptive']:.1f} | {r['seconds_plain']:.1f} | "
                     f"{r['seconds_adaptive']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "adaptive.md").write_text(text, encoding="utf-8")
    (out / "adaptive.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
