"""Square Attack on 1-D signal models (issue #14 item 3): advlab against torchattacks where it runs.

A :class:`~advlab.models.zoo.CNN1d` is trained (seed 0) on each bundled signal set's TRAIN split
(``advlab[signals]``: the sktime wheel's .ts files, read by advlab's own parser) and attacked on the
correctly classified points of its TEST split, at L∞ ε with a budget of queries per point:

* advlab ``SquareAttack(eps, norm="linf", budget, p_init=0.8, loss="cw")`` on the ``(N, C, T)``
  signals themselves, through ``Oracle(model, output="scores", budget)`` (its squares become
  windows in time, shared by all channels, as they are shared by an image's colour channels);
* torchattacks ``Square(norm="Linf", eps, n_queries, p_init=0.8, loss="margin", seed=0)``, which
  takes ``(N, C, H, W)`` images only. It is run on the same signals viewed as images of height 1,
  ``(N, C, 1, T)``, through a wrapper that reshapes them back for the same model; whether that
  runs, and what it finds, is reported as it happens (an exception is recorded, not hidden).

Queries are counted by attacking each point alone through :class:`OnePointCounter` (the
signals of a set can be closer than 2ε in L∞, so rows of a batch cannot be attributed by
distance as ``bench_square.py`` does): *queries to success* is the number of the first row the
model misclassified, *rows / point* every row spent. The batched runs, timed, must return the same
successes (both attacks draw per batch, so the per-point runs are a separate, reported count). Timing: a
warm-up, then ``--rounds`` rounds with the contenders interleaved (A B, B A); medians of CPU
seconds (torch on one thread).

Run: ``.venv-bench/bin/python bench/bench_square_signal.py``; writes
``bench/results/square_signal.md`` and ``.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import datetime as dt
import json
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import _common

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


class OnePointCounter(nn.Module):
    """The model, counting the rows forwarded while one point is attacked and the number of the
    first row it misclassified (0 if none)."""

    def __init__(self, model: nn.Module, y: int) -> None:
        super().__init__()
        self.model, self.y = model, y
        self.rows = self.first_adv = 0

    def forward(self, q: Tensor) -> Tensor:
        out = self.model(q)
        for wrong in (out.detach().argmax(1) != self.y).tolist():
            self.rows += 1
            if wrong and not self.first_adv:
                self.first_adv = self.rows
        return out


class AsImage(nn.Module):
    """``(N, C, 1, T)`` images → the signal model's ``(N, C, T)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.squeeze(2))


def train_model(name: str, *, epochs: int, seed: int) -> tuple[nn.Module, Any, float]:
    from advlab.data import load_signal
    from advlab.models import build_seeded
    from advlab.models.training import fit

    train, test = load_signal(name, split="train"), load_signal(name, split="test")
    model = build_seeded("cnn1d", in_shape=tuple(train.x.shape[1:]), num_classes=len(train.class_names), seed=seed)
    fit(model, train.x, train.y, epochs=epochs, batch_size=16, lr=3e-3, seed=seed, progress=False)
    model.eval()
    with torch.no_grad():
        acc = float((model(test.x).argmax(1) == test.y).float().mean())
    return model, test, acc


def run_advlab(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, queries: int, seed: int) -> Tensor:
    from advlab.attacks.score import SquareAttack
    from advlab.oracle import Oracle

    attack = SquareAttack(eps=eps, norm="linf", budget=queries, p_init=0.8, loss="cw", restarts=1)
    return attack(Oracle(model, output="scores", budget=queries), x, y,
                  generator=torch.Generator().manual_seed(seed)).x_adv


def run_torchattacks(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, queries: int, seed: int) -> Tensor:
    import torchattacks

    attack = torchattacks.Square(AsImage(model).eval(), norm="Linf", eps=eps, n_queries=queries, n_restarts=1,
                                 p_init=0.8, loss="margin", resc_schedule=True, seed=seed)
    return attack(x.unsqueeze(2), y).squeeze(2)


CONTENDERS = {"advlab": run_advlab, "torchattacks": run_torchattacks}


def one_set(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model, test, acc = train_model(name, epochs=args.epochs, seed=0)
    with torch.no_grad():
        ok = model(test.x).argmax(1) == test.y
    x, y = test.x[ok][: args.n], test.y[ok][: args.n]
    row: dict[str, Any] = {"set": name, "shape": list(test.x.shape[1:]), "clean_accuracy": acc,
                           "points": len(x), "contenders": {}}
    for key, fn in CONTENDERS.items():   # batched run: success, and whether it runs at all
        try:
            x_adv = fn(model, x, y, eps=args.eps, queries=args.queries, seed=0)
        except Exception as exc:  # recorded as found: the peer's own error
            row["contenders"][key] = {"runs": False, "error": "".join(
                traceback.format_exception_only(type(exc), exc)).strip()}
            continue
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        inside = bool(((x_adv - x).abs().amax() <= args.eps + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1)
        first, rows = [], []
        for i in range(len(x)):          # one point at a time: exact query counts
            counter = OnePointCounter(model, int(y[i])).eval()
            fn(counter, x[i:i + 1], y[i:i + 1], eps=args.eps, queries=args.queries, seed=0)
            first.append(counter.first_adv)
            rows.append(counter.rows)
        q = torch.tensor([f for f in first if f], dtype=torch.float)
        row["contenders"][key] = {"runs": True, "success": int(fooled.sum()), "inside": inside,
                                  "success_one_by_one": len(q),
                                  "mean_queries_success": float(q.mean()) if len(q) else float("nan"),
                                  "median_queries_success": float(q.median()) if len(q) else float("nan"),
                                  "rows_per_point": sum(rows) / len(rows), "cpu_s": []}
    live = [k for k, v in row["contenders"].items() if v["runs"]]
    for k in live:  # warm-up
        CONTENDERS[k](model, x[:2], y[:2], eps=args.eps, queries=20, seed=0)
    for r in range(args.rounds):
        for k in (live if r % 2 == 0 else live[::-1]):
            t = time.process_time()
            CONTENDERS[k](model, x, y, eps=args.eps, queries=args.queries, seed=0)
            row["contenders"][k]["cpu_s"].append(time.process_time() - t)
    for k in live:
        row["contenders"][k]["cpu_median_s"] = statistics.median(row["contenders"][k]["cpu_s"])
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [f"# Square Attack on 1-D signal models (L∞ ε = {args.eps:g}, {args.queries} queries, p_init 0.8)", "",
           "| set (C × T) | clean acc | contender | runs | success (batched) | success (one by one) | "
           "mean queries / success (median) | rows / point | CPU s (median) | CPU ratio vs advlab (median of pairs) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for k, v in row["contenders"].items():
            head = f"{row['set']} ({' × '.join(map(str, row['shape']))}) | {row['clean_accuracy']:.3f}"
            if not v["runs"]:
                out.append(f"| {head} | {k} | no: `{v['error'][:160]}` | | | | | | |")
                continue
            mine = row["contenders"].get("advlab", {}).get("cpu_s") or []
            pairs = [t / a for t, a in zip(v["cpu_s"], mine) if a]  # per round: A B, B A interleaved
            ratio = f"{statistics.median(pairs):.2f}x" if pairs else ""
            out.append(f"| {head} | {k} | yes | {v['success']}/{row['points']} | "
                       f"{v['success_one_by_one']}/{row['points']} | {v['mean_queries_success']:.1f} ({v['median_queries_success']:.0f}) | "
                       f"{v['rows_per_point']:.1f} | {v['cpu_median_s']:.2f} | {ratio} |")
    out += ["", "Outputs inside the ε-ball and [0, 1]: " + ", ".join(
        f"{r['set']}/{k}: {'yes' if v.get('inside') else 'no'}" for r in rows for k, v in r["contenders"].items()
        if v["runs"]), "", f"Versions: {json.dumps(_common.versions(('torch', 'advlab', 'torchattacks', 'sktime')))}; "
        f"code {_common.git_revision()}; {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}; "
        f"{args.rounds} timed rounds, interleaved."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="gunpoint,basic-motions")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="square_signal")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [one_set(s, args) for s in args.sets.split(",")]
    RESULTS.mkdir(exist_ok=True)
    text = markdown(rows, args)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
