"""The cross-technique transferability matrix and the tree attack (issue #14 item 2).

1. Papernot, McDaniel & Goodfellow (2016), Fig. 3: adversarial examples crafted on each learning
   technique (DNN, LR, linear SVM, RBF SVM, decision tree, random forest, k-NN, a majority-vote
   ensemble) shown to every other; they report LR → decision tree 87.4% on MNIST.
   :func:`advlab.evaluation.technique_matrix` on digits (all 1,347 training points, the 450 test
   points) and on Fashion-MNIST (the first 5,000 training images: an RBF SVC on 60,000 does not fit a
   2-core budget; the first 500 test images), L∞ at two ε each.
2. The tree attack (exact, no queries) against HopSkipJump through a label-only oracle on the same
   decision tree, and against ART's ``DecisionTreeAttack`` (Papernot et al.'s algorithm too): success
   and median L2 / L∞ of the examples; and on a random forest, HopSkipJump at three budgets (the tree
   attack needs a single tree: on the forest it runs on the forest's first tree and the examples are
   shown to the forest, a transfer).

One run, one thread, seeds fixed. Run with the bench venv (ART is there):
``.venv-bench/bin/python bench/bench_techniques.py`` (about 10 min on a shared 2-core CPU). Writes
``bench/results/techniques.json`` and ``bench/results/techniques.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import HERE, git_revision, start, versions


def matrix(name: str, x, y, xt, yt, eps_list, *, budget: int) -> dict:
    from advlab.evaluation import fit_learners, technique_matrix

    t0 = time.perf_counter()
    learners = fit_learners(x, y, seed=0)
    fit_s = time.perf_counter() - t0
    out = {"dataset": name, "train": int(len(y)), "test": int(len(yt)), "fit_seconds": fit_s, "eps": {}}
    for eps in eps_list:
        t0 = time.perf_counter()
        m = technique_matrix(learners, xt, yt, eps=eps, norm="linf", steps=20, budget=budget, seed=0)
        out["eps"][f"{eps:g}"] = {"table": m.table(), "rows": m.to_rows(), "seconds": time.perf_counter() - t0,
                                  "lr_tree": m.rate("lr", "tree"),
                                  "crafted": {s: m.white_box[s].attack for s in m.sources}}
        print(f"{name} eps={eps:g}: LR→tree {100 * m.rate('lr', 'tree'):.1f}%", flush=True)
    return out


def tree_vs_peers(x, y, xt, yt) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    from advlab.attacks import HopSkipJump, TreeAttack
    from advlab.models import as_model
    from advlab.oracle import Oracle

    flat, labels = x.flatten(1).numpy(), y.numpy()
    shape = tuple(x.shape[1:])
    tree = DecisionTreeClassifier(random_state=0).fit(flat, labels)
    forest = RandomForestClassifier(n_estimators=50, random_state=0, n_jobs=1).fit(flat, labels)
    tm, fm = as_model(tree, input_shape=shape), as_model(forest, input_shape=shape)

    def stats(model, x_adv, label, seconds, queries=None):
        with torch.no_grad():
            correct = model(xt).argmax(1) == yt
            fooled = (model(x_adv).argmax(1) != yt) & correct
        d = (x_adv - xt).flatten(1)
        l2, linf = d.norm(dim=1)[fooled], d.abs().amax(1)[fooled]
        return {"attack": label, "correct": int(correct.sum()), "fooled": int(fooled.sum()),
                "success": float(fooled.sum() / correct.sum()),
                "median_l2": float(l2.median()) if len(l2) else None,
                "median_linf": float(linf.median()) if len(linf) else None,
                "seconds": seconds, "queries_per_point": queries}

    rows = {"tree": [], "forest": []}
    gen = torch.Generator().manual_seed(0)
    for norm in ("l2", "linf"):
        t0 = time.perf_counter()
        res = TreeAttack(norm=norm)(tm, xt, yt)
        rows["tree"].append(stats(tm, res.x_adv, f"advlab TreeAttack ({norm})", time.perf_counter() - t0, 0))
    for budget in (1000, 5000):
        t0 = time.perf_counter()
        res = HopSkipJump(norm="l2", budget=budget)(Oracle(tm, output="label"), xt, yt, generator=gen)
        rows["tree"].append(stats(tm, res.x_adv, f"advlab HopSkipJump L2, {budget} queries",
                                  time.perf_counter() - t0, budget))
    try:
        from art.attacks.evasion import DecisionTreeAttack
        from art.estimators.classification import SklearnClassifier

        art_clf = SklearnClassifier(model=tree, clip_values=(0.0, 1.0))
        t0 = time.perf_counter()
        adv = DecisionTreeAttack(art_clf, offset=0.001, verbose=False).generate(xt.flatten(1).numpy())
        rows["tree"].append(stats(tm, torch.as_tensor(adv, dtype=xt.dtype).view_as(xt),
                                  "ART DecisionTreeAttack (offset 0.001)", time.perf_counter() - t0, 0))
    except ImportError as exc:
        rows["tree"].append({"attack": "ART DecisionTreeAttack", "error": str(exc)})
    first = forest.estimators_[0]
    first_model = as_model(first, input_shape=shape)
    t0 = time.perf_counter()
    res = TreeAttack(norm="l2")(first_model, xt, yt)
    rows["forest"].append(stats(fm, res.x_adv, "TreeAttack on the forest's first tree, shown to the forest",
                                time.perf_counter() - t0, 0))
    for budget in (500, 1000, 5000):
        t0 = time.perf_counter()
        res = HopSkipJump(norm="l2", budget=budget)(Oracle(fm, output="label"), xt, yt, generator=gen)
        rows["forest"].append(stats(fm, res.x_adv, f"advlab HopSkipJump L2, {budget} queries",
                                    time.perf_counter() - t0, budget))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="digits only, fewer points")
    args = p.parse_args()
    start(1)
    from advlab.data.digits import load_digits_dataset

    tr, te = load_digits_dataset(split="train"), load_digits_dataset(split="test")
    n_digits = 100 if args.quick else 450
    result = {"versions": versions(), "revision": git_revision(), "matrices": [], "tree": None}
    result["matrices"].append(matrix("digits", tr.x, tr.y, te.x[:n_digits], te.y[:n_digits], (0.1, 0.2),
                                     budget=1000))
    result["tree"] = tree_vs_peers(tr.x, tr.y, te.x[:200], te.y[:200])
    if not args.quick:
        from _common import fashion_mnist

        x, y, xt, yt = fashion_mnist(5000, 500)
        result["matrices"].append(matrix("fashion-mnist", x, y, xt, yt, (0.05, 0.1), budget=1000))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "techniques.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [f"# Cross-technique transferability and the tree attack (revision {result['revision']})", ""]
    for mat in result["matrices"]:
        for eps, r in mat["eps"].items():
            lines += [f"## {mat['dataset']}, L∞ ε = {eps} (fitted on {mat['train']}, {mat['test']} test points; "
                      f"{r['seconds']:.0f} s)", "", r["table"], ""]
    for where, rows in result["tree"].items():
        lines += [f"## Attacks on the {where} (200 digits test points)", "",
                  "| attack | success (fooled/correct) | median L2 | median L∞ | queries/point | seconds |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            if "error" in r:
                lines.append(f"| {r['attack']} | {r['error']} | | | | |")
                continue
            fmt = lambda v: "–" if v is None else f"{v:.4g}"  # noqa: E731
            lines.append(f"| {r['attack']} | {100 * r['success']:.1f}% ({r['fooled']}/{r['correct']}) | "
                         f"{fmt(r['median_l2'])} | {fmt(r['median_linf'])} | {r['queries_per_point']} | "
                         f"{r['seconds']:.1f} |")
        lines.append("")
    (out / "techniques.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
