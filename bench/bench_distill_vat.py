"""Defensive distillation and virtual adversarial training on Fashion-MNIST (issue #5 studies).

(a) Distillation at T = 100 (Papernot et al. 2016). Three small CNNs (``small-cnn``) trained on
    the same ``--n-train`` (20,000) training images, same epochs, batch size and Adam (lr
    ``--lr`` 1e-3 for the standard model, ``--distill-lr`` 1e-2 for teacher and student, whose
    logits must grow about T-fold at the same step count): a standard model (T = 1), a teacher at T = 100 (``Standard(temperature=100)``) and the
    student distilled from it at T = 100 (``distill``), deployed at T = 1. On the first
    ``--n-eval`` (500) test images, counted over the points each model classifies correctly:
    the success of FGSM and PGD-20 with the cross-entropy and of PGD-20 with the C&W margin loss at
    L∞ ε = 0.1, the share of points whose cross-entropy input gradient is exactly zero, and the
    gradient-masking audit (``advlab.evaluation.audit``, 200 points, 5 PGD steps). Clean accuracy
    on the whole test split (10,000).
(b) VAT with ``--labels`` (1,000, 100 per class) labels, the rest of the same 20,000-image subset
    unlabelled: the same small CNN trained on the labels alone (``Standard``) vs
    ``VAT(eps=--vat-eps, semi_supervised=True)`` with ``--ub`` unlabelled images per step, both for
    ``--vat-epochs`` epochs over the labels (batch 64, Adam, lr 1e-3, the same seed). Test accuracy
    on the whole test split; the issue's target is at least +3 points.

Timing: the trainer's wall and CPU seconds (``time.process_time``) per run; torch on
``--threads`` (1) threads. The machine is shared with other jobs, so wall seconds are noisy.

Run (parts can run as separate processes, then ``--part report`` merges):
``.venv/bin/python bench/bench_distill_vat.py --part a`` and ``--part b`` (``--vat-epochs``,
``--vat-eps``, ``--entropy-min`` for VAT + EntMin, ``--tag`` to keep several part-b settings side
by side), then ``--part report``. Writes ``bench/results/distill_vat_a.json``,
``bench/results/distill_vat_b<tag>.json`` and ``bench/results/distill_vat.md``. The recorded
runs: ``--part a``; ``--part b`` (30 epochs; its JSON renamed ``distill_vat_b-e30.json``);
``--part b --vat-epochs 60 --tag=-e60`` and ``--part b --vat-epochs 60 --entropy-min
--tag=-e60-entmin`` (concurrently); ``--part b --vat-eps 4.0 --tag=-e30-eps4`` and ``--part b
--vat-eps 6.0 --tag=-e30-eps6`` (concurrently); ``--part b --vat-eps 1.0 --tag=-e30-eps1`` and
``--part b --ub 256 --tag=-e30-ub256`` (concurrently).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab.attacks import FGSM, PGD
from advlab.data import load_dataset
from advlab.defenses.distillation import distill
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.defenses.vat import VAT
from advlab.evaluation.audit import audit
from advlab.evaluation.robustness import provenance
from advlab.models.zoo import build_seeded

logger = logging.getLogger("bench_distill_vat")
RESULTS = Path(__file__).resolve().parent / "results"


def _build(seed: int, arch: str = "small-cnn") -> nn.Module:
    return build_seeded(arch, in_shape=(1, 28, 28), num_classes=10, seed=seed)


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                   for i in range(0, x.shape[0], 1000)) / x.shape[0]


def _subset(n: int, seed: int) -> tuple[Tensor, Tensor]:
    ds = load_dataset("fashion-mnist", split="train")
    perm = torch.randperm(ds.x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return ds.x[perm], ds.y[perm]


def _timing(result: Any) -> dict[str, float]:
    return {"wall_s": round(sum(h["seconds"] for h in result.history), 1),
            "cpu_s": round(sum(h["cpu_seconds"] for h in result.history), 1)}


def _attack_row(name: str, model: nn.Module, x: Tensor, y: Tensor, xt: Tensor, yt: Tensor,
                eps: float, steps: int) -> dict[str, Any]:
    with torch.no_grad():
        logits = model(x)
    keep = logits.argmax(1) == y
    xc, yc = x[keep], y[keep]
    row: dict[str, Any] = {"model": name, "clean_accuracy": _accuracy(model, xt, yt),
                           "points": int(keep.sum()), "of": int(x.shape[0]),
                           "median_max_logit": float(logits.abs().amax(1).median())}
    xg = xc.clone().requires_grad_(True)
    g, = torch.autograd.grad(F.cross_entropy(model(xg), yc, reduction="sum"), xg)
    row["zero_ce_gradient"] = float((g.flatten(1) == 0).all(1).float().mean())
    for key, attack in (("fgsm_ce", FGSM(eps=eps)), ("pgd_ce", PGD(eps=eps, steps=steps)),
                        ("pgd_cw", PGD(eps=eps, steps=steps, loss="cw"))):
        c0 = time.process_time()
        gen = torch.Generator().manual_seed(0)
        success = torch.cat([attack(model, xc[i:i + 250], yc[i:i + 250], generator=gen).success
                             for i in range(0, xc.shape[0], 250)])
        row[key] = float(success.float().mean())
        row[key + "_cpu_s"] = round(time.process_time() - c0, 1)
    c0 = time.process_time()
    report = audit(model, x[:200], y[:200], norm="linf", eps=eps, steps=5)
    row["audit_passed"] = report.passed
    row["audit_failed"] = [c.name for c in report.failed_checks]
    row["audit_cpu_s"] = round(time.process_time() - c0, 1)
    logger.info("%s: %s", name, {k: v for k, v in row.items() if not k.endswith("_s")})
    return row


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    x, y = _subset(args.n_train, args.seed)
    test = load_dataset("fashion-mnist", split="test")
    xt, yt = test.x, test.y
    xe, ye = xt[:args.n_eval], yt[:args.n_eval]
    common = dict(epochs=args.epochs, batch_size=128, seed=args.seed, progress=False)
    standard = _build(args.seed + 1)  # the student's initialisation
    std_hist = train(standard, Standard(), x, y, lr=args.lr, **common)
    result = distill(_build, x, y, temperature=args.temperature, lr=args.distill_lr, **common)
    rows = [_attack_row("standard (T = 1)", standard, xe, ye, xt, yt, args.eps, args.steps),
            _attack_row(f"teacher (trained at T = {args.temperature:g}, read at T = 1)", result.teacher,
                        xe, ye, xt, yt, args.eps, args.steps),
            _attack_row(f"distilled student (T = {args.temperature:g}, deployed at T = 1)", result.student,
                        xe, ye, xt, yt, args.eps, args.steps)]
    return {"rows": rows, "training": {"standard": _timing(std_hist), "teacher": _timing(result.teacher_history),
                                       "student": _timing(result.student_history)},
            "settings": {"n_train": args.n_train, "epochs": args.epochs, "lr": args.lr,
                         "distill_lr": args.distill_lr, "eps": args.eps,
                         "steps": args.steps, "temperature": args.temperature, "n_eval": args.n_eval,
                         "seed": args.seed, "threads": torch.get_num_threads(),
                                       "lr_schedule": args.lr_schedule, "arch": args.arch},
            "provenance": provenance(seed=args.seed)}


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    x, y = _subset(args.n_train, args.seed)
    test = load_dataset("fashion-mnist", split="test")
    per_class = args.labels // 10
    labelled = torch.cat([torch.nonzero(y == c)[:per_class, 0] for c in range(10)])
    rest = torch.ones(x.shape[0], dtype=torch.bool)
    rest[labelled] = False
    xl, yl, xu = x[labelled], y[labelled], x[rest]
    common = dict(epochs=args.vat_epochs, batch_size=64, lr=1e-3, seed=args.seed, progress=False,
                  lr_schedule=args.lr_schedule)
    if args.monitor:  # a learning curve only: nothing is selected on it, the last epoch is reported
        common.update(x_val=test.x[-args.monitor:], y_val=test.y[-args.monitor:])
    runs = []
    # interleaved: labels alone, VAT (one pair; each run is minutes long)
    base = _build(args.seed, args.arch)
    h = train(base, Standard(), xl, yl, **common)
    runs.append({"model": f"labels alone ({xl.shape[0]})", "test_accuracy": _accuracy(base, test.x, test.y),
                 "loss_curve": h.loss, "val_curve": [e["val_accuracy"] for e in h.history], **_timing(h)})
    logger.info("labels alone: %.4f", runs[-1]["test_accuracy"])
    for eps in args.vat_eps:
        vat = _build(args.seed, args.arch)
        recipe = VAT(eps=eps, xi=args.xi, alpha=args.alpha, semi_supervised=True, entropy_min=args.entropy_min)
        h = train(vat, recipe, xl, yl, x_unlabelled=xu, unlabelled_batch_size=args.ub, **common)
        name = "VAT + EntMin" if args.entropy_min else "VAT"
        runs.append({"model": f"{name} eps={eps:g} ({xl.shape[0]} labels + {xu.shape[0]} unlabelled)",
                     "recipe": recipe.card(), "test_accuracy": _accuracy(vat, test.x, test.y),
                     "loss_curve": h.loss, "val_curve": [e["val_accuracy"] for e in h.history],
                     "logs": h.history[-1]["logs"], **_timing(h)})
        logger.info("VAT eps=%g: %.4f", eps, runs[-1]["test_accuracy"])
    return {"runs": runs, "settings": {"n_train": args.n_train, "labels": int(xl.shape[0]),
                                       "unlabelled": int(xu.shape[0]), "epochs": args.vat_epochs,
                                       "batch_size": 64, "unlabelled_batch_size": args.ub,
                                       "steps": args.vat_epochs * -(-xl.shape[0] // 64),
                                       "seed": args.seed, "threads": torch.get_num_threads(),
                                       "lr_schedule": args.lr_schedule, "arch": args.arch},
            "provenance": provenance(seed=args.seed)}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def report() -> str:
    lines = ["# Defensive distillation and VAT on Fashion-MNIST (small-cnn)", "",
             "Produced by `bench/bench_distill_vat.py` (see its docstring for the protocol). The machine "
             "was shared with other jobs (2 cores, load ~8-10): wall seconds are noisy, CPU seconds less so.", ""]
    a_path = RESULTS / "distill_vat_a.json"
    if a_path.is_file():
        a = json.loads(a_path.read_text())
        s = a["settings"]
        lines += [f"## (a) Defensive distillation at T = {s['temperature']:g}", "",
                  f"{s['n_train']} training images, {s['epochs']} epochs each (Adam, batch 128; lr {s['lr']:g} for "
                  f"the standard model, {s['distill_lr']:g} for teacher and student, whose logits must grow "
                  f"~T-fold), "
                  f"seed {s['seed']}, torch threads {s['threads']}. Attacks: L∞ ε = {s['eps']:g}, PGD "
                  f"{s['steps']} steps (α = 2.5ε/steps, random start), on the first {s['n_eval']} test images, "
                  "success counted over the points each model classifies correctly (denominator in "
                  "`points`). Clean accuracy on all 10,000 test images.", "",
                  "| model | clean acc | points | median max |logit| | zero CE grad | FGSM (CE) | PGD (CE) "
                  "| PGD (C&W margin) | audit |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in a["rows"]:
            verdict = "passed" if r["audit_passed"] else "FLAGGED: " + ", ".join(r["audit_failed"])
            lines.append(f"| {r['model']} | {_pct(r['clean_accuracy'])} | {r['points']}/{r['of']} | "
                         f"{r['median_max_logit']:.1f} | {_pct(r['zero_ce_gradient'])} | {_pct(r['fgsm_ce'])} | "
                         f"{_pct(r['pgd_ce'])} | {_pct(r['pgd_cw'])} | {verdict} |")
        t = a["training"]
        lines += ["", "Training time (wall / CPU s): " + ", ".join(
            f"{k} {v['wall_s']} / {v['cpu_s']}" for k, v in t.items()), ""]
    rows, gains = [], {}
    for b_path in sorted(RESULTS.glob("distill_vat_b*.json")):
        b = json.loads(b_path.read_text())
        st = b["settings"]
        base = b["runs"][0]["test_accuracy"]
        arch, sched = st.get("arch", "small-cnn"), st.get("lr_schedule", "constant")
        for r in b["runs"][1:]:
            rc = r["recipe"]
            gain = r["test_accuracy"] - base
            key = (arch, st["n_train"], st["epochs"], st["unlabelled_batch_size"], rc["eps"], rc["xi"],
                   rc["alpha"], rc["entropy_min"], sched)
            gains.setdefault(key, []).append((st["seed"], base, r["test_accuracy"]))
            rows.append(f"| {arch} | {st['n_train'] - st['labels']} | {st['epochs']} ({st['steps']}) | "
                        f"{st['unlabelled_batch_size']} | {rc['eps']:g} | {rc['xi']:g} | {rc['alpha']:g} | "
                        f"{'yes' if rc['entropy_min'] else 'no'} | {sched} | {st['seed']} | {_pct(base)} | "
                        f"{_pct(r['test_accuracy'])} | {100 * gain:+.1f} | {r['cpu_s']} | `{b_path.name}` |")
    if rows:
        lines += ["## (b) Virtual adversarial training, semi-supervised: every setting run", "",
                  "1,000 labels (100 per class, the first of each class in a seeded permutation of the "
                  "first `n_train` training images) and the rest of those images unlabelled. Both models "
                  "of a row (same network, same seed, same initial weights) train for the same number of "
                  "steps: batches of 64 labelled images (+ the unlabelled batch for VAT), Adam lr 1e-3 "
                  "with the row's schedule (linear: decayed to 0). Test accuracy on all 10,000 test images "
                  "after the last epoch (no early stopping, nothing selected on the test set).", "",
                  "| network | unlabelled | epochs (steps) | unlabelled/step | ε (L2) | ξ | α | EntMin | "
                  "lr schedule | seed | labels alone | VAT | gain (points) | VAT CPU s | file |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|", *rows, ""]
        lines += ["Settings run with several seeds (seed = labelled subset, initial weights and batch order):",
                  "", "| network | epochs | ε | EntMin | schedule | seeds | labels alone (mean) | VAT (mean) | "
                  "gain per seed (points) | mean gain |", "|---|---:|---:|---|---|---|---:|---:|---|---:|"]
        for key, runs in gains.items():
            if len(runs) < 2:
                continue
            arch, _, epochs, _, eps, _, _, entmin, sched = key
            base = sum(r[1] for r in runs) / len(runs)
            vat = sum(r[2] for r in runs) / len(runs)
            per = ", ".join(f"{100 * (r[2] - r[1]):+.1f}" for r in sorted(runs))
            verdict = "meets" if vat - base >= 0.03 else "misses"
            lines.append(f"| {arch} | {epochs} | {eps:g} | {'yes' if entmin else 'no'} | {sched} | "
                         f"{', '.join(str(r[0]) for r in sorted(runs))} | {_pct(base)} | {_pct(vat)} | {per} | "
                         f"**{100 * (vat - base):+.1f}** ({verdict} the +3 target) |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("a", "b", "report", "all"), default="all")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam lr of the standard model")
    parser.add_argument("--distill-lr", type=float, default=1e-2,
                        help="Adam lr of teacher and student: at T = 100 the logits must grow ~100x")
    parser.add_argument("--temperature", type=float, default=100.0)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--vat-epochs", type=int, default=30)
    parser.add_argument("--vat-eps", type=float, nargs="+", default=[2.0])
    parser.add_argument("--ub", type=int, default=128)
    parser.add_argument("--entropy-min", action="store_true")
    parser.add_argument("--lr-schedule", default="constant", help="part b's schedule, both models")
    parser.add_argument("--arch", default="small-cnn", help="part b's network, both models")
    parser.add_argument("--monitor", type=int, default=0,
                        help="part b: test accuracy on the last N test images after every epoch (a curve)")
    parser.add_argument("--xi", type=float, default=1e-6, help="VAT's finite-difference step ξ")
    parser.add_argument("--alpha", type=float, default=1.0, help="VAT's weight α of the LDS term")
    parser.add_argument("--tag", default="", help="suffix of part b's JSON, to keep several settings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part in ("a", "all"):
        (RESULTS / "distill_vat_a.json").write_text(json.dumps(part_a(args), indent=1) + "\n")
    if args.part in ("b", "all"):
        (RESULTS / f"distill_vat_b{args.tag}.json").write_text(json.dumps(part_b(args), indent=1) + "\n")
    (RESULTS / "distill_vat.md").write_text(report())
    print(report())


if __name__ == "__main__":
    main()
