"""Strong evaluation: advlab's cascade (APGD-CE → APGD-T) against peer libraries' AutoAttack.

Two small CNNs on Fashion-MNIST: the standard one of ``bench_pgd.py`` (cached checkpoint, or
trained here the same way) and a PGD-trained one (PGD-7 adversarial training, Madry et al. 2018,
with ``advlab.attacks.PGD`` inside the training loop). On the same first ``--n`` test images at
L∞ ε = 0.1, each contender runs once per round:

* ``advlab``            ``Cascade(strong_attacks(eps))``: APGD-CE (100 steps) then APGD-T (100 steps,
                        9 target classes, targeted DLR) on the points still robust, evaluation mode;
* ``torchattacks-aa``   ``torchattacks.AutoAttack(version="standard")``: APGD-CE, APGD-T, FAB-T and
                        Square (5000 queries). NB torchattacks builds its APGD/APGD-T/FAB with its own
                        default of 10 steps, not the 100 of the AutoAttack paper;
* ``torchattacks-apgd`` ``MultiAttack([APGD(steps=100), APGDT(steps=100)])``: the same two attacks
                        and budgets as advlab's cascade (like for like; ``--no-ref`` skips it);
* ``art-aa``            ART's ``AutoAttack`` (its default list: APGD-CE and APGD-DLR with 5 random
                        starts each, DeepFool, Square with 5000 queries and 5 restarts), when ART
                        is installed (in ``.venv-bench``, not in the dev venv).

For every contender the returned inputs are checked (inside the ε-ball and the box) and the robust
points recomputed by one forward pass; the table states robust accuracy over all n points, wall
and CPU seconds and ratios to each peer, and how many points one contender breaks that the other
does not. On a shared machine wall time moves with other load; CPU time (``time.process_time``)
much less, so both are reported and the ratios are given for both.

Run it with the dev venv (``.venv/bin/python bench/bench_strong.py``) or ``.venv-bench`` for ART.
Writes ``bench/results/strong.json`` and ``bench/results/strong.md``; models are cached in
``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

import _common  # bench/_common.py: provenance helpers shared by the bench scripts

logger = logging.getLogger("bench_strong")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    architecture: str = "small-cnn"
    seed: int = 0
    # the standard model: as bench_pgd.py trains it (its cached checkpoint is reused)
    epochs: int = 2
    train_batch_size: int = 128
    lr: float = 1e-3
    # the PGD-trained model: PGD-7 (α = 2.5 ε / 7, random start) on the first adv_train_n images
    adv_eps: float = 0.1
    adv_steps: int = 7
    adv_epochs: int = 3
    adv_train_n: int = 20000
    adv_batch_size: int = 256
    adv_lr: float = 2e-3
    # the evaluation
    n: int = 500
    eps: float = 0.1
    batch_size: int = 500
    steps: int = 100
    n_target_classes: int = 9


# -- models ---------------------------------------------------------------------------------------


def _cached(ckpt: Path, want: dict[str, Any], seed: int) -> nn.Module | None:
    from advlab.models import load, load_card

    if not ckpt.exists():
        return None
    try:
        card = load_card(ckpt)
        if card.seed == seed and {k: card.training.get(k) for k in want} == want:
            logger.info("loaded %s", ckpt)
            return load(ckpt)
        logger.warning("cached checkpoint %s was trained differently; retraining", ckpt)
    except (OSError, ValueError) as err:
        logger.warning("cached checkpoint %s is unusable (%s); retraining", ckpt, err)
    return None


def standard_model(cfg: Config, cache: Path) -> nn.Module:
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, fit, load, save

    ckpt = cache / f"{cfg.architecture}-{cfg.dataset}-seed{cfg.seed}-e{cfg.epochs}"
    want = {"epochs": cfg.epochs, "batch_size": cfg.train_batch_size, "lr": cfg.lr}
    model = _cached(ckpt, want, cfg.seed)
    if model is not None:
        return model
    train, test = load_dataset(cfg.dataset, split="train"), load_dataset(cfg.dataset, split="test")
    model = build_seeded(cfg.architecture, in_shape=train.input_shape, num_classes=train.num_classes,
                         seed=cfg.seed)
    t0 = time.perf_counter()
    fit(model, train.x, train.y, epochs=cfg.epochs, batch_size=cfg.train_batch_size, lr=cfg.lr,
        seed=cfg.seed, progress=True)
    save(model, ckpt, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": accuracy(model, test.x, test.y),
               "class_names": train.class_names,
               "training": {**want, "seconds": round(time.perf_counter() - t0, 1)}})
    return load(ckpt)


def pgd_train(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, epochs: int,
              batch_size: int, lr: float, seed: int) -> None:
    """Madry et al. (2018) adversarial training: each step trains on PGD-``steps`` points."""
    from advlab.attacks import PGD

    attack = PGD(eps=eps, steps=steps, step_size=2.5 * eps / steps, random_start=True)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        bar = tqdm(range(0, n, batch_size), desc=f"PGD-{steps} training, epoch {epoch + 1}/{epochs}")
        for i in bar:
            b = order[i:i + batch_size]
            model.eval()  # attack the model as it is now (SmallCNN has no dropout or batch norm)
            x_adv = attack(model, x[b], y[b], generator=gen).x_adv
            model.train()
            logits = model(x_adv)
            loss = F.cross_entropy(logits, y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.set_postfix_str(f"adv loss {loss.item():.3f} adv acc "
                                f"{(logits.argmax(1) == y[b]).float().mean().item():.3f}")
    model.eval()


def pgd_model(cfg: Config, cache: Path) -> nn.Module:
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, load, save

    ckpt = cache / (f"{cfg.architecture}-{cfg.dataset}-seed{cfg.seed}-pgd{cfg.adv_steps}"
                    f"-eps{cfg.adv_eps:g}-e{cfg.adv_epochs}-n{cfg.adv_train_n}")
    want = {"method": f"PGD-{cfg.adv_steps} adversarial training", "eps": cfg.adv_eps,
            "steps": cfg.adv_steps, "epochs": cfg.adv_epochs, "train_n": cfg.adv_train_n,
            "batch_size": cfg.adv_batch_size, "lr": cfg.adv_lr}
    model = _cached(ckpt, want, cfg.seed)
    if model is not None:
        return model
    train, test = load_dataset(cfg.dataset, split="train"), load_dataset(cfg.dataset, split="test")
    model = build_seeded(cfg.architecture, in_shape=train.input_shape, num_classes=train.num_classes,
                         seed=cfg.seed)
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        pgd_train(model, train.x[:cfg.adv_train_n], train.y[:cfg.adv_train_n], eps=cfg.adv_eps,
                  steps=cfg.adv_steps, epochs=cfg.adv_epochs, batch_size=cfg.adv_batch_size,
                  lr=cfg.adv_lr, seed=cfg.seed)
    seconds = time.perf_counter() - t0
    clean = accuracy(model, test.x, test.y)
    save(model, ckpt, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": clean,
               "class_names": train.class_names, "training": {**want, "seconds": round(seconds, 1)}})
    logger.info("PGD-trained in %.0f s, clean test accuracy %.4f, saved to %s", seconds, clean, ckpt)
    return load(ckpt)


# -- contenders -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    x_adv: Tensor
    wall_s: float
    cpu_s: float
    extra: dict[str, Any]


Contender = Callable[[nn.Module, Tensor, Tensor, Config], tuple[Tensor, dict[str, Any]]]


def advlab_cascade(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, dict[str, Any]]:
    from advlab.evaluation.cascade import Cascade, strong_attacks

    attacks = strong_attacks(cfg.eps, "linf", steps=cfg.steps, n_target_classes=cfg.n_target_classes)
    r = Cascade(attacks).run(model, x, y, batch_size=cfg.batch_size,
                             generator=torch.Generator().manual_seed(cfg.seed), progress=False)
    return r.x_adv, {"stage_robust_accuracy": list(r.stage_robust_accuracy),
                     "stage_seconds": list(r.stage_seconds), "grads": int(r.num_grads.sum())}


def advlab_standard(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, dict[str, Any]]:
    """advlab's cascade with AutoAttack's whole standard list: APGD-CE, APGD-T, FAB-T (100 steps,
    9 targets each) and Square (5000 queries), each on the points still robust."""
    from advlab.evaluation.cascade import Cascade, strong_attacks

    attacks = strong_attacks(cfg.eps, "linf", steps=cfg.steps, n_target_classes=cfg.n_target_classes,
                             version="standard")
    r = Cascade(attacks).run(model, x, y, batch_size=cfg.batch_size,
                             generator=torch.Generator().manual_seed(cfg.seed), progress=False)
    return r.x_adv, {"stage_robust_accuracy": list(r.stage_robust_accuracy),
                     "stage_seconds": list(r.stage_seconds), "grads": int(r.num_grads.sum())}


def _batched(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, size: int) -> Tensor:
    return torch.cat([fn(x[i:i + size], y[i:i + size]) for i in range(0, x.shape[0], size)])


def torchattacks_aa(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, dict[str, Any]]:
    import torchattacks

    atk = torchattacks.AutoAttack(model, norm="Linf", eps=cfg.eps, version="standard", n_classes=10,
                                  seed=cfg.seed)
    return _batched(atk, x, y, cfg.batch_size), {}


def torchattacks_apgd(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, dict[str, Any]]:
    import torchattacks

    atk = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=cfg.eps, steps=cfg.steps, n_restarts=1, loss="ce",
                          seed=cfg.seed),
        torchattacks.APGDT(model, norm="Linf", eps=cfg.eps, steps=cfg.steps, n_restarts=1, n_classes=10,
                           seed=cfg.seed),
    ])
    return _batched(atk, x, y, cfg.batch_size), {}


def art_aa(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> tuple[Tensor, dict[str, Any]]:
    """ART's AutoAttack with its default attack list: APGD-CE and APGD-DLR (100 iterations, 5 random
    starts each), DeepFool, Square (5000 queries, 5 restarts). ART's APGD starts its step size at
    ``eps_step`` where the paper starts at 2ε, so ``eps_step = 2ε``."""
    import numpy as np
    from art.attacks.evasion import AutoAttack
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    atk = AutoAttack(estimator=clf, norm=np.inf, eps=cfg.eps, eps_step=2 * cfg.eps,
                     batch_size=cfg.batch_size)
    x_adv = atk.generate(x=x.numpy(), y=y.numpy())
    return torch.from_numpy(x_adv).to(x.dtype), {}


CONTENDERS: dict[str, Contender] = {"advlab": advlab_cascade, "torchattacks-aa": torchattacks_aa,
                                    "torchattacks-apgd": torchattacks_apgd, "art-aa": art_aa,
                                    "advlab-standard": advlab_standard}
LABELS = {
    "advlab": "advlab `Cascade(strong_attacks)`: APGD-CE → APGD-T (100 steps, 9 targets)",
    "torchattacks-aa": "torchattacks `AutoAttack(version=\"standard\")` (10-step APGD/APGD-T/FAB-T, Square 5000)",
    "torchattacks-apgd": "torchattacks APGD-CE → APGD-T (100 steps, 9 targets), `MultiAttack`",
    "art-aa": "ART `AutoAttack` (default list: APGD-CE, APGD-DLR ×5 starts, DeepFool, Square 5000 ×5)",
    "advlab-standard": "advlab `strong_attacks(version=\"standard\")`: APGD-CE → APGD-T → FAB-T (100 steps, "
                       "9 targets) → Square 5000",
}


def available(name: str) -> bool:
    module = {"advlab": "advlab", "torchattacks-aa": "torchattacks", "torchattacks-apgd": "torchattacks",
              "art-aa": "art", "advlab-standard": "advlab"}[name]
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def run_contender(name: str, model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> Outcome:
    model.eval()
    w0, c0 = time.perf_counter(), time.process_time()
    x_adv, extra = CONTENDERS[name](model, x, y, cfg)
    return Outcome(x_adv=x_adv.detach(), wall_s=time.perf_counter() - w0, cpu_s=time.process_time() - c0,
                   extra=extra)


def robust_points(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, eps: float) -> tuple[Tensor, dict]:
    """Recompute which points survive: clean-correct, and the returned input is inside the threat
    model and classified correctly (a point outside the ball counts as robust, and is reported)."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        pred = model(x_adv).argmax(1)
    linf = (x_adv - x).flatten(1).abs().amax(1)
    inside = (linf <= eps * (1 + 1e-5) + 1e-6) & ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
    broken = correct & inside & (pred != y)
    return correct & ~broken, {"max_linf": float(linf.max()), "outside_threat_model": int((~inside).sum())}


# -- reporting ------------------------------------------------------------------------------------



def versions() -> dict[str, str]:
    return _common.versions(("torch", "advlab", "torchattacks", "adversarial-robustness-toolbox"))



git_revision = _common.git_revision


def _python() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(HERE.parent))
    except ValueError:
        return exe.name


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [f"L∞ ε = {cfg['eps']}; per model, the first n Fashion-MNIST test images, the same for "
             f"every contender, in batches of {cfg['batch_size']}; {result['machine']['cpu_count']} CPU cores (shared), "
             f"{result['machine']['torch_threads']} torch threads, OMP_WAIT_POLICY="
             f"{result['machine']['omp_wait_policy']}; {result['rounds']} round(s), "
             "medians over rounds. Robust accuracy over all n points (attacks count only on "
             "clean-correct points). Ratios: advlab ÷ contender, per round, median.", ""]
    for model_name, block in result["models"].items():
        n, clean = block["n"], block["n_correct"]
        lines += [f"**{model_name}** ({block['description']}): n = {n} points, clean {clean}/{n}.", "",
                  "| contender | robust (of n) | robust acc | wall s | CPU s | advlab ÷ it, wall | "
                  "advlab ÷ it, CPU | broken only by advlab / only by it |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, c in block["contenders"].items():
            ratio_w = f"{c['advlab_over_wall']:.2f}" if name != "advlab" else "—"
            ratio_c = f"{c['advlab_over_cpu']:.2f}" if name != "advlab" else "—"
            diff = (f"{c['broken_only_by_advlab']} / {c['broken_only_by_it']}" if name != "advlab" else "—")
            lines.append(f"| {LABELS[name]} | {c['n_robust']}/{n} | {100 * c['robust_accuracy']:.1f}% | "
                         f"{c['wall_s']:.0f} | {c['cpu_s']:.0f} | {ratio_w} | {ratio_c} | {diff} |")
        adv = block["contenders"]["advlab"]
        lines += ["", "advlab after APGD-CE / after APGD-T: "
                  + " / ".join(f"{100 * a:.1f}%" for a in adv["extra"]["stage_robust_accuracy"])
                  + "; seconds per stage " + " / ".join(f"{s:.0f}" for s in adv["extra"]["stage_seconds"])
                  + f"; {adv['extra']['grads']} gradient passes in all.", ""]
        std = block["contenders"].get("advlab-standard")
        if std is not None:
            lines += ["advlab standard list after APGD-CE / APGD-T / FAB-T / Square: "
                      + " / ".join(f"{100 * a:.1f}%" for a in std["extra"]["stage_robust_accuracy"])
                      + "; seconds per stage " + " / ".join(f"{s:.0f}" for s in std["extra"]["stage_seconds"])
                      + ".", ""]
    if result["missing"]:
        lines.append("Not run (not installed): " + ", ".join(result["missing"]) + ".")
    lines += ["", "Targets:"]
    for t in result["targets"]:
        lines.append(f"- {'PASS' if t['pass'] else 'MISS'}: {t['what']}: {t['measured']}")
    lines += ["", f"advlab {result['code_revision']}; {result['date']}; "
              + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for model_name, block in result["models"].items():
        adv = block["contenders"]["advlab"]
        for name in ("torchattacks-aa", "art-aa"):
            c = block["contenders"].get(name)
            if c is None:
                continue
            out.append({"what": f"{model_name}: robust accuracy ≤ {name}'s",
                        "measured": f"{adv['robust_accuracy']:.3f} vs {c['robust_accuracy']:.3f}",
                        "pass": adv["robust_accuracy"] <= c["robust_accuracy"]})
            out.append({"what": f"{model_name}: time ≤ ½ of {name}'s (CPU; wall in brackets)",
                        "measured": f"{c['advlab_over_cpu']:.2f}× ({c['advlab_over_wall']:.2f}×)",
                        "pass": c["advlab_over_cpu"] <= 0.5})
        std = block["contenders"].get("advlab-standard")
        for name in ("torchattacks-aa", "art-aa") if std is not None else ():
            c = block["contenders"].get(name)
            if c is None:
                continue
            out.append({"what": f"{model_name}: the standard list's robust accuracy ≤ {name}'s",
                        "measured": f"{std['robust_accuracy']:.3f} vs {c['robust_accuracy']:.3f}",
                        "pass": std["robust_accuracy"] <= c["robust_accuracy"]})
            ratio = statistics.median(a / b for a, b in zip(std["cpu_s_rounds"], c["cpu_s_rounds"]))
            out.append({"what": f"{model_name}: the standard list's CPU time ≤ {name}'s",
                        "measured": f"{ratio:.2f}×", "pass": ratio <= 1.0})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=Config.n, help="test points (default 500)")
    parser.add_argument("--n-pgd", type=int, default=None,
                        help="test points for the PGD-trained model (default: --n); AutoAttack's "
                             "Square runs its full 5000 queries on every robust point")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; the order reverses every other")
    parser.add_argument("--models", nargs="+", default=["standard", "pgd"], choices=["standard", "pgd"])
    parser.add_argument("--no-ref", action="store_true", help="skip torchattacks' 100-step APGD pair")
    parser.add_argument("--contenders", nargs="+", default=None, choices=list(CONTENDERS),
                        help="run only these (advlab always runs: every ratio is against it)")
    parser.add_argument("--train-only", action="store_true", help="build/cache the models and stop")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where strong.md/.json go")
    parser.add_argument("--cache", type=Path, default=RESULTS, help="model checkpoint cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = Config(n=args.n)
    args.results.mkdir(parents=True, exist_ok=True)
    builders = {"standard": (standard_model, f"standard training, {cfg.epochs} epochs"),
                "pgd": (pgd_model, f"PGD-{cfg.adv_steps} adversarial training at ε={cfg.adv_eps}, "
                        f"{cfg.adv_epochs} epochs on {cfg.adv_train_n} images")}
    args.cache.mkdir(parents=True, exist_ok=True)
    models = {name: builders[name][0](cfg, args.cache) for name in args.models}
    if args.train_only:
        return 0

    from advlab.data import load_dataset
    test = load_dataset(cfg.dataset, split="test")
    n_of = {"standard": args.n, "pgd": args.n_pgd or args.n}
    names = [c for c in CONTENDERS if not (args.no_ref and c == "torchattacks-apgd")]
    if args.contenders is not None:
        names = [c for c in names if c == "advlab" or c in args.contenders]
    missing = [c for c in names if not available(c)]
    names = [c for c in names if c not in missing]
    result: dict[str, Any] = {
        "benchmark": "strong", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg), "rounds": args.rounds, "missing": missing,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")},
        "versions": versions(), "code_revision": git_revision(),
        "command": " ".join([_python(), "bench/bench_strong.py", *(argv or sys.argv[1:])]),
        "models": {},
    }
    for model_name, model in models.items():
        n = n_of[model_name]
        x, y = test.x[:n].contiguous(), test.y[:n].contiguous()
        runs: dict[str, list[Outcome]] = {c: [] for c in names}
        for r in range(args.rounds):
            for c in names if r % 2 == 0 else reversed(names):
                logger.info("%s model, round %d: %s ...", model_name, r + 1, c)
                out = run_contender(c, model, x, y, cfg)
                logger.info("  %.0f s wall, %.0f s CPU", out.wall_s, out.cpu_s)
                runs[c].append(out)
        block: dict[str, Any] = {"description": builders[model_name][1], "n": n, "contenders": {}}
        adv_robust, _ = robust_points(model, x, y, runs["advlab"][0].x_adv, cfg.eps)
        for c, outs in runs.items():
            robust, check = robust_points(model, x, y, outs[0].x_adv, cfg.eps)
            with torch.no_grad():
                block["n_correct"] = int((model(x).argmax(1) == y).sum())
            entry = {"n_robust": int(robust.sum()), "robust_accuracy": float(robust.float().mean()),
                     "wall_s": statistics.median(o.wall_s for o in outs),
                     "cpu_s": statistics.median(o.cpu_s for o in outs),
                     "wall_s_rounds": [o.wall_s for o in outs], "cpu_s_rounds": [o.cpu_s for o in outs],
                     "broken_only_by_advlab": int((robust & ~adv_robust).sum()),
                     "broken_only_by_it": int((adv_robust & ~robust).sum()),
                     "extra": outs[0].extra, **check}
            if c != "advlab":
                a = runs["advlab"]
                entry["advlab_over_wall"] = statistics.median(p.wall_s / q.wall_s for p, q in zip(a, outs))
                entry["advlab_over_cpu"] = statistics.median(p.cpu_s / q.cpu_s for p, q in zip(a, outs))
            block["contenders"][c] = entry
        result["models"][model_name] = block
    result["targets"] = targets(result)
    text = render(result)
    print("\n" + text)
    (args.results / "strong.md").write_text(f"`{result['command']}`\n\n" + text, encoding="utf-8")
    (args.results / "strong.json").write_text(json.dumps(result, indent=1, default=float) + "\n",
                                              encoding="utf-8")
    logger.info("wrote %s and %s", args.results / "strong.md", args.results / "strong.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
