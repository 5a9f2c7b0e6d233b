"""Detectors on Fashion-MNIST: how well they separate attacks, and how much they hold under attack.

Model: the small CNN trained 2 epochs on Fashion-MNIST (``bench/results/small-cnn-fashion-mnist-
seed0-e2``, clean accuracy 0.884). Detectors (advlab.defenses.detectors):

* ``SafetyNet`` (Lu et al. 2017): binary ReLU codes (``levels=2``), RBF-SVM (C = 1, gamma "scale");
* ``ActivationDetector`` (Metzen et al. 2017): a 64-unit MLP on standardised activations, 30 epochs;

each on the default layer (the last ReLU, ``classifier.2``, 128 units) and on ``features.4`` (the
ReLU after the second convolution, 64·14·14 units), selectable with ``--layers``.

Fitting: the first ``--n-fit`` training images (clean, label 0) and the successful PGD examples
(L∞, ε = 0.1, 20 steps, label 1) of those the classifier gets right. The main detectors see only
PGD examples, so their FGSM and C&W columns measure how they transfer to attacks they never saw;
a second table fits the same configurations on each attack's own training examples.

Evaluation on the first ``--n-eval`` test images, attacked by FGSM (L∞, ε = 0.1), PGD (L∞,
ε = 0.1, 20 steps, a different random start) and C&W L2 (50 Adam steps × 4 binary-search rounds,
c_init = 0.1, κ = 0: a modest budget). ROC-AUC: clean test images (all ``n_eval``) against the
*successful* adversarial examples of each attack on correctly classified points (a failed C&W
point is the clean image itself). Detection rate: the share of those flagged at the detector's
default threshold.

Guarded model (``GuardedClassifier``, default threshold): clean accuracy counting a rejection as
an error, false-reject rate, and the success of two attacks against it, over the points it
classifies correctly and accepts (the denominator is printed): plain PGD on the classifier alone
(the detector not considered; success = misclassified and not rejected), and ``AdaptivePGD``
(Carlini & Wagner 2017: PGD on the guarded model's C + 1 logits with the reject-aware margin, 50
steps, ε = 0.1; SafetyNet attacked through BPDA on its quantiser).

Torch runs on ``--threads`` threads (default 1). The machine is shared with other jobs, so wall
seconds are inflated and noisy; CPU seconds (``time.process_time``) are reported alongside. No
peer library implements these detectors, so there is no side-by-side contender here.

Run: ``.venv/bin/python bench/bench_detectors.py``; writes ``bench/results/detectors.md`` and
``bench/results/detectors.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import platform
import subprocess
import time
from pathlib import Path

import sklearn
import torch
from torch import Tensor

import advlab.models
from advlab.attacks.gradient import FGSM, PGD
from advlab.attacks.minimal import CarliniWagnerL2
from advlab.data import load_dataset
from advlab.defenses.detectors import ActivationDetector, SafetyNet, detection_roc_auc
from advlab.defenses.guarded import AdaptivePGD, GuardedClassifier, guarded_success

log = logging.getLogger("bench_detectors")
ROOT = Path(__file__).resolve().parent
CKPT = ROOT / "results" / "small-cnn-fashion-mnist-seed0-e2"
EPS = 0.1
NUM_CLASSES = 10  # Fashion-MNIST; the guarded model's reject output is index 10


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-fit", type=int, default=600)
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--layers", default="default,features.4",
                    help="comma-separated layer names; 'default' = the last ReLU")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "detectors"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    model = advlab.models.load(CKPT)
    train, test = load_dataset("fashion-mnist", split="train"), load_dataset("fashion-mnist", split="test")
    x_fit, y_fit = train.x[:args.n_fit], train.y[:args.n_fit]
    x, y = test.x[:args.n_eval], test.y[:args.n_eval]
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    timings: dict[str, list[float]] = {}

    pgd = PGD(eps=EPS, steps=20)
    attacks = {
        "FGSM": FGSM(eps=EPS),
        "PGD": pgd,
        "C&W L2": CarliniWagnerL2(steps=50, binary_search_steps=4, c_init=0.1),
    }
    with torch.no_grad():
        correct_fit = model(x_fit).argmax(1) == y_fit
    adv_fit: dict[str, Tensor] = {}
    adv_eval: dict[str, dict] = {}
    for name, atk in attacks.items():
        log.info("attacking the fit and eval sets with %s", name)
        res, w, c = timed(lambda: atk(model, x_fit, y_fit, generator=torch.Generator().manual_seed(0)))
        timings[f"{name} on fit set"] = [w, c]
        adv_fit[name] = res.x_adv[res.success & correct_fit]
        res, w, c = timed(lambda: atk(model, x, y, generator=torch.Generator().manual_seed(1)))
        timings[f"{name} on eval set"] = [w, c]
        keep = res.success & correct
        adv_eval[name] = {"x_adv": res.x_adv, "keep": keep, "n": int(keep.sum()),
                          "n_fit": int(adv_fit[name].shape[0]),
                          "success_rate_on_correct": float(keep.sum() / correct.sum()),
                          "median_l2": float(res.threat.norm_of(res.x_adv - x)[keep].median())
                          if name == "C&W L2" and bool(keep.any()) else None}

    rows = []
    for layer in args.layers.split(","):
        spec = None if layer == "default" else layer
        for cfg in (SafetyNet(layer=spec, levels=2), ActivationDetector(layer=spec, hidden=64, epochs=30, seed=0)):
            kind = type(cfg).__name__
            log.info("fitting %s on layer %s", kind, layer)
            det, w, c = timed(lambda: cfg.fit(model, x_fit, adv_fit["PGD"]))
            row: dict = {"detector": kind, "layer": det.layer, "config": det.config,
                         "fit_wall_s": w, "fit_cpu_s": c, "n_fit_clean": args.n_fit,
                         "n_fit_adv": int(adv_fit["PGD"].shape[0])}
            clean_flag = det.predict(x)
            row["false_reject_rate"] = float(clean_flag.float().mean())
            for name, d in adv_eval.items():
                xa = d["x_adv"][d["keep"]]
                row[f"auc {name}"] = detection_roc_auc(det, x, xa)
                row[f"tpr {name}"] = float(det.predict(xa).float().mean())
                # the same detector fitted on this attack's own training examples
                own = det if name == "PGD" else cfg.fit(model, x_fit, adv_fit[name])
                row[f"own auc {name}"] = row[f"auc {name}"] if name == "PGD" else detection_roc_auc(own, x, xa)
                row[f"own auc PGD from {name}"] = detection_roc_auc(own, x, adv_eval["PGD"]["x_adv"][adv_eval["PGD"]["keep"]])
            guarded = GuardedClassifier(model, det)
            pred, rejected = guarded.predict(x)
            ok = (pred == y) & ~rejected
            row["guarded_clean_acc"] = float(ok.float().mean())
            row["accepted_acc"] = float((pred == y)[~rejected].float().mean()) if bool((~rejected).any()) else None
            row["denominator"] = int(ok.sum())
            plain = guarded_success(guarded, adv_eval["PGD"]["x_adv"], y)
            row["plain_pgd_success"] = float(plain[ok].float().mean())
            adaptive = AdaptivePGD(eps=EPS, steps=50)
            res, w, c = timed(lambda: adaptive(guarded, x[ok], y[ok], generator=torch.Generator().manual_seed(2)))
            assert torch.equal(res.success, guarded_success(guarded, res.x_adv, y[ok]))
            row["adaptive_success"] = res.success_rate
            row["adaptive_wall_s"], row["adaptive_cpu_s"] = w, c
            row["adaptive_rejected"] = float((res.pred == NUM_CLASSES).float().mean())
            log.info("%s", {k: v for k, v in row.items() if k != "config"})
            rows.append(row)

    meta = {
        "model": str(CKPT.relative_to(ROOT.parent)), "eps": EPS, "n_fit": args.n_fit,
        "n_eval": args.n_eval, "n_correct_eval": int(correct.sum()),
        "clean_acc_eval": float(correct.float().mean()),
        "attacks": {k: repr(v) for k, v in attacks.items()},
        "adaptive": repr(AdaptivePGD(eps=EPS, steps=50)),
        "attack_stats": {k: {kk: vv for kk, vv in v.items() if kk not in ("x_adv", "keep")}
                         for k, v in adv_eval.items()},
        "timings_wall_cpu_s": timings, "threads": args.threads,
        "torch": torch.__version__, "sklearn": sklearn.__version__, "python": platform.python_version(),
        "revision": revision(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    out.with_suffix(".md").write_text(render(meta, rows))
    print(render(meta, rows))


def render(meta: dict, rows: list[dict]) -> str:
    st = meta["attack_stats"]
    lines = [
        "# Detectors on Fashion-MNIST (small CNN, seed 0, 2 epochs)",
        "",
        f"Generated by `bench/bench_detectors.py` at revision {meta['revision']} (torch {meta['torch']}, "
        f"scikit-learn {meta['sklearn']}, {meta['threads']} torch thread(s), CPU; the machine was shared "
        "with other jobs, so wall seconds are inflated).",
        "",
        f"Detectors fitted on the first {meta['n_fit']} training images (negatives) and the successful PGD "
        f"examples (L∞ ε = {meta['eps']}, 20 steps) of those the classifier gets right (positives). Evaluated on the first {meta['n_eval']} test images "
        f"(classifier accuracy {meta['clean_acc_eval']:.3f}, {meta['n_correct_eval']} correct).",
        "",
        "Attacks on the eval set (successful examples on correctly classified points are the positives "
        "of the ROC-AUC; all eval clean images are the negatives):",
        "",
        "| attack | config | successful / correct (eval) | success rate | fit-set positives |",
        "|---|---|---:|---:|---:|",
    ]
    for name, cfg in meta["attacks"].items():
        s = st[name]
        extra = f" (median L2 {s['median_l2']:.3f})" if s.get("median_l2") is not None else ""
        lines.append(f"| {name} | `{cfg}` | {s['n']} / {meta['n_correct_eval']} | "
                     f"{s['success_rate_on_correct']:.3f}{extra} | {s['n_fit']} |")
    lines += [
        "",
        "## Detection (ROC-AUC; detection rate at the default threshold in brackets)",
        "",
        "| detector | layer | AUC FGSM | AUC PGD | AUC C&W | false-reject rate (clean) | fit CPU s (wall) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['detector']} | `{r['layer']}` | {r['auc FGSM']:.3f} ({r['tpr FGSM']:.2f}) | "
            f"{r['auc PGD']:.3f} ({r['tpr PGD']:.2f}) | {r['auc C&W L2']:.3f} ({r['tpr C&W L2']:.2f}) | "
            f"{r['false_reject_rate']:.3f} | {r['fit_cpu_s']:.1f} ({r['fit_wall_s']:.1f}) |")
    lines += [
        "",
        "Fitted on each attack's own training examples instead (same configs; the last column is the "
        "AUC on PGD of the detector fitted on C&W):",
        "",
        "| detector | layer | AUC FGSM (fit FGSM) | AUC PGD (fit PGD) | AUC C&W (fit C&W) | AUC PGD (fit C&W) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['detector']} | `{r['layer']}` | {r['own auc FGSM']:.3f} | {r['own auc PGD']:.3f} | "
                     f"{r['own auc C&W L2']:.3f} | {r['own auc PGD from C&W L2']:.3f} |")
    lines += [
        "",
        "## The guarded model (classifier + detector, reject option) under attack",
        "",
        "Success = misclassified AND not rejected, over the points the guarded model classifies "
        "correctly and accepts (the denominator). Plain PGD attacks the classifier alone; the adaptive "
        f"attack is `{meta['adaptive']}` on the guarded model (reject-aware margin; SafetyNet via BPDA).",
        "",
        "| detector | layer | clean acc (reject = error) | acc on accepted | denominator | plain PGD success | adaptive PGD success | adaptive: ended rejected | adaptive CPU s (wall) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc_acc = f"{r['accepted_acc']:.3f}" if r["accepted_acc"] is not None else "n/a"
        lines.append(
            f"| {r['detector']} | `{r['layer']}` | {r['guarded_clean_acc']:.3f} | {acc_acc} | "
            f"{r['denominator']} | {r['plain_pgd_success']:.3f} | {r['adaptive_success']:.3f} | "
            f"{r['adaptive_rejected']:.3f} | {r['adaptive_cpu_s']:.1f} ({r['adaptive_wall_s']:.1f}) |")
    t = meta["timings_wall_cpu_s"]
    lines += ["", "Attack timings (CPU s, wall s): " + "; ".join(
        f"{k}: {v[1]:.1f}, {v[0]:.1f}" for k, v in t.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
