"""Geometry study on a small CNN trained on Fashion-MNIST: decision maps, GAAS dimension, and the
successive-update cosine of I-FGSM vs MI-FGSM (issue #3, part 5).

The model is the standard one of ``bench_pgd.py`` / ``bench_strong.py`` (small-cnn, 2 epochs,
Adam 1e-3, batch 128, seed 0): loaded from ``bench/results/small-cnn-fashion-mnist-seed0-e2`` when
that checkpoint exists, otherwise trained here the same way and cached there. Then:

1. decision maps (CS231n lecture 16) for the first 6 test images: the L∞ FGSM direction
   ``sign(∇J)`` × a random direction orthogonal to it with the same L2 norm, 41×41 cells over
   ε ∈ [-0.3, 0.3], unclipped (the pure geometry) and clipped to [0, 1]; per map, how far one must go
   along +u and along ±v before the class changes;
2. the GAAS dimension (Tramèr et al. 2017) of the first ``--n-gaas`` test images at L2 ε = 1, 2, 4
   with k = 1, 2, 4, …, 64 (the paper's coordinates, unclipped), plus ε = 2 clipped to [0, 1] and
   ε = 2 in random coordinates, to show how much the construction's free choices matter;
3. the cosine similarity of successive updates of I-FGSM and MI-FGSM (μ = 1) at L∞ ε = 0.1,
   10 steps, α = ε/10, on the correctly classified ones among the first ``--n-cosine`` test images.

Writes PNGs, ``geometry.json`` and ``geometry.md`` into ``bench/results/geometry/`` (gitignored);
``bench/GEOMETRY.md`` discusses one run. About 5 minutes on 2 busy cores.

    .venv/bin/python bench/geometry_study.py
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger("geometry_study")

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
    # decision maps
    n_maps: int = 6
    extent: float = 0.3
    resolution: int = 41
    # GAAS
    n_gaas: int = 200
    gaas_eps: tuple[float, ...] = (1.0, 2.0, 4.0)
    gaas_variant_eps: float = 2.0
    max_directions: int = 64
    # cosine
    n_cosine: int = 500
    cos_eps: float = 0.1
    cos_steps: int = 10


def standard_model(cfg: Config, cache: Path) -> nn.Module:
    """The cached checkpoint if present, else train it exactly as bench_strong.py does."""
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, fit, load, save

    ckpt = cache / f"{cfg.architecture}-{cfg.dataset}-seed{cfg.seed}-e{cfg.epochs}"
    if ckpt.exists():
        logger.info("loading %s", ckpt)
        return load(ckpt)
    train, test = load_dataset(cfg.dataset, split="train"), load_dataset(cfg.dataset, split="test")
    model = build_seeded(cfg.architecture, in_shape=train.input_shape, num_classes=train.num_classes,
                         seed=cfg.seed)
    t0 = time.perf_counter()
    fit(model, train.x, train.y, epochs=cfg.epochs, batch_size=cfg.train_batch_size, lr=cfg.lr,
        seed=cfg.seed, progress=True)
    want = {"epochs": cfg.epochs, "batch_size": cfg.train_batch_size, "lr": cfg.lr}
    save(model, ckpt, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": accuracy(model, test.x, test.y),
               "class_names": train.class_names,
               "training": {**want, "seconds": round(time.perf_counter() - t0, 1)}})
    return load(ckpt)


def first_change(classes: torch.Tensor, coords: torch.Tensor, clean: int) -> dict[str, float | None]:
    """From the stored map: the smallest offset along +u (row b = 0) and along ±v (column a = 0)
    whose cell is not the clean class (None: none within the extent)."""
    o = int((coords == 0).nonzero()[0, 0])
    row, col = classes[o], classes[:, o]

    def smallest(line: torch.Tensor, signs: tuple[int, ...]) -> float | None:
        best = None
        for s in signs:
            idx = range(o, len(coords)) if s > 0 else range(o, -1, -1)
            for i in idx:
                if int(line[i]) != clean:
                    d = abs(float(coords[i]))
                    best = d if best is None else min(best, d)
                    break
        return best

    return {"fgsm_plus": smallest(row, (1,)), "fgsm_minus": smallest(row, (-1,)),
            "random_either": smallest(col, (1, -1))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-gaas", type=int, default=Config.n_gaas)
    parser.add_argument("--n-cosine", type=int, default=Config.n_cosine)
    parser.add_argument("--out", type=Path, default=RESULTS / "geometry")
    parser.add_argument("--cache", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = Config(n_gaas=args.n_gaas, n_cosine=args.n_cosine)
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)

    from advlab.data import load_dataset
    from advlab.evaluation.geometry import (
        adversarial_subspace_dim,
        decision_map,
        default_cosine_attacks,
        perturbation_cosine_similarity,
    )
    from advlab.evaluation.robustness import provenance
    from advlab.reports.geometry import cosine_figure, decision_maps_figure, subspace_dim_figure

    t_start = time.perf_counter()
    model = standard_model(cfg, args.cache)
    model.eval()
    test = load_dataset(cfg.dataset, split="test")
    names = list(test.class_names)
    short = [n.split("/")[0] for n in names]
    out: dict[str, Any] = {"config": asdict(cfg), "provenance": provenance(benchmark="geometry_study"),
                           "seconds": {}}

    # 1. decision maps -------------------------------------------------------------------------
    t0 = time.perf_counter()
    maps: dict[str, list[Any]] = {"unclipped": [], "clipped": []}
    for i in range(cfg.n_maps):
        x, y = test.x[i:i + 1], test.y[i:i + 1]
        for kind, bounds in (("unclipped", None), ("clipped", (0.0, 1.0))):
            maps[kind].append(decision_map(model, x, y, extent=cfg.extent, resolution=cfg.resolution,
                                           bounds=bounds, generator=torch.Generator().manual_seed(i)))
    for kind, dmaps in maps.items():
        decision_maps_figure(dmaps, class_names=short, ncols=3, path=args.out / f"decision_maps_{kind}.png",
                             title=f"Fashion-MNIST small CNN: FGSM × random orthogonal direction "
                                   f"({kind}{' to [0, 1]' if kind == 'clipped' else ''})")
    out["decision_maps"] = {
        kind: [{"index": i, "true": names[m.true_class], "clean_pred": names[m.clean_class],
                "clean_confidence": m.clean_confidence, "adversarial_fraction": m.adversarial_fraction,
                "classes_present": [names[c] for c in torch.unique(m.classes).tolist()],
                "clipped_fraction": m.clipped_fraction,
                "first_change": first_change(m.classes, m.coords, m.clean_class),
                "u_l2": m.u_norms["l2"], "v_linf": m.v_norms["linf"]} for i, m in enumerate(dmaps)]
        for kind, dmaps in maps.items()}
    out["seconds"]["decision_maps"] = round(time.perf_counter() - t0, 1)
    logger.info("decision maps: %.0f s", out["seconds"]["decision_maps"])

    # 2. GAAS --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    xg, yg = test.x[:cfg.n_gaas], test.y[:cfg.n_gaas]
    gaas_runs: dict[str, Any] = {}
    for eps in cfg.gaas_eps:
        gaas_runs[f"eps={eps:g}"] = adversarial_subspace_dim(model, xg, yg, eps=eps,
                                                             max_directions=cfg.max_directions, progress=True)
        logger.info("GAAS ε=%g: %s", eps, gaas_runs[f"eps={eps:g}"].distribution())
    e = cfg.gaas_variant_eps
    gaas_runs[f"eps={e:g} clipped"] = adversarial_subspace_dim(
        model, xg, yg, eps=e, max_directions=cfg.max_directions, bounds=(0.0, 1.0), progress=True)
    gaas_runs[f"eps={e:g} random coords"] = adversarial_subspace_dim(
        model, xg, yg, eps=e, max_directions=cfg.max_directions,
        generator=torch.Generator().manual_seed(cfg.seed), progress=True)
    subspace_dim_figure([gaas_runs[f"eps={eps:g}"] for eps in cfg.gaas_eps], path=args.out / "gaas.png",
                        title="GAAS dimension, Fashion-MNIST small CNN (L2, unclipped)")
    out["gaas"] = {k: r.summary() for k, r in gaas_runs.items()}
    out["seconds"]["gaas"] = round(time.perf_counter() - t0, 1)
    logger.info("GAAS: %.0f s", out["seconds"]["gaas"])

    # 3. cosine similarity of successive updates --------------------------------------------------
    t0 = time.perf_counter()
    xc, yc = test.x[:cfg.n_cosine], test.y[:cfg.n_cosine]
    cos = perturbation_cosine_similarity(model, xc, yc, attacks=default_cosine_attacks(cfg.cos_eps, cfg.cos_steps),
                                         batch_size=250, progress=True)
    cosine_figure(cos, path=args.out / "cosine.png",
                  title=f"Successive-update cosine, Fashion-MNIST small CNN (L∞ ε={cfg.cos_eps:g}, "
                        f"{cfg.cos_steps} steps)")
    cosine_figure(cos, of="direction", path=args.out / "cosine_directions.png",
                  title="Successive step-direction cosine (before projection)")
    out["cosine"] = cos.summary()
    out["seconds"]["cosine"] = round(time.perf_counter() - t0, 1)
    out["seconds"]["total"] = round(time.perf_counter() - t_start, 1)
    logger.info("cosine: %.0f s; total %.0f s", out["seconds"]["cosine"], out["seconds"]["total"])

    (args.out / "geometry.json").write_text(json.dumps(out, indent=2, default=float) + "\n", encoding="utf-8")
    (args.out / "geometry.md").write_text(render_markdown(out), encoding="utf-8")
    print(render_markdown(out))
    return 0


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def render_markdown(out: dict[str, Any]) -> str:
    cfg = out["config"]
    lines = [f"# Geometry study ({cfg['architecture']} on {cfg['dataset']}, seed {cfg['seed']})", "",
             f"code revision `{out['provenance']['code_revision']}`, torch {out['provenance']['torch']}, "
             f"{out['provenance']['created']}; seconds: {out['seconds']}", "",
             f"## Decision maps (first {cfg['n_maps']} test images, extent ±{cfg['extent']}, "
             f"{cfg['resolution']}×{cfg['resolution']})", "",
             "| # | true | clean pred (conf) | bounds | first change +FGSM | −FGSM | ±random | "
             "non-true cells | classes |", "|---|---|---|---|---:|---:|---:|---:|---|"]
    for kind, rows in out["decision_maps"].items():
        for r in rows:
            fc = r["first_change"]
            lines.append(f"| {r['index']} | {r['true']} | {r['clean_pred']} ({r['clean_confidence']:.2f}) | "
                         f"{kind} | {_fmt(fc['fgsm_plus'])} | {_fmt(fc['fgsm_minus'])} | "
                         f"{_fmt(fc['random_either'])} | {100 * r['adversarial_fraction']:.0f}% | "
                         f"{', '.join(r['classes_present'])} |")
    lines += ["", f"## GAAS dimension (first {cfg['n_gaas']} test images, k ≤ {cfg['max_directions']})", "",
              "| run | measured / n | mean | median | dim 0 | dim = max k | distribution (k: points) |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name, s in out["gaas"].items():
        dist = ", ".join(f"{k}: {v}" for k, v in s["distribution"].items())
        lines.append(f"| {name} | {s['n_measured']} / {s['n']} | {s['mean_dim']:.1f} | {s['median_dim']:.0f} | "
                     f"{100 * s['fraction_dim_0']:.0f}% | {100 * s['fraction_at_max_k']:.0f}% | {dist} |")
    c = out["cosine"]
    lines += ["", f"## Successive-update cosine (n_used = {c['n_used']} of {c['n']})", "",
              "| attack | mean cos(updates) | mean cos(directions) | success | per step (updates) |",
              "|---|---:|---:|---:|---|"]
    for name, a in c["attacks"].items():
        per = ", ".join(f"{v:.3f}" for v in a["per_step_update_cosine"])
        lines.append(f"| {name} | {a['mean_update_cosine']:.4f} | {a['mean_direction_cosine']:.4f} | "
                     f"{100 * a['success_rate']:.1f}% | {per} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
