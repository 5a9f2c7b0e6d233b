"""Fawzi, Fawzi & Fawzi (2018) on Fashion-MNIST: how robust can any classifier be, and how robust are ours?

The paper's setting: classifiers are trained on *real* data; robustness is measured at generated
points ``x = g(z)``, ``z ~ N(0, I)``, where ``g`` is a smooth generator of the data (here the decoder
of a VAE trained on the Fashion-MNIST training set). For each classifier and ``--n`` points, the
table gives the median (mean) of

* the latent robustness   ``min ||r||_2``                 s.t. ``f(g(z + r)) != f(g(z))``;
* the in-distribution one ``min ||g(z + r) - g(z)||_2``   s.t. the same (``r_in``, eq. 2);
* the unconstrained one   ``min ||δ||_2``                 s.t. ``f(g(z) + δ) != f(g(z))`` (``r_unc``);

next to Theorem 1's upper bound on the median, ``L·√(ln 2π)`` (``L`` the decoder's Lipschitz constant,
estimated from below; ``L = 1`` in latent space), with the empirical CDF of ``r_in`` against the
bound's curve. See ``advlab.evaluation.theory`` for how each number is computed.

Classifiers (all cached in ``bench/results/``, which is git-ignored): MLP, LeNet5 and SmallResNet
trained here; SmallCNN as ``bench_pgd.py`` trains it (its cached checkpoint is reused); a PGD-trained
SmallCNN (PGD-7, L∞ ε = 0.1, Madry et al. 2018) as ``bench_strong.py`` trains it when that
checkpoint is cached, else a cheaper one trained here (fewer images, one epoch; the card says which).

Run: ``.venv/bin/python bench/bounds_study.py`` (about 10-15 minutes on 2 shared cores the first time,
most of it training; ~5 minutes once the models are cached). Writes ``bench/results/bounds.json``,
``bounds.md`` and ``bounds_cdf.png``. ``--n``, ``--vae-epochs`` etc. trade time for precision.

``bounds_job`` below uses the library only, so that ``advlab bounds`` can call it (see its docstring).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_pgd.py: spin-waiting on a shared box

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

logger = logging.getLogger("bounds_study")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


# -- the job the CLI can call ---------------------------------------------------------------------


from advlab.runs.jobs import BoundsOutput, bounds_job  # noqa: E402,F401  (the job lives in the library)


def _say(message: str, quiet: bool) -> None:
    logger.info(message)
    if not quiet:
        print(message, flush=True)


# -- the classifiers of the study -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    dataset: str = "fashion-mnist"
    seed: int = 0
    latent_dim: int = 10
    vae_hidden: int = 400
    vae_epochs: int = 8
    n: int = 200
    lipschitz_samples: int = 256
    threads: int = 1
    # (architecture, epochs, training images; None = all), lr 1e-3, batch 128, Adam
    standard: tuple[tuple[str, int, int | None], ...] = (
        ("mlp", 2, None), ("lenet5", 2, None), ("small-cnn", 2, None), ("small-resnet", 1, 30000))
    # the PGD-trained SmallCNN: bench_strong.py's checkpoint if cached, else this cheaper recipe
    adv_eps: float = 0.1
    adv_steps: int = 7
    adv_epochs: int = 1
    adv_train_n: int = 10000


COLUMN = {"mlp": "MLP", "lenet5": "LeNet5", "small-cnn": "SmallCNN", "small-resnet": "SmallResNet"}


def _cached(path: Path, want: dict[str, Any], seed: int) -> bool:
    from advlab.models import load_card

    if not (path / "card.json").is_file():
        return False
    try:
        card = load_card(path)
    except (OSError, ValueError) as err:
        logger.warning("cached checkpoint %s is unusable (%s); retraining", path, err)
        return False
    ok = card.seed == seed and {k: card.training.get(k) for k in want} == want
    if not ok:
        logger.warning("cached checkpoint %s was trained differently; retraining", path)
    return ok


def standard_checkpoint(arch: str, epochs: int, limit: int | None, cfg: Config) -> Path:
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, fit, save

    suffix = f"-n{limit}" if limit else ""
    path = RESULTS / f"{arch}-{cfg.dataset}-seed{cfg.seed}-e{epochs}{suffix}"
    want = {"epochs": epochs, "batch_size": 128, "lr": 1e-3}
    if _cached(path, want, cfg.seed):
        return path
    train, test = load_dataset(cfg.dataset, split="train"), load_dataset(cfg.dataset, split="test")
    x, y = (train.x, train.y) if limit is None else (train.x[:limit], train.y[:limit])
    model = build_seeded(arch, in_shape=train.input_shape, num_classes=train.num_classes, seed=cfg.seed)
    t0 = time.perf_counter()
    fit(model, x, y, epochs=epochs, batch_size=128, lr=1e-3, seed=cfg.seed, progress=True)
    save(model, path, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": accuracy(model, test.x, test.y),
               "class_names": train.class_names,
               "training": {**want, "train_n": int(x.shape[0]), "seconds": round(time.perf_counter() - t0, 1)}})
    return path


def pgd_checkpoint(cfg: Config) -> Path:
    """bench_strong.py's PGD-7 SmallCNN (3 epochs on 20,000 images) when cached, else a cheaper one."""
    from advlab.attacks import PGD
    from advlab.data import load_dataset
    from advlab.models import accuracy, build_seeded, save

    strong = RESULTS / f"small-cnn-{cfg.dataset}-seed{cfg.seed}-pgd7-eps0.1-e3-n20000"
    if (strong / "card.json").is_file():
        return strong
    path = RESULTS / (f"small-cnn-{cfg.dataset}-seed{cfg.seed}-pgd{cfg.adv_steps}-eps{cfg.adv_eps:g}"
                      f"-e{cfg.adv_epochs}-n{cfg.adv_train_n}")
    want = {"method": f"PGD-{cfg.adv_steps} adversarial training", "eps": cfg.adv_eps, "steps": cfg.adv_steps,
            "epochs": cfg.adv_epochs, "train_n": cfg.adv_train_n, "batch_size": 256, "lr": 2e-3}
    if _cached(path, want, cfg.seed):
        return path
    train, test = load_dataset(cfg.dataset, split="train"), load_dataset(cfg.dataset, split="test")
    model = build_seeded("small-cnn", in_shape=train.input_shape, num_classes=train.num_classes, seed=cfg.seed)
    attack = PGD(eps=cfg.adv_eps, steps=cfg.adv_steps, step_size=2.5 * cfg.adv_eps / cfg.adv_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = train.x[:cfg.adv_train_n], train.y[:cfg.adv_train_n]
    t0 = time.perf_counter()
    for epoch in range(cfg.adv_epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in tqdm(range(0, x.shape[0], 256), desc=f"PGD-{cfg.adv_steps} training, epoch {epoch + 1}"):
            b = order[i:i + 256]
            model.eval()  # SmallCNN has no dropout or batch norm
            x_adv = attack(model, x[b], y[b], generator=gen).x_adv
            model.train()
            loss = F.cross_entropy(model(x_adv), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    save(model, path, overwrite=True,
         card={"dataset": cfg.dataset, "seed": cfg.seed, "clean_accuracy": accuracy(model, test.x, test.y),
               "class_names": train.class_names,
               "training": {**want, "seconds": round(time.perf_counter() - t0, 1)}})
    return path


def render(results: Path) -> int:
    from advlab.evaluation.theory import BoundsTable
    from advlab.reports.bounds import bound_cdf_figure

    table = BoundsTable.from_json(results / "bounds.json")
    (results / "bounds.md").write_text(table.to_markdown() + "\n" + table.to_markdown(relative=True),
                                       encoding="utf-8")
    bound_cdf_figure(table, path=results / "bounds_cdf.png")
    print(table.to_markdown(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=Config.n, help="generated points (default %(default)s)")
    parser.add_argument("--latent-dim", type=int, default=Config.latent_dim)
    parser.add_argument("--vae-epochs", type=int, default=Config.vae_epochs)
    parser.add_argument("--threads", type=int, default=Config.threads,
                        help="torch threads (default 1: faster than 2 on a shared 2-core machine)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--render", action="store_true",
                        help="only redraw bounds.md and bounds_cdf.png from the stored bounds.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.render:
        return render(args.results)
    cfg = Config(n=args.n, latent_dim=args.latent_dim, vae_epochs=args.vae_epochs, threads=args.threads)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    checkpoints: dict[str, Path] = {}
    for arch, epochs, limit in cfg.standard:
        checkpoints[COLUMN[arch]] = standard_checkpoint(arch, epochs, limit, cfg)
    checkpoints["SmallCNN + PGD-AT"] = pgd_checkpoint(cfg)
    train_seconds = time.perf_counter() - t0
    out = bounds_job(checkpoints=checkpoints, out=args.results, data=cfg.dataset,
                     vae=args.results / f"vae-{cfg.dataset}-d{cfg.latent_dim}-h{cfg.vae_hidden}-e{cfg.vae_epochs}"
                                        f"-seed{cfg.seed}",
                     latent_dim=cfg.latent_dim, vae_hidden=cfg.vae_hidden, vae_epochs=cfg.vae_epochs, n=cfg.n,
                     seed=cfg.seed, lipschitz_samples=cfg.lipschitz_samples, quiet=args.quiet)
    total = time.perf_counter() - t0
    data = json.loads(out.files["json"].read_text(encoding="utf-8"))
    data["provenance"]["study"] = {**asdict(cfg), "classifier_seconds": round(train_seconds, 1),
                                   "total_seconds": round(total, 1)}
    out.files["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(f"classifiers ready in {train_seconds:.0f} s; total {total:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
