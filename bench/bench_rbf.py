"""RBF networks against ReLU networks of the same size (issue #14 item 4).

Goodfellow, Shlens & Szegedy (ICLR 2015, Sec. 7): shallow RBF networks answer adversarial inputs
with low confidence (1.2% mean confidence on their MNIST adversarial examples) but are hard to train.
This script measures, on sklearn digits and Fashion-MNIST, for two pairs of networks with the same
hidden widths (``RBFNet(hidden=w)`` against ``MLP(hidden=w)``, the latter's output layer linear):

* ``shallow`` (``w = ()``): the paper's RBF network on the pixels, against softmax regression;
* ``deep`` (``w = (256, 128)``): the zoo defaults, ``"rbf"`` against ``"mlp"``.

Each RBF net is trained twice: with softmax cross-entropy (``fit``, as every zoo model), and with the
paper's reading of each unit as its own binary classifier ``p(y = k | x) = exp(logit_k)``
(one-vs-rest likelihood, :func:`ovr_loss`, ``RBFNet-ovr``), which is what makes the unit outputs a
confidence; softmax training leaves their level free.

Per model: clean test accuracy; the first epoch whose running train accuracy reaches a target (the
"hard to train" claim; same optimiser, learning rate and batches for both); robust accuracy under
L∞ PGD (20 steps, 1 start) at several ε, and at one ε under PGD with 100 steps and 5 restarts, the
strong cascade (``Cascade(strong_attacks(eps, square=True))``: APGD-CE → APGD-T (9 targets) →
black-box Square through an Oracle, 1,000 queries) and Square alone (so a model that masks its
gradients cannot hide); the mean max softmax confidence on the PGD-20 adversarial inputs that fool
it, on clean inputs and on uniform noise (``noise_confidence``, 1,000 draws), and for the RBF nets
the mean max *unit output* ``max_k exp(logit_k)`` on the same three (the paper's confidence).

Robust accuracy is over all ``n`` evaluation points; attacks count only on the clean-correct ones.
One thread, one run, seeds fixed. Run: ``PYTHONPATH=src python bench/bench_rbf.py`` (about 3 min on
a shared 2-core CPU). Writes ``bench/results/rbf.json`` and ``bench/results/rbf.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import platform
import time
from typing import Any

import torch
from torch import Tensor, nn

from _common import HERE, git_revision, start, versions
from advlab.attacks import PGD, SquareAttack
from advlab.data import load_dataset
from advlab.evaluation import Cascade, noise_confidence, strong_attacks
from advlab.models import MLP, RBFNet, accuracy, fit
from advlab.oracle import Oracle

log = logging.getLogger("bench_rbf")

#: dataset → (train size, eval size, epochs, lr, train-accuracy target, PGD ε list, ε for the checks)
SETUPS: dict[str, dict[str, Any]] = {
    "digits": dict(n_train=None, n_eval=450, epochs=30, lr=1e-2, target=0.95,
                   eps=(0.05, 0.1, 0.2, 0.3), check_eps=0.1),
    "fashion-mnist": dict(n_train=10_000, n_eval=500, epochs=10, lr=1e-3, target=0.85,
                          eps=(0.02, 0.05, 0.1, 0.2), check_eps=0.05),
}
PAIRS = {"shallow": (), "deep": MLP.HIDDEN}


def mean(t: Tensor) -> float:
    return float(t.float().mean()) if t.numel() else float("nan")


def top_unit(model: nn.Module, x: Tensor) -> Tensor:
    """``max_k exp(logit_k)`` per row: the paper's RBF confidence (only meaningful for RBFNet)."""
    with torch.no_grad():
        return model(x).max(dim=1).values.exp()


def evaluate(model: nn.Module, x: Tensor, y: Tensor, setup: dict[str, Any], *, seed: int) -> dict[str, Any]:
    is_rbf = isinstance(model, RBFNet)
    n = x.shape[0]
    out: dict[str, Any] = {"clean_accuracy": accuracy(model, x, y), "n": n}
    with torch.no_grad():
        clean_conf = torch.softmax(model(x), 1).max(1).values
    out["clean_confidence"] = mean(clean_conf)
    if is_rbf:
        out["clean_unit"] = mean(top_unit(model, x))
    pgd = []
    for eps in setup["eps"]:
        t0 = time.perf_counter()
        r = PGD(eps=eps, steps=20)(model, x, y, generator=torch.Generator().manual_seed(seed))
        fooled = r.success & (model(x).argmax(1) == y)  # adversarial inputs of clean-correct points
        row = {"eps": eps, "robust_accuracy": 1 - mean(r.success), "n_fooled": int(fooled.sum()),
               "adv_confidence": mean(r.confidence[fooled]), "seconds": time.perf_counter() - t0}
        if is_rbf:
            row["adv_unit"] = mean(top_unit(model, r.x_adv[fooled]))
        pgd.append(row)
    out["pgd20"] = pgd
    eps = setup["check_eps"]
    gen = torch.Generator().manual_seed(seed)
    r = PGD(eps=eps, steps=100, restarts=5)(model, x, y, generator=gen)
    out["pgd100x5"] = {"eps": eps, "robust_accuracy": 1 - mean(r.success)}
    t0 = time.perf_counter()
    cascade = Cascade(strong_attacks(eps, square=True, square_budget=1000)).run(
        model, x, y, generator=torch.Generator().manual_seed(seed), progress=False)
    out["cascade"] = {"eps": eps, "names": list(cascade.names),
                      "stage_robust_accuracy": list(cascade.stage_robust_accuracy),
                      "robust_accuracy": cascade.robust_accuracy, "seconds": time.perf_counter() - t0}
    oracle = Oracle(model, output="scores", budget=1000)
    sq = SquareAttack(eps=eps, budget=1000)(oracle, x, y, generator=torch.Generator().manual_seed(seed))
    out["square"] = {"eps": eps, "queries": 1000, "robust_accuracy": 1 - mean(sq.success)}
    nc = noise_confidence(model, input_shape=tuple(x.shape[1:]), n=1000, seed=seed)
    out["noise"] = {"mean_confidence": mean(nc.max_confidence), "rate_099": nc.rate}
    if is_rbf:
        noise = torch.rand((1000, *x.shape[1:]), generator=torch.Generator().manual_seed(seed))
        out["noise"]["mean_unit"] = mean(top_unit(model, noise))
    return out


def ovr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """One-vs-rest likelihood of the RBF units, each ``p_k = exp(logit_k)`` a binary classifier
    ``p(y = k | x)`` as in the paper: ``−Σ_k [y_k log p_k + (1 − y_k) log(1 − p_k)]``, batch mean."""
    onehot = torch.nn.functional.one_hot(y, logits.shape[1]).bool()
    log_not = torch.log(-torch.expm1(logits.clamp(max=-1e-6)))  # log(1 − exp(l)), l ≤ 0
    return -torch.where(onehot, logits, log_not).sum(1).mean()


def fit_ovr(model: RBFNet, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int,
            seed: int) -> list[float]:
    """:func:`advlab.models.fit`'s loop (Adam, the same shuffled batches) with :func:`ovr_loss`;
    returns the running train accuracy per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    acc = []
    model.train()
    for _ in range(epochs):
        order, correct = torch.randperm(x.shape[0], generator=g), 0
        for s in range(0, x.shape[0], batch_size):
            idx = order[s : s + batch_size]
            logits = model(x[idx])
            loss = ovr_loss(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.detach().argmax(1) == y[idx]).sum())
        acc.append(correct / x.shape[0])
    model.eval()
    return acc


def run(name: str, setup: dict[str, Any], *, seed: int) -> list[dict[str, Any]]:
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    n_train = setup["n_train"] or train.x.shape[0]
    x, y = train.x[:n_train], train.y[:n_train]
    xe, ye = test.x[: setup["n_eval"]], test.y[: setup["n_eval"]]
    shape, k = tuple(x.shape[1:]), int(train.y.max()) + 1
    rows = []
    for pair, hidden in PAIRS.items():
        for label, cls in (("RBFNet", RBFNet), ("RBFNet-ovr", RBFNet), ("MLP", MLP)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(in_shape=shape, num_classes=k, hidden=hidden)
            t0 = time.perf_counter()
            if label == "RBFNet-ovr":
                train_accuracy = fit_ovr(model, x, y, epochs=setup["epochs"], lr=setup["lr"], batch_size=64,
                                         seed=seed)
            else:
                train_accuracy = fit(model, x, y, epochs=setup["epochs"], lr=setup["lr"], batch_size=64,
                                     seed=seed, progress=False).train_accuracy
            train_s = time.perf_counter() - t0
            reached = [e + 1 for e, a in enumerate(train_accuracy) if a >= setup["target"]]
            t0 = time.perf_counter()
            row = {"dataset": name, "pair": pair, "model": label, "hidden": list(hidden),
                   "params": sum(p.numel() for p in model.parameters()), "n_train": n_train,
                   "epochs": setup["epochs"], "lr": setup["lr"], "target": setup["target"],
                   "epochs_to_target": reached[0] if reached else None,
                   "train_accuracy": train_accuracy,
                   "train_seconds": train_s, **evaluate(model, xe, ye, setup, seed=seed)}
            row["eval_seconds"] = time.perf_counter() - t0
            log.info("%s %s %s: clean %.3f, to-target %s, PGD20 %s, cascade %.3f, square %.3f (%.0f s)",
                     name, pair, label, row["clean_accuracy"], row["epochs_to_target"],
                     [round(p["robust_accuracy"], 3) for p in row["pgd20"]],
                     row["cascade"]["robust_accuracy"], row["square"]["robust_accuracy"],
                     train_s + row["eval_seconds"])
            rows.append(row)
    return rows


def pct(v: float | None) -> str:
    return "—" if v is None or v != v else f"{100 * v:.1f}%"


def sci(v: float | None) -> str:
    return "—" if v is None or v != v else f"{v:.2g}"


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# RBF vs same-size ReLU networks (bench/bench_rbf.py)", "",
             f"{meta['machine']}; torch {meta['versions']['torch']}, 1 thread; revision {meta['revision']}; "
             f"seed {meta['seed']}; one run, {meta['seconds']:.0f} s.", ""]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        s = SETUPS[name]
        lines += [f"## {name}", "",
                  f"train {sub[0]['n_train']} images, eval the first {sub[0]['n']} test images; Adam lr "
                  f"{s['lr']}, batch 64, {s['epochs']} epochs; target train accuracy {s['target']}.", "",
                  "| pair | model | params | clean | epochs to target | "
                  + " | ".join(f"PGD-20 ε={e:g}" for e in s["eps"])
                  + f" | PGD-100×5 ε={s['check_eps']:g} | cascade ε={s['check_eps']:g} "
                    f"(APGD-CE / +APGD-T / +Square) | Square-1k alone |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(s["eps"]) + "---:|---:|---:|"]
        for r in sub:
            c = r["cascade"]["stage_robust_accuracy"]
            lines.append(f"| {r['pair']} | {r['model']} | {r['params']} | {pct(r['clean_accuracy'])} | "
                         f"{r['epochs_to_target'] or '>' + str(r['epochs'])} | "
                         + " | ".join(pct(p["robust_accuracy"]) for p in r["pgd20"])
                         + f" | {pct(r['pgd100x5']['robust_accuracy'])} | "
                         f"{' / '.join(pct(v) for v in c)} | {pct(r['square']['robust_accuracy'])} |")
        lines += ["", "Mean max softmax confidence (and, for RBF, mean max unit output exp(logit)):", "",
                  "| pair | model | clean | "
                  + " | ".join(f"PGD-20 adv ε={e:g}" for e in s["eps"])
                  + " | uniform noise | noise ≥ 0.99 |",
                  "|---|---|---:|" + "---:|" * len(s["eps"]) + "---:|---:|"]
        for r in sub:
            rbf = r["model"].startswith("RBFNet")

            def both(soft: float, unit: float | None) -> str:
                return f"{pct(soft)} (unit {sci(unit)})" if rbf else pct(soft)

            lines.append(f"| {r['pair']} | {r['model']} | {both(r['clean_confidence'], r.get('clean_unit'))} | "
                         + " | ".join(both(p["adv_confidence"], p.get("adv_unit")) for p in r["pgd20"])
                         + f" | {both(r['noise']['mean_confidence'], r['noise'].get('mean_unit'))} | "
                         f"{pct(r['noise']['rate_099'])} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start(1)
    t0 = time.perf_counter()
    rows = [row for name in args.datasets for row in run(name, SETUPS[name], seed=args.seed)]
    meta = {"machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
            "versions": versions(("torch", "advlab", "numpy")), "revision": git_revision(),
            "seed": args.seed, "seconds": time.perf_counter() - t0}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "rbf.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / "rbf.md").write_text(render(rows, meta))
    print(render(rows, meta))


if __name__ == "__main__":
    main()
