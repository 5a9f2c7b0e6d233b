"""Adversarial training study on Fashion-MNIST: cost per epoch and robustness per recipe.

One small CNN (``small-cnn``, seed 0) is trained from the same initial weights, on the same first
``--n-train`` training images, for ``--epochs`` epochs (Adam, lr 1e-3, batch 128, seed 0) with
each recipe of :mod:`advlab.defenses` (training ε = ``--eps``):

* ``standard``   plain cross-entropy;
* ``fgsm-mix``   Goodfellow et al. 2015, α = 0.5, FGSM at ε;
* ``pgd``        Madry et al. 2018, PGD-7, step 2.5 ε / 7, random start;
* ``fast``       Wong et al. 2020, random start + one FGSM step of 1.25 ε;
* ``trades``     Zhang et al. 2019, β = 6, 7 KL-PGD steps (like-for-like with PGD-7);
* ``ensemble``   Tramèr et al. 2018, α = 0.5, FGSM from the model itself or one of two static
                 pre-trained models (the cached standard MLP and LeNet-5 of ``bench/results``).

Contenders are interleaved epoch by epoch (standard e1, fgsm-mix e1, ..., standard e2, ...):
each call of :func:`~advlab.defenses.training.train` resumes from its own checkpoint directory,
so load from the other helpers on this shared machine spreads over all of them. Per-epoch wall
and CPU seconds (``time.process_time``, one torch thread) come from the trainer's history.

Evaluation on the first ``--n-eval`` test images: clean accuracy, and robust accuracy at
ε = 0.1 under a strong white-box attack: worst case per point over PGD with cross-entropy and
PGD with the C&W margin loss, ``--steps`` steps and ``--restarts`` random restarts each
(early stop on success); a point counts as robust if it is classified correctly and survives
every run. Denominator: all n-eval points.

Ensemble study (Tramèr's claim): MI-FGSM (ε = 0.1, 10 steps, μ = 1) crafted on two held-out
standard models (the cached small ResNet, and a small CNN with seed 1 trained here like the
standard model) and transferred to the standard, FGSM-mix, ensemble and PGD models; transfer
success = error rate on the adversarial examples among the points the target classifies
correctly.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_defenses.py`` (about 30 minutes on
2 loaded cores). Writes ``bench/results/defenses.json`` and ``bench/results/defenses.md``;
models under ``bench/results/defenses/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import advlab
from _common import fashion_mnist, start, static_models
from advlab.attacks.gradient import MIFGSM, PGD
from advlab.defenses.adversarial import TRADES, EnsembleAdversarial, FastFGSM, FGSMMix, PGDTraining
from advlab.defenses.recipe import Standard
from advlab.defenses.training import read_training_state, train
from advlab.models import build_seeded, code_revision, load

logger = logging.getLogger("bench_defenses")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = RESULTS / "defenses"


def strong_robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                  steps: int, restarts: int, seed: int = 0) -> dict[str, Any]:
    """Clean and worst-case robust accuracy (PGD-CE and PGD-CW, restarts each), over all points."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    robust = correct.clone()
    per_attack = {}
    cpu0 = time.process_time()
    for loss in ("ce", "cw"):
        attack = PGD(eps=eps, steps=steps, restarts=restarts, loss=loss, early_stop=True)
        res = attack(model, x, y, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():  # recompute on the returned points
            survived = model(res.x_adv).argmax(1) == y
        assert bool(res.threat.contains(res.x_adv, x).all())
        per_attack[loss] = float((correct & survived).float().mean())
        robust &= survived
    return {"clean": float(correct.float().mean()), "robust": float(robust.float().mean()),
            "robust_ce": per_attack["ce"], "robust_cw": per_attack["cw"],
            "eval_cpu_s": time.process_time() - cpu0}


def transfer_success(source: torch.nn.Module, targets: dict[str, torch.nn.Module], x: torch.Tensor,
                     y: torch.Tensor, *, eps: float) -> dict[str, float]:
    x_adv = MIFGSM(eps=eps, steps=10, decay=1.0)(source, x, y).x_adv
    out = {}
    with torch.no_grad():
        for name, target in targets.items():
            ok = target(x).argmax(1) == y
            fooled = (target(x_adv).argmax(1) != y) & ok
            out[name] = float(fooled.sum()) / max(1, int(ok.sum()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-eval", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=40, help="PGD steps of the evaluation")
    parser.add_argument("--restarts", type=int, default=2, help="PGD restarts per loss")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="delete cached training checkpoints")
    parser.add_argument("--only", nargs="*", default=None, help="subset of recipes")
    parser.add_argument("--cascade", action="store_true",
                        help="also evaluate with advlab's Cascade(strong_attacks): APGD-CE → APGD-T")
    args = parser.parse_args()
    start(args.threads)
    if args.fresh and WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    x, y, x_eval, y_eval = fashion_mnist(args.n_train, args.n_eval)
    eps = args.eps
    statics = static_models()
    recipes = {
        "standard": Standard(),
        "fgsm-mix": FGSMMix(eps=eps, alpha=0.5),
        "pgd": PGDTraining(eps=eps, steps=7),
        "fast": FastFGSM(eps=eps),
        "trades": TRADES(eps=eps, beta=6.0, steps=7),
        "ensemble": EnsembleAdversarial(eps=eps, alpha=0.5, static_models=statics),
    }
    if args.only:
        recipes = {k: v for k, v in recipes.items() if k in args.only}
    settings = dict(batch_size=128, lr=1e-3, optimizer="adam", seed=0, progress=False)
    models = {name: build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
              for name in recipes}
    for epoch in range(1, args.epochs + 1):  # interleaved: every recipe's epoch e, then e + 1
        for name, recipe in recipes.items():
            state = read_training_state(WORK / f"{name}-ckpt")
            if state is not None and state["epoch"] >= epoch:
                continue  # a re-run (e.g. --cascade) reuses the finished epochs
            res = train(models[name], recipe, x, y, epochs=epoch, checkpoint_dir=WORK / f"{name}-ckpt",
                        **settings)
            h = res.history[-1]
            logger.info("%s epoch %d: loss %.4f, %.1f s wall, %.1f s CPU", name, epoch, h["loss"],
                        h["seconds"], h["cpu_seconds"])
    rows: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes.items():
        # resumes the finished run: loads its weights, returns its whole history
        done = train(models[name], recipe, x, y, epochs=args.epochs, checkpoint_dir=WORK / f"{name}-ckpt",
                     **settings)
        model = models[name].eval()
        hist = done.history
        row = {"recipe": recipe.card(), "history": hist,
               "epoch_wall_s": sum(h["seconds"] for h in hist) / len(hist),
               "epoch_cpu_s": sum(h["cpu_seconds"] for h in hist) / len(hist)}
        row.update(strong_robust(model, x_eval, y_eval, eps=0.1, steps=args.steps,
                                 restarts=args.restarts))
        if args.cascade:
            from advlab.evaluation.cascade import Cascade, strong_attacks

            cpu0 = time.process_time()
            cascade = Cascade(strong_attacks(0.1, "linf")).run(
                model, x_eval, y_eval, generator=torch.Generator().manual_seed(0), progress=False)
            with torch.no_grad():
                ok = (model(x_eval).argmax(1) == y_eval) & (model(cascade.x_adv).argmax(1) == y_eval)
            row["robust_cascade"] = float(ok.float().mean())
            row["cascade_cpu_s"] = time.process_time() - cpu0
        logger.info("%s: clean %.3f robust %.3f", name, row["clean"], row["robust"])
        rows[name] = row
        train(model, recipe, x, y, epochs=args.epochs, checkpoint_dir=WORK / f"{name}-ckpt",
              save_to=WORK / f"small-cnn-{name}", card={"dataset": "fashion-mnist",
                                                       "clean_accuracy": row["clean"]}, **settings)

    transfer: dict[str, Any] = {}
    if "fgsm-mix" in models and "ensemble" in models:
        held_out = {"small-resnet": load(RESULTS / "small-resnet-fashion-mnist-seed0-e1-n30000")}
        cnn1 = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=1)
        train(cnn1, Standard(), x, y, epochs=args.epochs, checkpoint_dir=WORK / "cnn-seed1-ckpt",
              **{**settings, "seed": 1})
        held_out["small-cnn-seed1"] = cnn1.eval()
        targets = {k: models[k] for k in ("standard", "fgsm-mix", "ensemble", "pgd") if k in models}
        for src_name, src in held_out.items():
            transfer[src_name] = transfer_success(src, targets, x_eval, y_eval, eps=0.1)
            logger.info("MI-FGSM from %s: %s", src_name, transfer[src_name])

    std = rows.get("standard")
    summary: dict[str, Any] = {}
    if std and "pgd" in rows:
        k = 7
        summary["pgd_epoch_over_standard_cpu"] = rows["pgd"]["epoch_cpu_s"] / std["epoch_cpu_s"]
        summary["pgd_epoch_over_standard_wall"] = rows["pgd"]["epoch_wall_s"] / std["epoch_wall_s"]
        summary["pgd_target"] = 1.1 * (k + 1)
    if "pgd" in rows and "fast" in rows:
        summary["fast_time_over_pgd_cpu"] = rows["fast"]["epoch_cpu_s"] / rows["pgd"]["epoch_cpu_s"]
        summary["fast_time_over_pgd_wall"] = rows["fast"]["epoch_wall_s"] / rows["pgd"]["epoch_wall_s"]
        summary["fast_robust_over_pgd"] = rows["fast"]["robust"] / max(rows["pgd"]["robust"], 1e-12)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "advlab": advlab.__version__, "code_revision": code_revision(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": args.threads, "args": vars(args)}
    (RESULTS / "defenses.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "transfer": transfer, "summary": summary}, indent=1))
    (RESULTS / "defenses.md").write_text(render(meta, rows, transfer, summary, args))
    print((RESULTS / "defenses.md").read_text())


def render(meta: dict, rows: dict, transfer: dict, summary: dict, args: argparse.Namespace) -> str:
    std = rows.get("standard")
    lines = [
        "# Adversarial training on Fashion-MNIST (`bench/bench_defenses.py`)", "",
        f"{meta['date']}, advlab {meta['advlab']} ({meta['code_revision'][:12]}), torch {meta['torch']}, "
        f"{meta['threads']} torch thread(s), on 2 CPU cores shared with other jobs (load average ~10): "
        "wall seconds are inflated and noisy, CPU seconds (process_time) are the fairer measure.", "",
        f"small-cnn, seed 0, first {args.n_train} training images, {args.epochs} epochs, Adam lr 1e-3, "
        f"batch 128, training ε = {args.eps}. Recipes interleaved epoch by epoch (resume from checkpoints).",
        f"Evaluation: first {args.n_eval} test images; robust = correct and survives PGD-CE and PGD-CW "
        f"(C&W margin), {args.steps} steps, {args.restarts} restarts each, ε = 0.1, early stop; "
        f"denominator {args.n_eval} (all points).", "",
        "| recipe | epoch CPU s | × standard (CPU) | epoch wall s | × standard (wall) | clean acc | "
        "robust acc (CE ∧ CW) | robust CE only | robust CW only | APGD cascade |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        rc = r["epoch_cpu_s"] / std["epoch_cpu_s"] if std else float("nan")
        rw = r["epoch_wall_s"] / std["epoch_wall_s"] if std else float("nan")
        cascade = f"{r['robust_cascade']:.3f}" if "robust_cascade" in r else "—"
        lines.append(f"| {name} | {r['epoch_cpu_s']:.1f} | {rc:.2f} | {r['epoch_wall_s']:.1f} | {rw:.2f} | "
                     f"{r['clean']:.3f} | {r['robust']:.3f} | {r['robust_ce']:.3f} | {r['robust_cw']:.3f} | "
                     f"{cascade} |")
    lines.append("")
    if "pgd_epoch_over_standard_cpu" in summary:
        s = summary
        ok = "meets" if s["pgd_epoch_over_standard_cpu"] <= s["pgd_target"] else "MISSES"
        lines.append(f"- PGD-7 epoch / standard epoch: {s['pgd_epoch_over_standard_cpu']:.2f} (CPU), "
                     f"{s['pgd_epoch_over_standard_wall']:.2f} (wall); target ≤ 1.1 × (7 + 1) = "
                     f"{s['pgd_target']:.1f}: {ok} (CPU).")
    if "fast_time_over_pgd_cpu" in summary:
        s = summary
        t_ok = s["fast_time_over_pgd_cpu"] < 1 / 3
        r_ok = s["fast_robust_over_pgd"] >= 0.9
        lines.append(f"- Fast / PGD: time {s['fast_time_over_pgd_cpu']:.2f} (CPU), "
                     f"{s['fast_time_over_pgd_wall']:.2f} (wall), target < 0.33: {'yes' if t_ok else 'NO'}; "
                     f"robust accuracy {s['fast_robust_over_pgd']:.2f} of PGD's, target ≥ 0.90: "
                     f"{'yes' if r_ok else 'NO'}.")
    if transfer:
        lines += ["", "## Transfer of MI-FGSM (ε = 0.1, 10 steps, μ = 1) from held-out standard models",
                  "", "Success = error rate on the transferred examples among the points the target "
                  "classifies correctly (clean).", "",
                  "| source | " + " | ".join(next(iter(transfer.values()))) + " |",
                  "|---|" + "---:|" * len(next(iter(transfer.values())))]
        for src, vals in transfer.items():
            lines.append(f"| {src} | " + " | ".join(f"{v:.3f}" for v in vals.values()) + " |")
        lines += ["", "Tramèr's claim holds here if the `ensemble` column is below the `fgsm-mix` column "
                  "(both are α = 0.5 FGSM training; the ensemble draws its FGSM examples from the model "
                  "or the static MLP / LeNet-5)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
