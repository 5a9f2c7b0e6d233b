"""Ensemble adversarial training vs single-model FGSM training under transfer (Tramèr et al. 2018).

Tramèr et al. (ICLR 2018, "Ensemble Adversarial Training: Attacks and Defenses") claim that a
model adversarially trained on its own single-step examples learns to mask its gradients and stays
vulnerable to examples *transferred* from other models, and that drawing the training examples
also from static pre-trained models ("ensemble adversarial training") lowers that transfer
success. This study tests the claim on Fashion-MNIST with enough data and test points to read a
difference of a few points:

* targets, all ``small-cnn`` trained from the same initial weights (per seed) on the first
  ``--n-train`` training images for ``--epochs`` epochs (Adam, lr 1e-3, batch 128):
  ``standard`` (cross-entropy), ``fgsm-mix`` (Goodfellow et al. 2015, α = 0.5, FGSM at ε from the
  model itself) and ``ensemble`` (Tramèr et al., α = 0.5, FGSM at ε drawn in turn from the model
  and the two static models: the cached standard MLP and LeNet-5 of ``bench/results``);
* held-out sources the targets never saw: the cached small ResNet, and standard small CNNs with
  other seeds (``seed + 1000``), trained here like the standard target;
* attacks on the sources, L∞ ε = ``--eps``: FGSM (Tramèr's transfer attack) and MI-FGSM (10 steps,
  μ = 1; Dong et al. 2018, the attack that seed 001 aims at ensemble-trained models);
* transfer success = error rate on the transferred examples among the test points the target
  classifies correctly, over all ``--n-eval`` test images; the ensemble − FGSM-mix difference
  gets a 95% paired bootstrap interval (``--boot`` resamples of the test points, both targets
  resampled together).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_ensemble.py`` (defaults: 60,000
images, 5 epochs, seeds 0 and 1, 10,000 test images; about 40 CPU minutes). Training resumes
from ``bench/results/ensemble/`` checkpoints. Writes ``bench/results/ensemble<tag>.json`` and
``bench/results/ensemble<tag>.md`` (tag empty at ε = 0.1, ``-eps<ε>`` otherwise, plus
``-strong-statics`` with ``--strong-statics``; the adversarially trained models of another ε live
in ``ensemble/eps<ε>/``, the standard ones are shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from _common import fashion_mnist, git_revision, start, static_models, versions
from advlab.attacks.gradient import FGSM, MIFGSM
from advlab.defenses.adversarial import EnsembleAdversarial, FGSMMix
from advlab.defenses.recipe import Standard
from advlab.defenses.training import train
from advlab.models import build_seeded, load

logger = logging.getLogger("bench_ensemble")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = RESULTS / "ensemble"


def _predict(model: nn.Module, x: Tensor, batch: int = 1000) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])


def _craft(attack: Any, source: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([attack(source, x[i:i + batch], y[i:i + batch]).x_adv for i in range(0, x.shape[0], batch)])


def bootstrap_difference(ok_a: Tensor, fooled_a: Tensor, ok_b: Tensor, fooled_b: Tensor, *,
                         reps: int, seed: int = 0) -> tuple[float, float, float]:
    """Rate ``fooled_b/ok_b − fooled_a/ok_a`` and its 95% paired bootstrap interval over points."""
    g = torch.Generator().manual_seed(seed)
    n = ok_a.shape[0]
    idx = torch.randint(n, (reps, n), generator=g)  # (reps, n): the same points for both targets

    def rate(ok: Tensor, fooled: Tensor) -> Tensor:
        return fooled.float()[idx].sum(1) / ok.float()[idx].sum(1).clamp_min(1)

    diffs = rate(ok_b, fooled_b) - rate(ok_a, fooled_a)
    point = float(fooled_b.sum() / ok_b.sum() - fooled_a.sum() / ok_a.sum())
    lo, hi = torch.quantile(diffs, torch.tensor([0.025, 0.975])).tolist()
    return point, lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--n-eval", type=int, default=10000)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--white-box", type=int, default=0, metavar="N",
                        help="instead of the transfer study: white-box FGSM and PGD-20 robust accuracy of the "
                             "trained targets (from their checkpoints) on the first N test images, the "
                             "gradient-masking check behind Tramèr's argument")
    parser.add_argument("--strong-statics", action="store_true",
                        help="static models = two standard small CNNs (seeds 2000, 2001) trained here like "
                             "the standard target, instead of the cached 2-epoch MLP and LeNet-5")
    args = parser.parse_args()
    start(args.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    eps_tag = "" if args.eps == 0.1 else f"eps{args.eps:g}"
    tag = (f"-{eps_tag}" if eps_tag else "") + ("-strong-statics" if args.strong_statics else "")
    x, y, xt, yt = fashion_mnist(args.n_train, args.n_eval)
    eps = args.eps
    settings = dict(epochs=args.epochs, batch_size=128, lr=1e-3, optimizer="adam", progress=False)

    def fit(name: str, recipe: Any, seed: int) -> tuple[nn.Module, float]:
        model = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=seed)
        where = WORK if name == "standard" else WORK / eps_tag
        if name == "ensemble" and args.strong_statics:
            where = where / "strong-statics"
        res = train(model, recipe, x, y, seed=seed, checkpoint_dir=where / f"{name}-seed{seed}", **settings)
        logger.info("%s seed %d: loss %.4f", name, seed, res.history[-1]["loss"])
        return model.eval(), sum(h["cpu_seconds"] for h in res.history)

    if args.strong_statics:  # standard small CNNs trained like the standard target: their examples transfer
        statics = tuple(fit("standard", Standard(), s)[0] for s in (2000, 2001))
    else:
        statics = static_models()
    recipes = {"standard": Standard(), "fgsm-mix": FGSMMix(eps=eps, alpha=0.5),
               "ensemble": EnsembleAdversarial(eps=eps, alpha=0.5, static_models=statics)}

    if args.white_box:
        white_box(args, fit, recipes, xt[: args.white_box], yt[: args.white_box], tag, statics)
        return
    attacks = {"FGSM": FGSM(eps=eps), "MI-FGSM": MIFGSM(eps=eps, steps=10, decay=1.0)}
    per_seed: list[dict[str, Any]] = []
    for seed in args.seeds:
        targets, cpu = {}, {}
        for name, recipe in recipes.items():
            targets[name], cpu[name] = fit(name, recipe, seed)
        sources = {"small-resnet": load(RESULTS / "small-resnet-fashion-mnist-seed0-e1-n30000"),
                   f"small-cnn-seed{seed + 1000}": fit("standard", Standard(), seed + 1000)[0]}
        preds = {name: _predict(m, xt) for name, m in targets.items()}
        clean = {name: float((p == yt).float().mean()) for name, p in preds.items()}
        cells: list[dict[str, Any]] = []
        for src_name, src in sources.items():
            for atk_name, attack in attacks.items():
                t0 = time.process_time()
                x_adv = _craft(attack, src, xt, yt)
                ok, fooled = {}, {}
                for name, model in targets.items():
                    ok[name] = preds[name] == yt
                    fooled[name] = ok[name] & (_predict(model, x_adv) != yt)
                diff, lo, hi = bootstrap_difference(ok["fgsm-mix"], fooled["fgsm-mix"], ok["ensemble"],
                                                    fooled["ensemble"], reps=args.boot, seed=seed)
                cell = {"source": src_name, "attack": atk_name,
                        "success": {n: float(fooled[n].sum() / ok[n].sum()) for n in targets},
                        "fooled": {n: int(fooled[n].sum()) for n in targets},
                        "correct": {n: int(ok[n].sum()) for n in targets},
                        "ensemble_minus_fgsm_mix": diff, "ci95": [lo, hi],
                        "cpu_s": time.process_time() - t0}
                logger.info("seed %d %s from %s: %s; diff %.4f [%.4f, %.4f]", seed, atk_name, src_name,
                            {n: round(v, 4) for n, v in cell["success"].items()}, diff, lo, hi)
                cells.append(cell)
        per_seed.append({"seed": seed, "clean": clean, "train_cpu_s": cpu, "cells": cells})

    meta = {"revision": git_revision(), "versions": versions(("torch", "advlab")),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "args": vars(args)}
    (RESULTS / f"ensemble{tag}.json").write_text(json.dumps({"meta": meta, "runs": per_seed}, indent=1) + "\n")
    text = render(meta, per_seed, args)
    (RESULTS / f"ensemble{tag}.md").write_text(text)
    print(text)


def white_box(args: argparse.Namespace, fit: Any, recipes: dict[str, Any], x: Tensor, y: Tensor,
              tag: str, statics: tuple[nn.Module, ...]) -> None:
    """White-box robust accuracy per target: a model that resists its own FGSM far better than
    PGD masks its gradients (Tramèr et al.'s degenerate minimum), the reason transfer should beat it."""
    from advlab.attacks.gradient import PGD

    rows = []
    for seed in args.seeds:
        for name, recipe in recipes.items():
            model, _ = fit(name, recipe, seed)
            ok = _predict(model, x) == y
            row = {"seed": seed, "target": name, "clean": float(ok.float().mean())}
            for atk_name, attack in (("FGSM", FGSM(eps=args.eps)),
                                     ("PGD-20", PGD(eps=args.eps, steps=20, loss="ce")),
                                     ("PGD-20 C&W", PGD(eps=args.eps, steps=20, loss="cw"))):
                x_adv = _craft(attack, model, x, y)
                row[atk_name] = float((ok & (_predict(model, x_adv) == y)).float().mean())
            for i, static in enumerate(statics):  # how hard the ensemble's borrowed examples are
                x_adv = _craft(FGSM(eps=args.eps), static, x, y)
                row[f"static{i}"] = float((ok & (_predict(model, x_adv) == y)).float().mean())
            logger.info("white-box %s", row)
            rows.append(row)
    lines = [f"White-box robust accuracy at ε = {args.eps} on the first {x.shape[0]} test images "
             "(correct and not fooled; PGD with a random start, step 2.5ε/20):", "",
             "| seed | target | clean | FGSM | PGD-20 (CE) | PGD-20 (C&W) | FGSM − PGD (CE) | "
             "FGSM from static model 1 | FGSM from static model 2 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['target']} | {r['clean']:.3f} | {r['FGSM']:.3f} | {r['PGD-20']:.3f} | "
                     f"{r['PGD-20 C&W']:.3f} | {r['FGSM'] - r['PGD-20']:+.3f} | {r['static0']:.3f} | "
                     f"{r['static1']:.3f} |")
    (RESULTS / f"ensemble{tag}_white_box.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"ensemble{tag}_white_box.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def render(meta: dict[str, Any], per_seed: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"{meta['date']}, advlab {meta['revision']}, torch {meta['versions']['torch']}, "
             f"{args.threads} torch thread(s). small-cnn targets on the first {args.n_train} training images, "
             f"{args.epochs} epochs, Adam lr 1e-3, batch 128; ε = {args.eps} (L∞); "
             f"{args.n_eval} test images; {args.boot} paired bootstrap resamples.", ""]
    lines += ["| seed | clean: standard | fgsm-mix | ensemble | train CPU s: fgsm-mix | ensemble |",
              "|---|---:|---:|---:|---:|---:|"]
    for run in per_seed:
        c, t = run["clean"], run["train_cpu_s"]
        lines.append(f"| {run['seed']} | {c['standard']:.3f} | {c['fgsm-mix']:.3f} | {c['ensemble']:.3f} | "
                     f"{t['fgsm-mix']:.0f} | {t['ensemble']:.0f} |")
    lines += ["", "Transfer success (fooled / correctly classified, per target):", "",
              "| seed | source | attack | standard | fgsm-mix | ensemble | ensemble − fgsm-mix [95% CI] |",
              "|---|---|---|---:|---:|---:|---|"]
    below = total = 0
    for run in per_seed:
        for cell in run["cells"]:
            s = cell["success"]
            lo, hi = cell["ci95"]
            total += 1
            below += hi < 0
            lines.append(f"| {run['seed']} | {cell['source']} | {cell['attack']} | {s['standard']:.3f} | "
                         f"{s['fgsm-mix']:.3f} | {s['ensemble']:.3f} | {cell['ensemble_minus_fgsm_mix']:+.3f} "
                         f"[{lo:+.3f}, {hi:+.3f}] |")
    lines += ["", f"Tramèr's claim (ensemble below FGSM-mix): the 95% interval lies entirely below 0 in "
              f"{below} of {total} (seed, source, attack) cells."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
