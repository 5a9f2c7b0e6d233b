"""Minimal L2 perturbations: advlab's DeepFool, FMN and Carlini-Wagner against peer libraries.

On a small CNN trained 2 epochs on Fashion-MNIST (the checkpoint ``bench_pgd.py`` caches, trained
here if missing), every contender attacks the same points: the correctly classified ones among
the first ``--n`` test images. For each we report the median L2 distance of the adversarial
examples over those points (a point the contender did not break counts as ``inf``, so a median
can be ``inf``), the success rate, and wall time.

Contenders (same hyperparameters wherever the libraries share them):

* advlab ``DeepFool(norm="l2", steps=50, overshoot=0.02, num_candidates=10)``;
* advlab ``FMN(norm="l2", steps=100)``;
* advlab ``CarliniWagnerL2(binary_search_steps=9, steps=100, step_size=0.01, c_init=0.01)``;
* torchattacks ``DeepFool(steps=50, overshoot=0.02)`` (all classes, one image at a time);
* torchattacks ``CW(c=1, kappa=0, steps=100, lr=0.01)`` (it has no binary search over c);
* ART ``DeepFool(max_iter=50, epsilon=0.02, nb_grads=10)``;
* ART ``CarliniL2Method(binary_search_steps=9, max_iter=10, learning_rate=0.01,
  initial_const=0.01)``: ART's default 10 iterations per constant, since its line search makes
  100 (advlab's budget) cost ~30 s per point here.

Timing: a warm-up call of every contender on 2 points, then ``--rounds`` rounds in which every
contender runs once on all points, the order reversed every other round; medians over rounds are
reported. Each run is timed twice: wall seconds, and the CPU seconds of this process
(``time.process_time``). Torch, OpenMP and BLAS run on one thread (``--threads``), so CPU seconds
are the work done, and they barely move when other jobs load the shared 2-core machine, while
wall seconds there swing by up to 5x between rounds; the targets use CPU seconds. The first
round's outputs are checked (in the box, misclassified, distances) and later rounds must
reproduce them (all contenders are deterministic).

Run: ``.venv-bench/bin/python bench/bench_minimal.py`` (``bash bench/setup.sh`` builds the venv).
Writes ``bench/results/minimal.md`` and ``bench/results/minimal.json``.
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
from tqdm.auto import tqdm

import _common  # bench/_common.py: provenance helpers shared by the bench scripts

logger = logging.getLogger("bench_minimal")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    architecture: str = "small-cnn"
    seed: int = 0
    epochs: int = 2
    train_batch_size: int = 128
    lr: float = 1e-3
    n: int = 200
    batch_size: int = 100
    deepfool_steps: int = 50
    overshoot: float = 0.02
    num_candidates: int = 10
    fmn_steps: int = 100
    cw_binary_search_steps: int = 9
    cw_steps: int = 100
    cw_art_steps: int = 10
    cw_step_size: float = 0.01
    cw_c_init: float = 0.01
    ta_cw_c: float = 1.0


# -- the model (the same cache as bench_pgd.py) -------------------------------------------------


def trained_model(cfg: Config, cache: Path, *, retrain: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, fit, load, load_card, save

    ckpt = cache / f"{cfg.architecture}-{cfg.dataset}-seed{cfg.seed}-e{cfg.epochs}"
    want = {"epochs": cfg.epochs, "batch_size": cfg.train_batch_size, "lr": cfg.lr}
    if ckpt.exists() and not retrain:
        try:
            card = load_card(ckpt)
            if card.seed == cfg.seed and {k: card.training.get(k) for k in want} == want:
                logger.info("loaded the model from %s", ckpt)
                return load(ckpt), {"checkpoint": str(ckpt), "trained_now": False, **card.to_dict()}
            logger.warning("cached checkpoint %s was trained differently; retraining", ckpt)
        except (OSError, ValueError) as err:
            logger.warning("cached checkpoint %s is unusable (%s); retraining", ckpt, err)
    train = load_dataset(cfg.dataset, split="train")
    test = load_dataset(cfg.dataset, split="test")
    model = build_seeded(cfg.architecture, in_shape=train.input_shape, num_classes=train.num_classes,
                         seed=cfg.seed)
    t0 = time.perf_counter()
    fit(model, train.x, train.y, epochs=cfg.epochs, batch_size=cfg.train_batch_size, lr=cfg.lr,
        seed=cfg.seed, progress=True)
    seconds = time.perf_counter() - t0
    clean = accuracy(model, test.x, test.y)
    save(model, ckpt, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": clean,
               "class_names": train.class_names, "training": {**want, "seconds": round(seconds, 1)}})
    logger.info("trained in %.0f s, clean test accuracy %.4f, saved to %s", seconds, clean, ckpt)
    return load(ckpt), {"checkpoint": str(ckpt), "trained_now": True, **load_card(ckpt).to_dict()}


# -- contenders -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    x_adv: Tensor
    num_grads: Tensor | None = None  # advlab's per-point count of backward passes


Contender = Callable[[Tensor, Tensor], Outcome]

LABELS = {
    "advlab-deepfool": "advlab `DeepFool`",
    "advlab-fmn": "advlab `FMN`",
    "advlab-cw": "advlab `CarliniWagnerL2`",
    "ta-deepfool": "torchattacks `DeepFool`",
    "ta-cw": "torchattacks `CW`",
    "art-deepfool": "ART `DeepFool`",
    "art-cw": "ART `CarliniL2Method`",
}
FAST = ("advlab-deepfool", "advlab-fmn")
PEERS = ("ta-deepfool", "ta-cw", "art-deepfool", "art-cw")
CW = ("advlab-cw", "ta-cw", "art-cw")


def make_contenders(model: nn.Module, cfg: Config) -> dict[str, Contender]:
    import art.attacks.evasion as art_evasion
    import art.estimators.classification as art_cls
    import torchattacks

    from advlab.attacks.minimal import FMN, CarliniWagnerL2, DeepFool

    bs = cfg.batch_size

    def advlab(attack: Any) -> Contender:
        def run(x: Tensor, y: Tensor) -> Outcome:
            results = [attack(model, x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]
            return Outcome(torch.cat([r.x_adv for r in results]), torch.cat([r.num_grads for r in results]))
        return run

    def torchattacks_run(attack: Any) -> Contender:
        def run(x: Tensor, y: Tensor) -> Outcome:
            return Outcome(torch.cat([attack(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]))
        return run

    classifier = art_cls.PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(),
                                           input_shape=(1, 28, 28), nb_classes=10,
                                           clip_values=(0.0, 1.0), device_type="cpu")
    art_df = art_evasion.DeepFool(classifier, max_iter=cfg.deepfool_steps, epsilon=cfg.overshoot,
                                  nb_grads=cfg.num_candidates, batch_size=bs, verbose=False)
    art_cw = art_evasion.CarliniL2Method(classifier, confidence=0.0, learning_rate=cfg.cw_step_size,
                                         binary_search_steps=cfg.cw_binary_search_steps,
                                         max_iter=cfg.cw_art_steps, initial_const=cfg.cw_c_init,
                                         batch_size=bs, verbose=False)

    def art_run(attack: Any, labels: bool) -> Contender:
        def run(x: Tensor, y: Tensor) -> Outcome:
            kw = {"y": np.eye(10, dtype=np.float32)[y.numpy()]} if labels else {}
            return Outcome(torch.from_numpy(attack.generate(x=x.numpy(), **kw)))
        return run

    return {
        "advlab-deepfool": advlab(DeepFool(norm="l2", steps=cfg.deepfool_steps, overshoot=cfg.overshoot,
                                           num_candidates=cfg.num_candidates)),
        "advlab-fmn": advlab(FMN(norm="l2", steps=cfg.fmn_steps)),
        "advlab-cw": advlab(CarliniWagnerL2(binary_search_steps=cfg.cw_binary_search_steps,
                                            steps=cfg.cw_steps, step_size=cfg.cw_step_size,
                                            c_init=cfg.cw_c_init)),
        "ta-deepfool": torchattacks_run(torchattacks.DeepFool(model, steps=cfg.deepfool_steps,
                                                              overshoot=cfg.overshoot)),
        "ta-cw": torchattacks_run(torchattacks.CW(model, c=cfg.ta_cw_c, kappa=0, steps=cfg.cw_steps,
                                                  lr=cfg.cw_step_size)),
        "art-deepfool": art_run(art_df, labels=False),
        "art-cw": art_run(art_cw, labels=True),
    }


# -- checks -----------------------------------------------------------------------------------------


@torch.no_grad()
def distances(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per point: L2 distance where ``x_adv`` is misclassified, else ``inf``; and the success flags."""
    success = model(x_adv).argmax(dim=1) != y
    d = (x_adv - x).flatten(1).norm(dim=1).double()
    return torch.where(success, d, torch.full_like(d, float("inf"))), success


def check(model: nn.Module, x: Tensor, y: Tensor, out: Outcome) -> dict[str, Any]:
    d, success = distances(model, x, y, out.x_adv)
    finite = d[torch.isfinite(d)]
    q = torch.quantile(finite, torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist() if finite.numel() else [float("nan")] * 2
    entry = {
        "median_l2": float(d.median()),  # torch's lower median; inf if fewer than half are broken
        "success_rate": float(success.float().mean()),
        "q25_l2_broken": q[0], "q75_l2_broken": q[1],
        "mean_l2_broken": float(finite.mean()) if finite.numel() else float("nan"),
        "in_box": bool(((out.x_adv >= 0) & (out.x_adv <= 1)).all()),
        "finite": bool(torch.isfinite(out.x_adv).all()),
        "distances": [None if not np.isfinite(v) else v for v in d.tolist()],
    }
    if out.num_grads is not None:
        entry["backward_passes_per_point"] = float(out.num_grads.double().mean())
    return entry


# -- timing -----------------------------------------------------------------------------------------


def run_rounds(contenders: dict[str, Contender], model: nn.Module, x: Tensor, y: Tensor, rounds: int
               ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Outcome], dict[str, bool]]:
    names = list(contenders)
    for name in tqdm(names, desc="warm-up", leave=False):
        contenders[name](x[:2], y[:2])
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, Outcome] = {}
    repeatable: dict[str, bool] = {name: True for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in tqdm(order, desc=f"round {r + 1}/{rounds}", leave=False):
            t0, c0 = time.perf_counter(), time.process_time()
            out = contenders[name](x, y)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
            logger.info("round %d %-16s %.1f s wall, %.1f s cpu", r + 1, name, wall[name][-1], cpu[name][-1])
            if name not in first:
                first[name] = out
            else:
                repeatable[name] &= bool(torch.equal(out.x_adv, first[name].x_adv))
    return wall, cpu, first, repeatable


# -- report -----------------------------------------------------------------------------------------



def versions() -> dict[str, str]:
    return _common.versions(("torch", "advlab", "torchattacks", "adversarial-robustness-toolbox", "numpy"))



git_revision = _common.git_revision


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: an advlab fast attack (DeepFool or FMN) whose median L2 is no larger
    than any peer's (DeepFool and C&W), in under a tenth of a C&W's time. The C&W runs that
    search over c (advlab's and ART's) are the reference; torchattacks' CW runs one c for 100
    steps (a tenth of their budget) and is reported alongside."""
    c, t = result["check"]["contenders"], result["timing"]["contenders"]
    peer_best = min(PEERS, key=lambda k: c[k]["median_l2"])
    out = []
    for fast in FAST:
        out.append({"what": f"{LABELS[fast]} median L2 ≤ every peer's (best: {LABELS[peer_best]})",
                    "measured": f"{c[fast]['median_l2']:.4f} vs {c[peer_best]['median_l2']:.4f}",
                    "pass": c[fast]["median_l2"] <= c[peer_best]["median_l2"]})
        for cw in CW:
            ratio = t[fast]["median_s"] / t[cw]["median_s"]
            note = " (single c, no search)" if cw == "ta-cw" else ""
            out.append({"what": f"{LABELS[fast]} CPU time < 1/10 of {LABELS[cw]}'s{note}",
                        "measured": f"{ratio:.3f}×", "pass": ratio < 0.1})
    return out


def render(result: dict[str, Any]) -> str:
    cfg, chk, tim = result["config"], result["check"], result["timing"]
    lines = [
        f"Minimal L2 perturbations on {cfg['architecture']} trained {cfg['epochs']} epochs on "
        f"{cfg['dataset']} (seed {cfg['seed']}, clean test accuracy {result['model'].get('clean_accuracy', float('nan')):.3f}); "
        f"the {chk['n_attacked']} correctly classified of the first {cfg['n']} test images, batches of "
        f"{cfg['batch_size']}; {result['machine']['torch_threads']} torch thread(s) on a shared "
        f"{result['machine']['cpu_count']}-core machine, {tim['rounds']} interleaved round(s); medians of "
        f"CPU seconds (the targets) and of wall seconds.",
        "",
        "| contender | configuration | median L2 | success | L2 q25–q75 (broken) | backward passes / point | CPU s | wall s [min–max] | CPU × advlab DeepFool |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    df_s = tim["contenders"]["advlab-deepfool"]["median_s"]
    for name in LABELS:
        c, t = chk["contenders"][name], tim["contenders"][name]
        bw = f"{c['backward_passes_per_point']:.1f}" if "backward_passes_per_point" in c else "—"
        lines.append(f"| {LABELS[name]} | {result['configs'][name]} | {c['median_l2']:.4f} | "
                     f"{100 * c['success_rate']:.1f}% | {c['q25_l2_broken']:.3f}–{c['q75_l2_broken']:.3f} | "
                     f"{bw} | {t['median_s']:.1f} | {t['median_wall_s']:.1f} "
                     f"[{min(t['wall_seconds']):.1f}–{max(t['wall_seconds']):.1f}] | {t['median_s'] / df_s:.1f} |")
    lines += ["", "Checks: every contender's outputs in [0, 1] and finite: "
              + ", ".join(f"{k} {'yes' if v['in_box'] and v['finite'] else 'NO'}" for k, v in chk["contenders"].items())
              + "; identical outputs in every round: "
              + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in tim["repeatable"].items()) + ".",
              "", "Targets:"]
    for target in result["targets"]:
        lines.append(f"- {'PASS' if target['pass'] else 'MISS'}: {target['what']} (measured {target['measured']})")
    lines += ["", f"advlab {result['code_revision']}, {result['date']}; "
              + ", ".join(f"{k} {v}" for k, v in result["versions"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=Config.n, help="first N test images (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--only", nargs="+", choices=list(LABELS), help="run only these contenders")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output and model cache directory")
    parser.add_argument("--retrain", action="store_true", help="ignore the cached model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("art").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    cfg = Config(n=args.n)
    args.results.mkdir(parents=True, exist_ok=True)
    model, card = trained_model(cfg, args.results, retrain=args.retrain)
    model.eval()
    from advlab.data import load_dataset
    test = load_dataset(cfg.dataset, split="test")
    x, y = test.x[:cfg.n].contiguous(), test.y[:cfg.n].contiguous()
    with torch.no_grad():
        correct = model(x).argmax(dim=1) == y
    x, y = x[correct].contiguous(), y[correct].contiguous()
    logger.info("%d of the first %d test images are classified correctly; attacking those", len(y), cfg.n)

    contenders = make_contenders(model, cfg)
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k in args.only}
    wall, cpu, outs, repeatable = run_rounds(contenders, model, x, y, args.rounds)
    checks = {name: check(model, x, y, out) for name, out in outs.items()}
    timing = {"rounds": args.rounds, "repeatable": repeatable,
              "contenders": {k: {"wall_seconds": wall[k], "cpu_seconds": cpu[k],
                                 "median_wall_s": statistics.median(wall[k]),
                                 "median_s": statistics.median(cpu[k])} for k in wall}}
    configs = {
        "advlab-deepfool": f"steps {cfg.deepfool_steps}, overshoot {cfg.overshoot}, {cfg.num_candidates} candidates",
        "advlab-fmn": f"{cfg.fmn_steps} steps",
        "advlab-cw": f"{cfg.cw_binary_search_steps} × {cfg.cw_steps} steps, lr {cfg.cw_step_size}, c₀ {cfg.cw_c_init}",
        "ta-deepfool": f"steps {cfg.deepfool_steps}, overshoot {cfg.overshoot}, all classes",
        "ta-cw": f"c = {cfg.ta_cw_c} (no search), {cfg.cw_steps} steps, lr {cfg.cw_step_size}",
        "art-deepfool": f"max_iter {cfg.deepfool_steps}, epsilon {cfg.overshoot}, nb_grads {cfg.num_candidates}",
        "art-cw": f"{cfg.cw_binary_search_steps} × {cfg.cw_art_steps} steps (line search), lr {cfg.cw_step_size}, c₀ {cfg.cw_c_init}",
    }
    result: dict[str, Any] = {
        "benchmark": "minimal-l2",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "configs": configs,
        "model": card,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_at_end": os.getloadavg()},
        "versions": versions(),
        "code_revision": git_revision(),
        "check": {"n_attacked": len(y), "contenders": checks},
        "timing": timing,
    }
    if set(LABELS) <= set(outs):
        result["targets"] = targets(result)
        text = render(result)
        print("\n" + text)
        (args.results / "minimal.md").write_text(text, encoding="utf-8")
    else:
        print(json.dumps({k: {"median_l2": v["median_l2"], "success_rate": v["success_rate"],
                              "median_cpu_s": timing["contenders"][k]["median_s"]} for k, v in checks.items()}, indent=1))
    out = args.results / ("minimal.json" if "targets" in result else "minimal-partial.json")
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
