"""HopSkipJump (hard-label, L2): advlab against ART at a fixed query budget per point.

On the Fashion-MNIST small CNN (``bench/results/small-cnn-fashion-mnist-seed0-e2``, clean accuracy
0.884) both contenders attack the same points: the first ``--n`` correctly classified test images.
For each budget ``B`` in ``--budgets`` (1,000 and 5,000 queries per point) we report the median L2
distance of the adversarial examples (a point not broken counts as ``inf``), the success rate
(checked by running the model on the returned points), the queries actually spent per point, and
wall and CPU seconds.

Contenders, with the same Monte-Carlo schedule ``n_t = min(100 √t, 10000)``:

* advlab ``HopSkipJump(norm="l2", budget=B)`` with ``Oracle(model, output="label")``: all points
  in one batched call; the oracle counts every row and the attack never exceeds ``B``.
* ART ``HopSkipJump(norm=2, init_eval=100, max_eval=10000, init_size=100)`` on a
  ``PyTorchClassifier`` (``batch_size=4096`` so a Monte-Carlo batch is one forward). ART has no
  query budget, so its queries are counted by wrapping the model's forward and counting rows,
  and the attack is advanced one iteration at a time on one point
  (``max_iter=1``, ``x_adv_init`` = the previous output, ``resume=True``, ``curr_iter`` kept): the
  same computation as one uninterrupted run, since ART's loop carries nothing else from one
  iteration to the next. ART's result at budget ``B`` is its output after the last iteration
  that ended within ``B`` queries (counted from the first query on that point). Each resumed
  call makes two bookkeeping queries an uninterrupted run would not (ART predicts ``x`` and
  ``x_adv_init`` again); they are subtracted from ART's count (they are counted separately and
  shown), and the time of those two single-row forwards stays in ART's time. ART's time at ``B``
  is the time of the calls that produced that result.

ART runs point by point (its implementation loops over points); advlab runs the whole batch.
Torch, OpenMP and BLAS run on ``--threads`` threads (1 by default). The machine is shared with
other jobs, so wall seconds are noisy; CPU seconds (``time.process_time``) measure the work done.
advlab runs before and after ART (A B A) to show how much the load moved.

Run: ``.venv-bench/bin/python bench/bench_hsj.py`` (add ``--art-n 50`` to run ART on fewer
points; advlab's medians are then also given on those points). Writes ``bench/results/hsj.md``
and ``bench/results/hsj.json``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ.setdefault(_var, "1")

import argparse
import datetime as dt
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import _common  # bench/_common.py: provenance helpers shared by the bench scripts

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("bench_hsj")

CHECKPOINT = HERE / "results" / "small-cnn-fashion-mnist-seed0-e2"


class RowCounter(nn.Module):
    """Wraps a model; counts the rows of every forward (ART's queries) and casts them to float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += int(x.shape[0])
        self.calls += 1
        # ART's binary search blends with a float64 scalar, so some of its queries arrive as
        # float64; the model is float32
        return self.model(x.float())


def select_points(model: nn.Module, n: int) -> tuple[Tensor, Tensor, int]:
    from advlab.data import load_dataset

    test = load_dataset("fashion-mnist", split="test")
    x, y = torch.as_tensor(test.x[:2 * n + 200]).float(), torch.as_tensor(test.y[:2 * n + 200]).long()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = ok.nonzero().squeeze(1)[:n]
    if idx.numel() < n:
        raise SystemExit(f"only {idx.numel()} correctly classified points among the first {len(y)}")
    return x[idx], y[idx], int(idx.max()) + 1


def l2(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(1).norm(dim=1)


def check(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> dict[str, Any]:
    with torch.no_grad():
        adv = model(x_adv).argmax(1) != y
    inside = bool(((x_adv >= 0) & (x_adv <= 1)).all())
    dist = torch.where(adv, l2(x_adv, x), torch.full((len(y),), math.inf))
    return {"success": adv, "dist": dist, "in_box": inside}


def median(t: Tensor) -> float:
    return float(t.double().median())  # lower median (torch); inf if half or more failed


def run_advlab(model: nn.Module, x: Tensor, y: Tensor, budget: int, seed: int,
               chunk: int) -> dict[str, Any]:
    from advlab.attacks.decision import HopSkipJump
    from advlab.oracle import Oracle

    oracle = Oracle(model, output="label", batch_size=chunk)
    attack = HopSkipJump(norm="l2", budget=budget)
    w0, c0 = time.perf_counter(), time.process_time()
    r = attack(oracle, x, y, generator=torch.Generator().manual_seed(seed))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out = check(model, x, y, r.x_adv)
    assert out["in_box"] and bool((out["success"] == r.success).all()), "advlab result check failed"
    assert int(r.queries.max()) <= budget
    return {"x_adv": r.x_adv, **out, "queries": r.queries.double(), "wall": wall, "cpu": cpu,
            "attack": r.attack}


def run_art(model: nn.Module, x: Tensor, budgets: list[int], batch_size: int,
            seed: int) -> dict[int, dict[str, Any]]:
    from art.attacks.evasion import HopSkipJump as ArtHSJ
    from art.estimators.classification import PyTorchClassifier

    counter = RowCounter(model).eval()
    clf = PyTorchClassifier(model=counter, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = ArtHSJ(clf, batch_size=batch_size, targeted=False, norm=2, max_iter=1, max_eval=10_000,
                    init_eval=100, init_size=100, verbose=False)
    np.random.seed(seed)  # ART's Monte-Carlo noise uses NumPy's global RNG (its init is unseeded)
    cap = max(budgets)
    n = len(x)
    res = {b: {"x_adv": x.clone(), "queries": torch.zeros(n, dtype=torch.float64), "wall": 0.0,
               "cpu": 0.0, "iterations": torch.zeros(n, dtype=torch.long)} for b in budgets}
    bookkeeping = 0
    for i in range(n):
        xi = x[i:i + 1].numpy()
        counter.rows = 0
        attack.curr_iter = 0
        adv: np.ndarray | None = None
        extra = 0
        wall = cpu = 0.0
        history: list[tuple[int, np.ndarray, float, float, int]] = []  # (queries, output, wall, cpu, t)
        for t in range(10_000):
            w0, c0 = time.perf_counter(), time.process_time()
            if adv is None:
                out = attack.generate(x=xi)
            else:
                attack.curr_iter = t
                out = attack.generate(x=xi, x_adv_init=adv.copy(), resume=True)
                extra += 2  # predict(x) and predict(x_adv_init) at the top of generate()
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
            q = counter.rows - extra
            if q > cap:
                break
            history.append((q, out, wall, cpu, t + 1))
            adv = out
            if np.array_equal(out, xi):  # ART found no adversarial start and returned x
                break
        bookkeeping += extra
        for b in budgets:
            fit = [h for h in history if h[0] <= b]
            if fit:
                q, out, w, c, it = fit[-1]
                res[b]["x_adv"][i] = torch.from_numpy(out[0])
                res[b]["queries"][i] = q
                res[b]["wall"] += w
                res[b]["cpu"] += c
                res[b]["iterations"][i] = it
        if (i + 1) % 10 == 0:
            logger.info("ART: %d/%d points", i + 1, n)
    for b in budgets:
        res[b]["bookkeeping_queries"] = bookkeeping
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--art-n", type=int, default=None, help="points for ART (default: --n)")
    p.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=256,
                   help="rows per model forward, for both (advlab Oracle batch_size, ART batch_size)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "hsj")
    p.add_argument("--render", type=Path, default=None,
                   help="only re-render the Markdown from this JSON result (computes nothing)")
    p.add_argument("--note", default="", help="a note stored with the timing rounds and shown in the report")
    p.add_argument("--timing-rounds", type=int, default=0,
                   help="instead of the full run: R interleaved timing rounds (advlab, ART, then ART, "
                        "advlab, ...) on the first --art-n points; writes <out>_timing.json")
    args = p.parse_args(argv)
    if args.render is not None:
        rep = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(render(rep, timing_of(args.render)))
        print(render(rep, timing_of(args.render)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    budgets = sorted(args.budgets)

    from advlab.models import load

    model = load(str(CHECKPOINT)).eval()
    x, y, scanned = select_points(model, args.n)
    art_n = args.art_n or args.n
    logger.info("%d points (first correctly classified among %d test images); ART on %d", args.n,
                scanned, art_n)
    if args.timing_rounds:
        timing_rounds(model, x[:art_n], y[:art_n], budgets, args)
        return

    # A: advlab on ART's points; B: ART on them; A': advlab on all points (its 200-point medians)
    results: dict[str, Any] = {"advlab": {}, "advlab_all": {}, "art": {}}
    for b in budgets:
        results["advlab"][b] = run_advlab(model, x[:art_n], y[:art_n], b, args.seed, args.chunk)
        logger.info("advlab B=%d on %d points: median %.4f, wall %.1f s", b, art_n,
                    median(results["advlab"][b]["dist"]), results["advlab"][b]["wall"])
    art_raw = run_art(model, x[:art_n], budgets, args.chunk, args.seed)
    for b in budgets:
        out = check(model, x[:art_n], y[:art_n], art_raw[b]["x_adv"])
        assert out["in_box"]
        results["art"][b] = {**art_raw[b], **out}
        logger.info("ART B=%d: median %.4f, wall %.1f s", b, median(out["dist"]), art_raw[b]["wall"])
    for b in budgets:
        results["advlab_all"][b] = run_advlab(model, x, y, b, args.seed, args.chunk)
        logger.info("advlab B=%d on %d points: median %.4f, wall %.1f s", b, args.n,
                    median(results["advlab_all"][b]["dist"]), results["advlab_all"][b]["wall"])

    report = build_report(results, budgets, args, scanned, art_n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    args.out.with_suffix(".md").write_text(render(report, timing_of(args.out)))
    print(render(report, timing_of(args.out)))


def timing_of(out: Path) -> dict[str, Any] | None:
    path = out.with_name(out.stem + "_timing.json")
    return json.loads(path.read_text()) if path.exists() else None


def timing_rounds(model: nn.Module, x: Tensor, y: Tensor, budgets: list[int], args: Any) -> None:
    """Interleaved rounds (A B, then B A, ...) of both contenders on the same points; per round and
    budget the wall and CPU seconds, and the medians over rounds."""
    rounds: list[dict[str, Any]] = []
    for k in range(args.timing_rounds):
        order = ["advlab", "art"] if k % 2 == 0 else ["art", "advlab"]
        row: dict[str, Any] = {"order": order}
        for who in order:
            row[who] = {}
            if who == "advlab":
                for b in budgets:
                    r = run_advlab(model, x, y, b, args.seed, args.chunk)
                    row[who][b] = {"wall": r["wall"], "cpu": r["cpu"], "median_l2": median(r["dist"]),
                                   "queries_mean": float(r["queries"].mean())}
            else:
                raw = run_art(model, x, budgets, args.chunk, args.seed + k)
                for b in budgets:
                    row[who][b] = {"wall": raw[b]["wall"], "cpu": raw[b]["cpu"],
                                   "median_l2": median(check(model, x, y, raw[b]["x_adv"])["dist"]),
                                   "queries_mean": float(raw[b]["queries"].mean())}
        logger.info("timing round %d: %s", k, row)
        rounds.append(row)
    out = {"n": len(y), "rounds": rounds, "threads": args.threads, "chunk": args.chunk, "note": args.note,
           "revision": git_revision(),
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs "
                      f"(load average at the end: {os.getloadavg()[0]:.1f})",
           "command": " ".join([Path(sys.executable).name, *sys.argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = args.out.with_name(args.out.stem + "_timing.json")
    path.write_text(json.dumps(out, indent=2, default=str))
    logger.info("wrote %s", path)


def build_report(results: dict[str, Any], budgets: list[int], args: Any, scanned: int,
                 art_n: int) -> dict[str, Any]:
    rows = []
    for b in budgets:
        a, aa, r = results["advlab"][b], results["advlab_all"][b], results["art"][b]
        rows.append({
            "budget": b,
            "advlab_median_l2": median(a["dist"]),
            "art_median_l2": median(r["dist"]),
            "median_ratio_advlab_over_art": median(a["dist"]) / median(r["dist"]),
            "advlab_success": float(a["success"].double().mean()),
            "art_success": float(r["success"].double().mean()),
            "advlab_queries_mean": float(a["queries"].mean()),
            "advlab_queries_max": float(a["queries"].max()),
            "art_queries_mean": float(r["queries"].mean()),
            "art_queries_max": float(r["queries"].max()),
            "art_iterations_median": float(r["iterations"].double().median()),
            "advlab_wall": a["wall"], "advlab_cpu": a["cpu"],
            "art_wall": r["wall"], "art_cpu": r["cpu"],
            "wall_ratio_art_over_advlab": r["wall"] / a["wall"],
            "cpu_ratio_art_over_advlab": r["cpu"] / a["cpu"],
            "art_bookkeeping_queries_subtracted": r["bookkeeping_queries"],
            "all_median_l2": median(aa["dist"]), "all_success": float(aa["success"].double().mean()),
            "all_queries_mean": float(aa["queries"].mean()), "all_queries_max": float(aa["queries"].max()),
            "all_wall": aa["wall"], "all_cpu": aa["cpu"],
            "target_met": median(a["dist"]) < median(r["dist"]) and a["wall"] <= r["wall"],
            "advlab_attack": a["attack"],
        })
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "n": args.n, "art_n": art_n, "scanned_test_images": scanned, "seed": args.seed,
        "threads": args.threads, "chunk": args.chunk, "budgets": budgets,
        "checkpoint": str(CHECKPOINT.relative_to(HERE.parent)),
        "rows": rows, "versions": versions(), "revision": git_revision(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs "
                   f"(load average at the end: {os.getloadavg()[0]:.1f})",
    }


def render(rep: dict[str, Any], timing: dict[str, Any] | None = None) -> str:
    n, art_n = rep["n"], rep["art_n"]
    lines = [
        "# HopSkipJump (L2, hard-label): advlab vs ART at a fixed query budget per point",
        "",
        f"Fashion-MNIST small CNN (`{rep['checkpoint']}`, clean accuracy 0.884). Points: the first {n} "
        f"correctly classified test images (of the first {rep['scanned_test_images']}); the head-to-head "
        f"uses the first {art_n} of them for both contenders. Median L2 over the points (a point not "
        "broken counts as inf); success = the model misclassifies the returned point (checked here). "
        "advlab: `HopSkipJump(norm='l2', budget=B)`, label-only `Oracle`, all points in one batch. "
        "ART 1.20.1: `HopSkipJump(norm=2, init_eval=100, max_eval=10000, init_size=100)`, one point "
        "at a time (as ART loops), advanced one iteration per call (`resume`); its queries are the "
        "rows its model forward received, minus two bookkeeping rows per resumed call, and its "
        "result at B is its output after the last iteration that ended within B queries (its time "
        "at B: the calls up to that output).",
        "",
        f"Both: torch on {rep['threads']} thread(s), at most {rep['chunk']} rows per model forward "
        "(advlab `Oracle(batch_size=...)`, ART `batch_size`). Machine: " + rep["machine"] + "; "
        "wall seconds are noisy there, CPU seconds (process time) measure the work. Order: advlab "
        f"on the {art_n} points, ART on them, then advlab on all {n}.",
        "",
        f"## Head-to-head on the same {art_n} points",
        "",
        "| budget B | advlab median L2 | ART median L2 | advlab / ART | success advlab / ART "
        "| queries/pt advlab (mean, max) | queries/pt ART (mean, max) | wall s advlab / ART "
        "| CPU s advlab / ART | ART / advlab CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rep["rows"]:
        lines.append(
            f"| {r['budget']} | {r['advlab_median_l2']:.4f} | {r['art_median_l2']:.4f} "
            f"| {r['median_ratio_advlab_over_art']:.3f} | {r['advlab_success']:.3f} / {r['art_success']:.3f} "
            f"| {r['advlab_queries_mean']:.0f}, {r['advlab_queries_max']:.0f} "
            f"| {r['art_queries_mean']:.0f}, {r['art_queries_max']:.0f} "
            f"| {r['advlab_wall']:.1f} / {r['art_wall']:.1f} | {r['advlab_cpu']:.1f} / {r['art_cpu']:.1f} "
            f"| {r['cpu_ratio_art_over_advlab']:.2f}x |")
    lines += ["", "CPU milliseconds per query (CPU s / queries spent): "
              + "; ".join(f"B={r['budget']}: advlab {1e3 * r['advlab_cpu'] / (r['advlab_queries_mean'] * art_n):.3f}, "
                          f"ART {1e3 * r['art_cpu'] / (r['art_queries_mean'] * art_n):.3f}" for r in rep["rows"])]
    lines += ["", f"## advlab on all {n} points", "",
              "| budget B | median L2 | success | queries/pt (mean, max) | wall s | CPU s |",
              "|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        lines.append(f"| {r['budget']} | {r['all_median_l2']:.4f} | {r['all_success']:.3f} "
                     f"| {r['all_queries_mean']:.0f}, {r['all_queries_max']:.0f} | {r['all_wall']:.1f} "
                     f"| {r['all_cpu']:.1f} |")
    lines += ["", "Targets (issue #4): advlab's median L2 lower than ART's at both budgets, wall time no higher:"]
    for r in rep["rows"]:
        lines.append(f"- B={r['budget']}: median {r['advlab_median_l2']:.4f} vs {r['art_median_l2']:.4f}, "
                     f"wall {r['advlab_wall']:.1f} s vs {r['art_wall']:.1f} s (CPU {r['advlab_cpu']:.1f} vs "
                     f"{r['art_cpu']:.1f}): {'MET' if r['target_met'] else 'NOT MET'}")
    if timing is not None:
        lines += ["", f"## Interleaved timing rounds on the first {timing['n']} points", "",
                  f"{len(timing['rounds'])} rounds, order alternating (advlab first in even rounds); "
                  f"machine: {timing['machine']}; {timing['date']}; revision {timing.get('revision', '?')}; "
                  f"`{timing['command'].split(' --note')[0]} --note ...`. {timing.get('note', '')}", "",
                  "| budget B | round | order | advlab wall / CPU s | ART wall / CPU s | ART / advlab wall "
                  "| ART / advlab CPU | median L2 advlab / ART |",
                  "|---|---|---|---|---|---|---|---|"]
        for b in rep["budgets"]:
            walls, cpus = [], []
            for k, rd in enumerate(timing["rounds"]):
                a, r = rd["advlab"][str(b)], rd["art"][str(b)]
                walls.append(r["wall"] / a["wall"])
                cpus.append(r["cpu"] / a["cpu"])
                lines.append(f"| {b} | {k} | {' '.join(rd['order'])} | {a['wall']:.1f} / {a['cpu']:.1f} "
                             f"| {r['wall']:.1f} / {r['cpu']:.1f} | {walls[-1]:.2f}x | {cpus[-1]:.2f}x "
                             f"| {a['median_l2']:.4f} / {r['median_l2']:.4f} |")
            lines.append(f"| {b} | median | | | | {sorted(walls)[len(walls) // 2]:.2f}x "
                         f"| {sorted(cpus)[len(cpus) // 2]:.2f}x | |")
    lines += ["", "Where the time goes: HopSkipJump's cost is the model's forward on its queries, most of "
              "them Monte-Carlo probes, which both libraries send in batches (a cProfile of advlab on "
              "20 of these points at B=1000 put ~90% of its time in the model's layers). advlab's "
              "batching across points only changes the binary-search and step-size queries (~10% of "
              "the budget), which ART sends one row at a time, while advlab spends its whole budget "
              "and ART stops at the last iteration that fits (fewer queries, see the table). So equal "
              "time per query is the expectation, and the distances are where the two differ."]
    lines += ["", f"ART bookkeeping queries subtracted: {rep['rows'][-1]['art_bookkeeping_queries_subtracted']} "
              f"over {art_n} points. ART iterations reached (median): "
              + ", ".join(f"B={r['budget']}: {r['art_iterations_median']:.0f}" for r in rep["rows"]),
              "", f"advlab config: `{rep['rows'][0]['advlab_attack']}` (queries = B)",
              "", f"Revision {rep['revision']}, {rep['date']}; "
              + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()),
              "", f"Command: `{rep['command']}`", ""]
    return "\n".join(lines)



def versions() -> dict[str, str]:
    return _common.versions(("torch", "advlab", "adversarial-robustness-toolbox", "numpy"))



git_revision = _common.git_revision


if __name__ == "__main__":
    main()
