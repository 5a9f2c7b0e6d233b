"""Square Attack (L∞, score-based): advlab against torchattacks and ART, queries per success.

On the small CNN trained 2 epochs on Fashion-MNIST (``bench/results/small-cnn-fashion-mnist-seed0-e2``,
clean accuracy 0.884), every contender attacks the same points: the first ``--n`` (200) correctly
classified test images, at L∞ ε = 0.1 with a budget of 1,000 queries per point:

* advlab ``SquareAttack(eps=0.1, norm="linf", budget=1000, p_init=0.8, loss="cw")`` through
  ``Oracle(model, output="scores", budget=1000)``, generator seeded with 0;
* torchattacks ``Square(norm="Linf", eps=0.1, n_queries=1000, n_restarts=1, p_init=0.8,
  loss="margin", seed=0)``;
* ART ``SquareAttack(norm=np.inf, max_iter=1000, eps=0.1, p_init=0.8, nb_restarts=1,
  batch_size=n)`` on a ``PyTorchClassifier`` (numpy and ``random`` seeded with 0).

How queries are counted. advlab reports per-point queries itself (``AttackResult.queries``, every
oracle answer, the clean query included). torchattacks and ART expose no per-point counts, so
every contender is also run once on the model wrapped in :class:`RowCounter`, which attributes
each row of each forward call to the attacked point it is within ε (L∞) of — the points are
checked to be more than 2ε apart, so the owner is unique — and records, per point, the rows
forwarded in total and the row at which the model first answered "misclassified". *Queries to
success* is that row's number: all rows the attack spent on the point up to and including the
first adversarial answer (what the Square Attack paper reports). *Rows per point* counts every
row, also the ones an attack spends after success (torchattacks evaluates the final points once
more; ART re-classifies every point, fooled or not, at each of its iterations). The counting run
must return exactly the adversarial examples of the timed runs (all contenders are seeded), and
advlab's counted rows must equal its own ``queries``.

Timing: a warm-up call of each contender on 4 points, then ``--rounds`` rounds, each running every
contender once on all points, the order reversed every other round (A B C, C B A); medians are
reported. Wall seconds and CPU seconds of this process (``time.process_time``). Torch, OpenMP and
BLAS run on one thread (``--threads``), so CPU seconds are the work done; the machine is shared
with other jobs (2 cores), so wall seconds swing and the targets use CPU seconds.

Targets (issue #4): advlab's success rate ≥ each peer's, and fewer mean queries per success.

Run: ``.venv-bench/bin/python bench/bench_square.py``. Writes ``bench/results/square.md`` and
``bench/results/square.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import datetime as dt
import json
import logging
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import _common  # bench/_common.py: provenance helpers shared by the bench scripts

logger = logging.getLogger("bench_square")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CHECKPOINT = RESULTS / "small-cnn-fashion-mnist-seed0-e2"


@dataclass(frozen=True)
class Config:
    n: int = 200
    eps: float = 0.1
    queries: int = 1000
    p_init: float = 0.8
    seed: int = 0
    rounds: int = 2
    threads: int = 1


NAMES = {
    "advlab": "advlab `SquareAttack`",
    "torchattacks": "torchattacks `Square`",
    "art": "ART `SquareAttack`",
}


class RowCounter(nn.Module):
    """The model, counting the rows each attacked point costs (see the module notes).

    ``rows[i]``: rows forwarded for point ``i``; ``first_adv[i]``: the number of the first row for
    point ``i`` the model misclassified (0 if none).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> None:
        super().__init__()
        self.model = model
        self.x = x.flatten(1)
        self.y = y
        self.tol = eps + 1e-5
        var = self.x.var(dim=0)
        self.probe = var.topk(64).indices               # a prefilter on the most varied pixels
        self.rows = torch.zeros(len(y), dtype=torch.long)
        self.first_adv = torch.zeros(len(y), dtype=torch.long)
        self.calls = 0

    def owners(self, q: Tensor) -> Tensor:
        flat = q.detach().flatten(1)
        near = (flat[:, None, self.probe] - self.x[None, :, self.probe]).abs().amax(-1) <= self.tol
        owner = near.to(torch.uint8).argmax(1)
        dist = (flat - self.x[owner]).abs().amax(1)
        ok = (near.sum(1) == 1) & (dist <= self.tol)
        for r in (~ok).nonzero().squeeze(1).tolist():          # rare: several candidates
            cand = near[r].nonzero().squeeze(1)
            cand = cand[(flat[r][None] - self.x[cand]).abs().amax(-1) <= self.tol]
            if cand.numel() != 1:
                raise RuntimeError(f"row {r} of a forward call is within eps of {cand.numel()} points")
            owner[r] = cand[0]
        return owner

    def forward(self, q: Tensor) -> Tensor:
        out = self.model(q)
        owner = self.owners(q)
        self.calls += 1
        wrong = out.detach().argmax(1) != self.y[owner]
        if owner.unique().numel() == owner.numel():            # one row per point (the usual case)
            before = self.rows[owner]
            self.rows[owner] += 1
            new = wrong & (self.first_adv[owner] == 0)
            self.first_adv[owner[new]] = before[new] + 1
        else:
            for r, i in enumerate(owner.tolist()):
                self.rows[i] += 1
                if self.first_adv[i] == 0 and bool(wrong[r]):
                    self.first_adv[i] = self.rows[i]
        return out


Contender = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor | None]]


def make_contenders(cfg: Config, n: int) -> dict[str, Contender]:
    import art.attacks.evasion as art_evasion
    import art.estimators.classification as art_cls
    import torchattacks

    from advlab.attacks.score import SquareAttack
    from advlab.oracle import Oracle

    def advlab(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        attack = SquareAttack(eps=cfg.eps, norm="linf", budget=cfg.queries, p_init=cfg.p_init,
                              loss="cw", restarts=1)
        r = attack(Oracle(model, output="scores", budget=cfg.queries), x, y,
                   generator=torch.Generator().manual_seed(cfg.seed))
        return r.x_adv, r.queries

    def ta(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        attack = torchattacks.Square(model, norm="Linf", eps=cfg.eps, n_queries=cfg.queries, n_restarts=1,
                                     p_init=cfg.p_init, loss="margin", resc_schedule=True, seed=cfg.seed)
        return attack(x, y), None

    def art(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        clf = art_cls.PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
        attack = art_evasion.SquareAttack(clf, norm=np.inf, max_iter=cfg.queries, eps=cfg.eps,
                                          p_init=cfg.p_init, nb_restarts=1, batch_size=n, verbose=False)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        return torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy())), None

    return {"advlab": advlab, "torchattacks": ta, "art": art}



def versions() -> dict[str, str]:
    return _common.versions(("torch", "advlab", "torchattacks", "adversarial-robustness-toolbox", "numpy"))



git_revision = _common.git_revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=Config.n)
    parser.add_argument("--rounds", type=int, default=Config.rounds)
    parser.add_argument("--threads", type=int, default=Config.threads)
    parser.add_argument("--contenders", default="advlab,torchattacks,art")
    parser.add_argument("--out", default="square")
    parser.add_argument("--seed-study", default="",
                        help="comma-separated extra seeds: count-only runs (no timing) of the contenders in "
                             "--seed-contenders, added to an existing results file (the main run is skipped)")
    parser.add_argument("--seed-contenders", default="advlab,torchattacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = Config(n=args.n, rounds=args.rounds, threads=args.threads)
    torch.set_num_threads(cfg.threads)

    from advlab.data import load_dataset
    from advlab.models import load

    model = load(str(CHECKPOINT)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    test = load_dataset("fashion-mnist", split="test")
    with torch.no_grad():
        pred = torch.cat([model(test.x[i:i + 1000]).argmax(1) for i in range(0, len(test.y), 1000)])
    clean_acc = float((pred == test.y).float().mean())
    idx = (pred == test.y).nonzero().squeeze(1)[:cfg.n]
    x, y = test.x[idx].clone(), test.y[idx].clone()
    flat = x.flatten(1)
    sep = min(float((flat[i + 1:] - flat[i]).abs().amax(1).min()) for i in range(len(y) - 1))
    if sep <= 2 * cfg.eps:
        raise SystemExit(f"two attacked points are only {sep:.3f} apart in L∞; rows cannot be attributed")
    logger.info("clean accuracy %.4f; attacking %d points (test indices %d..%d), min L∞ separation %.3f",
                clean_acc, len(y), int(idx[0]), int(idx[-1]), sep)

    if args.seed_study:
        return seed_study(args, cfg, model, x, y)

    contenders = {k: v for k, v in make_contenders(cfg, len(y)).items() if k in args.contenders.split(",")}
    names = list(contenders)

    # warm-up
    for name in names:
        contenders[name](model, x[:4], y[:4])

    # timed rounds, interleaved
    timing: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in names}
    outputs: dict[str, Tensor] = {}
    own_queries: dict[str, Tensor | None] = {}
    for rnd in range(cfg.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            w0, c0 = time.perf_counter(), time.process_time()
            x_adv, q = contenders[name](model, x, y)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            timing[name]["wall"].append(wall)
            timing[name]["cpu"].append(cpu)
            logger.info("round %d %-12s wall %.2fs cpu %.2fs", rnd, name, wall, cpu)
            if name in outputs:
                if not torch.equal(outputs[name], x_adv):
                    raise SystemExit(f"{name} is not deterministic across rounds")
            outputs[name], own_queries[name] = x_adv, q

    # counting runs
    rows = {}
    for name in names:
        counter = RowCounter(model, x, y, cfg.eps).eval()
        x_adv, q = contenders[name](counter, x, y)
        if not torch.equal(x_adv, outputs[name]):
            raise SystemExit(f"{name}: the counting run returned other points than the timed runs")
        rows[name] = counter
        if q is not None and not torch.equal(q, counter.rows):
            raise SystemExit(f"{name}: its own query counts differ from the rows counted")
        logger.info("counted %s: %d forward calls, %d rows", name, counter.calls, int(counter.rows.sum()))

    # results
    table = {}
    for name in names:
        x_adv = outputs[name]
        in_ball = bool(((x_adv - x).abs().flatten(1).amax(1) <= cfg.eps + 1e-6).all())
        in_box = bool(((x_adv >= 0) & (x_adv <= 1)).all())
        with torch.no_grad():
            success = model(x_adv).argmax(1) != y
        c = rows[name]
        to_success = c.first_adv[success].double()
        if bool((to_success == 0).any()):
            raise SystemExit(f"{name}: a successful point never had an adversarial row counted")
        table[name] = {
            "success": int(success.sum()), "n": len(y), "success_rate": float(success.float().mean()),
            "mean_queries_to_success": float(to_success.mean()) if len(to_success) else None,
            "median_queries_to_success": float(to_success.median()) if len(to_success) else None,
            "mean_rows_per_point": float(c.rows.double().mean()),
            "max_rows_per_point": int(c.rows.max()),
            "forward_calls": c.calls,
            "in_threat_model": in_ball and in_box,
            "wall_s": statistics.median(timing[name]["wall"]),
            "cpu_s": statistics.median(timing[name]["cpu"]),
            "wall_all": timing[name]["wall"], "cpu_all": timing[name]["cpu"],
        }

    targets = {}
    if "advlab" in table:
        a = table["advlab"]
        for peer in names:
            if peer == "advlab":
                continue
            p = table[peer]
            targets[peer] = {
                "success_ge": a["success"] >= p["success"],
                "fewer_mean_queries": (a["mean_queries_to_success"] or 0) < (p["mean_queries_to_success"] or 0),
            }

    record = {
        "benchmark": "square", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg), "clean_accuracy": clean_acc, "points": idx.tolist(),
        "min_linf_separation": sep, "results": table, "targets": targets,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_average_at_end": os.getloadavg()},
        "versions": versions(), "code_revision": git_revision(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(record, indent=1))
    (RESULTS / f"{args.out}.md").write_text(render(record))
    print(render(record))
    return 0


def count_run(contender: Contender, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> dict[str, Any]:
    """One run on the model wrapped in :class:`RowCounter`: success and queries to success."""
    counter = RowCounter(model, x, y, eps).eval()
    x_adv, q = contender(counter, x, y)
    if q is not None and not torch.equal(q, counter.rows):
        raise SystemExit("its own query counts differ from the rows counted")
    if not bool(((x_adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all() & (x_adv >= 0).all() & (x_adv <= 1).all()):
        raise SystemExit("a returned point is outside the threat model")
    with torch.no_grad():
        success = model(x_adv).argmax(1) != y
    to_success = counter.first_adv[success].double()
    return {"success": int(success.sum()), "mean_queries_to_success": float(to_success.mean()),
            "median_queries_to_success": float(to_success.median())}


def seed_study(args: argparse.Namespace, cfg: Config, model: nn.Module, x: Tensor, y: Tensor) -> int:
    import dataclasses

    path = RESULTS / f"{args.out}.json"
    record = json.loads(path.read_text())
    if record["config"]["n"] != len(y):
        raise SystemExit(f"{path} was run on {record['config']['n']} points, not {len(y)}")
    study = record.setdefault("seed_study", {})
    for seed in [int(s) for s in args.seed_study.split(",")]:
        contenders = make_contenders(dataclasses.replace(cfg, seed=seed), len(y))
        for name in args.seed_contenders.split(","):
            out = count_run(contenders[name], model, x, y, cfg.eps)
            study.setdefault(name, {})[str(seed)] = out
            logger.info("seed %d %-12s %s", seed, name, out)
    main_seed = str(record["config"]["seed"])
    for name, r in record["results"].items():
        if name in study:
            study[name][main_seed] = {k: r[k] for k in ("success", "mean_queries_to_success",
                                                         "median_queries_to_success")}
    path.write_text(json.dumps(record, indent=1))
    (RESULTS / f"{args.out}.md").write_text(render(record))
    print(render(record))
    return 0


def render(rec: dict[str, Any]) -> str:
    cfg = rec["config"]
    res = rec["results"]
    base = res.get("advlab")
    lines = [
        "# Square Attack (L∞, score-based): advlab vs torchattacks vs ART",
        "",
        f"Small CNN on Fashion-MNIST (clean accuracy {rec['clean_accuracy']:.3f}); the first {cfg['n']} correctly "
        f"classified test points (denominator {cfg['n']}); L∞ ε = {cfg['eps']}; {cfg['queries']} queries per point "
        f"(advlab: oracle budget and `queries`; torchattacks: `n_queries`; ART: `max_iter`); p_init = {cfg['p_init']}, "
        "margin loss, 1 restart, seed 0.",
        "",
        "| contender | success | mean queries / success | median | rows / point (all) | max rows | forward calls "
        "| wall s | CPU s | CPU ratio vs advlab |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        ratio = f"{r['cpu_s'] / base['cpu_s']:.2f}x" if base else "-"
        mq = "-" if r["mean_queries_to_success"] is None else f"{r['mean_queries_to_success']:.1f}"
        md_ = "-" if r["median_queries_to_success"] is None else f"{r['median_queries_to_success']:.0f}"
        lines.append(f"| {NAMES[name]} | {r['success']}/{r['n']} ({100 * r['success_rate']:.1f}%) | {mq} | {md_} "
                     f"| {r['mean_rows_per_point']:.1f} | {r['max_rows_per_point']} | {r['forward_calls']} "
                     f"| {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {ratio} |")
    lines += [
        "",
        "*Queries / success*: forward rows spent on a point up to and including the first row the model "
        "misclassified, over the points the contender fooled (its returned point is misclassified). "
        "*Rows / point*: every forward row attributed to the point, also after success. Rows are "
        "attributed by wrapping the model (`RowCounter`): each row belongs to the attacked point it is "
        f"within ε of in L∞ (attacked points are ≥ {rec['min_linf_separation']:.3f} apart, > 2ε). "
        "advlab counts its own queries through the oracle session; the counted rows equal them. "
        "torchattacks spends 1 clean forward + 1 initial point + 1 per iteration, and one more forward "
        "of its final points; ART re-classifies every point (fooled or not) at each iteration and "
        "evaluates the current and the candidate point's loss, so 3 rows per iteration per robust point.",
        "",
        f"Timing: median of {cfg['rounds']} rounds, contenders interleaved (A B C, C B A), after a warm-up; "
        f"torch on {cfg['threads']} thread(s). The machine (2 cores) was shared with other jobs during "
        "the run, so wall seconds are noisy; compare CPU seconds. Every contender's outputs are "
        "inside the ε-ball and [0, 1]: "
        + ", ".join(f"{k}: {'yes' if v['in_threat_model'] else 'NO'}" for k, v in res.items()) + ".",
        "",
    ]
    if rec["targets"]:
        lines.append("Targets (issue #4): " + "; ".join(
            f"vs {NAMES[p]}: success ≥ peer {'PASS' if t['success_ge'] else 'FAIL'}, fewer mean queries per "
            f"success {'PASS' if t['fewer_mean_queries'] else 'FAIL'}" for p, t in rec["targets"].items()) + ".")
        lines.append("")
    if rec.get("seed_study"):
        study = rec["seed_study"]
        seeds = sorted({int(s) for per in study.values() for s in per})
        lines += [f"Seed study (count-only runs, same points; seeds {', '.join(map(str, seeds))}; ART left out: "
                  "one run takes ~2 CPU minutes): successes / mean queries per success (median).", "",
                  "| contender | " + " | ".join(f"seed {s}" for s in seeds) + " | mean over seeds |",
                  "|---|" + "---|" * (len(seeds) + 1)]
        for name, per in study.items():
            cells = [f"{per[str(s)]['success']} / {per[str(s)]['mean_queries_to_success']:.1f} "
                     f"({per[str(s)]['median_queries_to_success']:.0f})" if str(s) in per else "-" for s in seeds]
            succ = statistics.mean(per[str(s)]["success"] for s in seeds if str(s) in per)
            mq = statistics.mean(per[str(s)]["mean_queries_to_success"] for s in seeds if str(s) in per)
            lines.append(f"| {NAMES[name]} | " + " | ".join(cells) + f" | {succ:.1f} / {mq:.1f} |")
        lines.append("")
    load = ", ".join(f"{v:.1f}" for v in rec["machine"]["load_average_at_end"])
    lines += [f"Versions: {', '.join(f'{k} {v}' for k, v in rec['versions'].items())}; code {rec['code_revision']}; "
              f"{rec['date']}; load average at end {load}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
