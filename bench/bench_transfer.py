"""Papernot et al. (2017) black-box attack: substitute training from oracle labels, then transfer.

Target: the small CNN trained 2 epochs on Fashion-MNIST (``bench/results/small-cnn-fashion-mnist-
seed0-e2``, clean accuracy 0.884) behind ``Oracle(output="label")``: the attacker sees only labels.

Data, all from the Fashion-MNIST test split, shuffled once with ``--seed`` and cut into three
disjoint parts:

* seed set ``S_0``: the first ``--per-class`` (15) images of each class (150 images);
* evaluation points: the next ``--n`` (200) images the target classifies correctly;
* held-out points: the next ``--holdout`` (1000) images, on which the substitute's agreement with
  the oracle's labels is measured after every round (these labels are asked through a separate
  evaluation copy of the oracle and are not counted as attack queries).

Substitute: ``train_substitute(..., architecture=--architecture, rounds=6, lambda_=0.1)`` (Jacobian-
based augmentation, training continued across rounds, 10 epochs of Adam per round), keeping a
copy of the substitute after every round. For every round and every ε, each white-box attack
crafts on that round's substitute and the target oracle is asked once per point:
FGSM, I-FGSM (10 steps, α = ε/10), MI-FGSM (10 steps, α = ε/10, μ = 1.0). Reference rows:
random ±ε sign noise (the floor) and the same attacks white-box on the target itself (the ceiling).

Peer sanity (``.venv-bench`` only): torchattacks FGSM, BIM and MIFGSM on the final substitute with
the same points and hyperparameters; we report their transfer success and how far their
adversarial examples are from advlab's.

Timing: CPU seconds of this process (``time.process_time``) and wall seconds; torch runs on
``--threads`` (1) threads. The machine is shared with other jobs, so wall seconds are noisy.

Run: ``.venv-bench/bin/python bench/bench_transfer.py`` (or ``.venv/bin/python``, without the peer
row). Writes ``bench/results/transfer.md`` and ``bench/results/transfer.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import importlib.metadata as md
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from advlab.attacks.gradient import FGSM, IFGSM, MIFGSM
from advlab.attacks.transfer import TransferAttack, train_substitute
from advlab.data import load_dataset
from advlab.evaluation.robustness import provenance
from advlab.models import load
from advlab.oracle import Oracle

logger = logging.getLogger("bench_transfer")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET = RESULTS / "small-cnn-fashion-mnist-seed0-e2"


def attacks_at(eps: float) -> dict[str, Any]:
    return {"FGSM": FGSM(eps=eps), "I-FGSM": IFGSM(eps=eps, steps=10),
            "MI-FGSM": MIFGSM(eps=eps, steps=10, decay=1.0)}


def split(x: Tensor, y: Tensor, target: nn.Module, *, per_class: int, n: int, holdout: int,
          seed: int) -> dict[str, Tensor]:
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    classes = int(y.max()) + 1
    seed_idx = torch.cat([perm[y[perm] == c][:per_class] for c in range(classes)])
    used = torch.zeros(len(y), dtype=torch.bool)
    used[seed_idx] = True
    rest = perm[~used[perm]]
    with torch.no_grad():
        ok = torch.cat([target(x[rest[i:i + 1000]]).argmax(1) for i in range(0, len(rest), 1000)]) == y[rest]
    # evaluation: the first n correctly classified points of the rest; hold-out: the next points
    cut = int(torch.searchsorted(ok.long().cumsum(0), torch.tensor(n)).item()) + 1
    eval_idx = rest[:cut][ok[:cut]]
    hold_idx = rest[cut:cut + holdout]
    assert len(eval_idx) == n and len(set(eval_idx.tolist()) & set(seed_idx.tolist())) == 0
    return {"seed_x": x[seed_idx], "seed_y": y[seed_idx], "x": x[eval_idx], "y": y[eval_idx],
            "hold_x": x[hold_idx], "hold_y": y[hold_idx]}


def timed(fn: Any) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def peer_rows(sub: nn.Module, target: nn.Module, x: Tensor, y: Tensor, eps_list: list[float],
              ours: dict[tuple[float, str], Tensor]) -> list[dict[str, Any]]:
    try:
        import torchattacks
    except ImportError:
        logger.info("torchattacks not installed: no peer sanity rows")
        return []
    rows = []
    for eps in eps_list:
        peers = {"FGSM": torchattacks.FGSM(sub, eps=eps),
                 "I-FGSM": torchattacks.BIM(sub, eps=eps, alpha=eps / 10, steps=10),
                 "MI-FGSM": torchattacks.MIFGSM(sub, eps=eps, alpha=eps / 10, steps=10, decay=1.0)}
        for name, atk in peers.items():
            x_adv, cpu, wall = timed(lambda: atk(x, y))
            with torch.no_grad():
                fooled = target(x_adv).argmax(1) != y
            diff = (x_adv - ours[(eps, name)]).flatten(1).abs().amax(1)
            rows.append({"library": f"torchattacks {md.version('torchattacks')}", "attack": name,
                         "eps": eps, "transfer": float(fooled.float().mean()),
                         "identical_points": int((diff == 0).sum()), "max_abs_diff": float(diff.max()),
                         "cpu_s": cpu, "wall_s": wall})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--architecture", default="small-cnn")
    ap.add_argument("--per-class", type=int, default=15)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--holdout", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--lambda", dest="lambda_", type=float, default=0.1)
    ap.add_argument("--tau", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="transfer")
    ap.add_argument("--summarise", nargs="+", metavar="NAME", default=None,
                    help="no run: render the final rounds of stored runs bench/results/NAME.json into "
                         "bench/results/transfer-summary.md")
    args = ap.parse_args()
    if args.summarise:
        text = summarise(args.summarise)
        (RESULTS / "transfer-summary.md").write_text(text)
        print(text)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    target = load(str(TARGET)).eval()
    test = load_dataset("fashion-mnist", split="test")
    data = split(test.x, test.y, target, per_class=args.per_class, n=args.n, holdout=args.holdout,
                 seed=args.seed)
    x, y = data["x"], data["y"]
    with torch.no_grad():
        hold_acc = float((target(data["hold_x"]).argmax(1) == data["hold_y"]).float().mean())

    oracle = Oracle(target, output="label")
    sub, train_cpu, train_wall = timed(lambda: train_substitute(
        oracle, data["seed_x"], architecture=args.architecture, rounds=args.rounds,
        lambda_=args.lambda_, tau=args.tau, epochs=args.epochs, seed=args.seed,
        holdout_x=data["hold_x"], keep_round_models=True))
    assert sub.queries == oracle.total_queries
    logger.info("substitute: %d queries, agreement %s, %.1f CPU s", sub.queries,
                [round(a, 4) for a in sub.agreement_per_round], train_cpu)

    rows: list[dict[str, Any]] = []
    final_adv: dict[tuple[float, str], Tensor] = {}
    final_success: dict[tuple[float, str], Tensor] = {}
    for rho, model in enumerate(sub.round_models):
        with torch.no_grad():
            sub_acc = float((model(data["hold_x"]).argmax(1) == data["hold_y"]).float().mean())
        row: dict[str, Any] = {"round": rho, "queries": sub.cumulative_queries[rho],
                               "dataset_size": sub.dataset_sizes[rho],
                               "agreement": sub.agreement_per_round[rho], "substitute_accuracy": sub_acc}
        for eps in args.eps:
            for name, attack in attacks_at(eps).items():
                ask = Oracle(target, output="label", budget=1)
                res, cpu, wall = timed(lambda: TransferAttack(attack=attack, source=model)(ask, x, y))
                assert bool(res.threat.contains(res.x_adv, x).all()) and ask.total_queries == len(y)
                row[f"{name}@{eps:g}"] = res.success_rate
                row[f"{name}@{eps:g}:white_box_on_substitute"] = res.source.success_rate
                row[f"{name}@{eps:g}:cpu_s"] = cpu
                if rho == len(sub.round_models) - 1:
                    final_adv[(eps, name)] = res.x_adv
                    final_success[(eps, name)] = res.success
        rows.append(row)
        logger.info("round %d: %s", rho, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)
                                           and ":" not in k})

    refs: dict[str, float] = {}
    g = torch.Generator().manual_seed(args.seed)
    for eps in args.eps:
        noise = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).to(x.dtype) * eps
        with torch.no_grad():
            refs[f"noise@{eps:g}"] = float((target((x + noise).clamp(0, 1)).argmax(1) != y).float().mean())
        for name, attack in attacks_at(eps).items():
            refs[f"{name}@{eps:g}"] = attack(target, x, y).success_rate

    # paired comparison on the final substitute: points only one of two attacks transfers on
    paired = []
    for eps in args.eps:
        for a, b in (("MI-FGSM", "I-FGSM"), ("MI-FGSM", "FGSM"), ("I-FGSM", "FGSM")):
            sa, sb = final_success[(eps, a)], final_success[(eps, b)]
            paired.append({"eps": eps, "a": a, "b": b, "only_a": int((sa & ~sb).sum()),
                           "only_b": int((sb & ~sa).sum())})
    peers = peer_rows(sub.model, target, x, y, args.eps, final_adv)
    versions = {"torch": torch.__version__}
    for lib in ("torchattacks",):
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    out = {"config": vars(args), "rows": rows, "reference": refs, "peers": peers, "paired": paired,
           "substitute": {"queries": sub.queries, "holdout_queries": sub.holdout_queries,
                          "settings": sub.settings, "train_cpu_s": train_cpu, "train_wall_s": train_wall},
           "target_holdout_accuracy": hold_acc,
           "provenance": provenance(threads=args.threads, platform=platform.platform(), **versions)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (RESULTS / f"{args.name}.md").write_text(render(out))
    print(render(out))


def render(out: dict[str, Any]) -> str:
    cfg, rows, refs = out["config"], out["rows"], out["reference"]
    eps_list = cfg["eps"]
    names = ["FGSM", "I-FGSM", "MI-FGSM"]
    sub = out["substitute"]
    lines = [
        "# Substitute training and transfer (Papernot et al. 2017) on Fashion-MNIST", "",
        f"Target: small CNN ({TARGET.name}) behind `Oracle(output=\"label\")`. Substitute: "
        f"`{cfg['architecture']}`, seed set {cfg['per_class']} test images per class, {cfg['rounds']} "
        f"rounds, λ = {cfg['lambda_']}, τ = {cfg['tau']}, {cfg['epochs']} epochs per round "
        "(training continued across rounds). Transfer success = fraction of the "
        f"**{cfg['n']} test points the target classifies correctly** (disjoint from the seed set) whose "
        "adversarial example, crafted on the substitute of that round, the target misclassifies "
        "(one oracle query per point). Agreement: substitute vs oracle labels on "
        f"{cfg['holdout']} other held-out test images (target accuracy there "
        f"{100 * out['target_holdout_accuracy']:.1f}%). 'queries' = oracle labels spent on training "
        "so far (the agreement labels are evaluation, not counted). Attacks: FGSM; I-FGSM and "
        "MI-FGSM with 10 steps, α = ε/10, μ = 1.0 for MI-FGSM. L∞.", "",
    ]
    head = "| round | queries | agreement | sub. acc. | " + " | ".join(
        f"{n} ε={e:g}" for e in eps_list for n in names) + " |"
    lines += [head, "|---:|---:|---:|---:|" + "---:|" * (len(names) * len(eps_list))]
    for r in rows:
        cells = [f"{100 * r[f'{n}@{e:g}']:.1f}" for e in eps_list for n in names]
        lines.append(f"| {r['round']} | {r['queries']} | {100 * r['agreement']:.1f} | "
                     f"{100 * r['substitute_accuracy']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Transfer success in %. References on the same points (target = the oracle's model):", "",
              "| reference | " + " | ".join(f"ε={e:g}" for e in eps_list) + " |",
              "|---|" + "---:|" * len(eps_list)]
    lines.append("| random ±ε sign noise | " + " | ".join(f"{100 * refs[f'noise@{e:g}']:.1f}" for e in eps_list) + " |")
    for n in names:
        lines.append(f"| {n} white-box on the target | " + " | ".join(
            f"{100 * refs[f'{n}@{e:g}']:.1f}" for e in eps_list) + " |")
    last = rows[-1]
    lines += ["", "White-box success on the final substitute itself (its own labels are y here): " + ", ".join(
        f"{n} ε={e:g} {100 * last[f'{n}@{e:g}:white_box_on_substitute']:.1f}%" for e in eps_list for n in names) + "."]
    lines += ["", "Paired, final substitute (points where exactly one of the two attacks transfers; "
              "a sign test is significant at 5% only when the split is far from even): " + "; ".join(
                  f"ε={p['eps']:g} {p['a']} only {p['only_a']} vs {p['b']} only {p['only_b']}"
                  for p in out["paired"]) + "."]
    if out["peers"]:
        lines += ["", "Peer sanity, final substitute, same points and hyperparameters:", "",
                  "| library | attack | ε | transfer % | advlab transfer % | identical x_adv | max abs diff | CPU s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for p in out["peers"]:
            lines.append(f"| {p['library']} | {p['attack']} | {p['eps']:g} | {100 * p['transfer']:.1f} | "
                         f"{100 * last[p['attack'] + '@' + format(p['eps'], 'g')]:.1f} | "
                         f"{p['identical_points']}/{cfg['n']} | {p['max_abs_diff']:.2g} | {p['cpu_s']:.2f} |")
    cpu = [f"{n} ε={e:g} {rows[-1][f'{n}@{e:g}:cpu_s']:.2f}" for e in eps_list for n in names]
    lines += ["", f"Cost: substitute training {sub['train_cpu_s']:.1f} CPU s ({sub['train_wall_s']:.1f} wall s) "
              f"for {sub['queries']} labels; crafting on the final substitute, CPU s for {cfg['n']} points: "
              + ", ".join(cpu) + f". torch threads: {cfg['threads']}; shared, loaded 2-core machine.", "",
              f"Provenance: {json.dumps(out['provenance'])}", ""]
    return "\n".join(lines)


def summarise(names: list[str]) -> str:
    """Final-round rows of several stored runs (seeds, τ, architectures) side by side."""
    runs = [(n, json.loads((RESULTS / f"{n}.json").read_text())) for n in names]
    eps_list = runs[0][1]["config"]["eps"]
    names_ = ["FGSM", "I-FGSM", "MI-FGSM"]
    lines = ["# Transfer from Papernot substitutes: final round of each stored run", "",
             "Each row: one run of `bench/bench_transfer.py` (its own .md has every round). Transfer success "
             "(%) over the run's n points the target classifies correctly; 'noise' is random ±ε sign "
             "noise on the same points.", "",
             "| run | arch. | seed | τ | queries | agreement | " + " | ".join(
                 f"{a} ε={e:g}" for e in eps_list for a in names_) + " | " + " | ".join(
                 f"noise ε={e:g}" for e in eps_list) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * (len(names_) * len(eps_list) + len(eps_list))]
    for n, out in runs:
        cfg, last = out["config"], out["rows"][-1]
        lines.append(f"| {n} | {cfg['architecture']} | {cfg['seed']} | {cfg['tau']} | {last['queries']} | "
                     f"{100 * last['agreement']:.1f} | " + " | ".join(
                         f"{100 * last[f'{a}@{e:g}']:.1f}" for e in eps_list for a in names_) + " | " +
                     " | ".join(f"{100 * out['reference'][f'noise@{e:g}']:.1f}" for e in eps_list) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
