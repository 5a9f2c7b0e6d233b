"""``advlab audit``, ``advlab geometry`` and ``advlab bounds``: the studies of a saved model."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from advlab.evaluation import provenance

from advlab._io import atomic_write_text
from advlab.runs._common import ModelSource, describe, open_model, say

log = logging.getLogger(__name__)


def audit_job(*, checkpoint: ModelSource, eps: float, out: str | Path, norm: str = "linf",
              n: int = 500, steps: int = 20, seed: int = 0, data: str | None = None,
              data_dir: str | None = None, download: bool = False, quiet: bool = False,
              device: str = "cpu") -> Any:
    """Run the gradient-masking audit on a checkpoint; write ``audit.json`` and ``audit.txt``."""
    from advlab.evaluation import audit

    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n,
                                 device=device)
    report = audit(model, ds.x, ds.y, norm=norm, eps=eps, steps=steps, seed=seed, max_points=n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_out = report.to_dict()
    data_out["provenance"].update({"checkpoint": describe(checkpoint), "device": str(ds.x.device),
                                   "dataset": ds.name})
    atomic_write_text((out / "audit.json"), json.dumps(data_out, indent=2, default=float) + "\n")
    atomic_write_text(out / "audit.txt", report.table() + "\n")
    say(report.table(), quiet)
    return report


def geometry_job(*, checkpoint: ModelSource, out: str | Path, n_maps: int = 6, extent: float = 0.3,
                 resolution: int = 41, gaas_eps: Sequence[float] = (1.0, 2.0, 4.0),
                 max_directions: int = 64, n_gaas: int = 200, eps: float = 0.1, steps: int = 10,
                 n: int = 500, clip: bool = False, seed: int = 0, data: str | None = None,
                 data_dir: str | None = None, download: bool = False, progress: bool = True,
                 quiet: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Decision-boundary maps, adversarial-subspace dimensions (GAAS) and the successive-update
    cosine of I-FGSM vs MI-FGSM; writes ``decision_maps.png``, ``gaas.png``, ``cosine.png`` and
    ``geometry.json``."""
    from advlab.evaluation.geometry import (adversarial_subspace_dim, decision_map,
                                            default_cosine_attacks, perturbation_cosine_similarity)
    from advlab.reports.geometry import cosine_figure, decision_maps_figure, subspace_dim_figure

    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download,
                                 n=max(n, n_gaas, n_maps), device=device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bounds = (0.0, 1.0) if clip else None
    maps = [decision_map(model, ds.x[i:i + 1], ds.y[i:i + 1], extent=extent, resolution=resolution,
                         bounds=bounds, generator=torch.Generator(device=ds.x.device).manual_seed(seed + i))
            for i in range(min(n_maps, len(ds)))]
    decision_maps_figure(maps, class_names=list(ds.class_names), ncols=3, path=out / "decision_maps.png",
                         title=f"{card.architecture} on {ds.name}: FGSM × random orthogonal direction")
    xg, yg = ds.x[:n_gaas], ds.y[:n_gaas]
    gaas = {f"eps={e:g}": adversarial_subspace_dim(model, xg, yg, eps=e, max_directions=max_directions,
                                                   bounds=bounds, progress=progress) for e in gaas_eps}
    subspace_dim_figure(list(gaas.values()), path=out / "gaas.png",
                        title=f"GAAS dimension (L2), {card.architecture} on {ds.name}")
    cos = perturbation_cosine_similarity(model, ds.x[:n], ds.y[:n], attacks=default_cosine_attacks(eps, steps),
                                         progress=progress)
    cosine_figure(cos, path=out / "cosine.png",
                  title=f"Successive-update cosine (L∞ ε={eps:g}, {steps} steps)")
    result = {"decision_maps": [m.summary() for m in maps], "gaas": {k: g.summary() for k, g in gaas.items()},
              "cosine": cos.summary(),
              "provenance": provenance(seed=seed, checkpoint=str(checkpoint), dataset=ds.name)}
    atomic_write_text((out / "geometry.json"), json.dumps(result, indent=2, default=float) + "\n")
    say(f"geometry of {card.architecture} on {ds.name}: figures and geometry.json in {out}", quiet)
    return result


@dataclass
class BoundsOutput:
    table: Any  # advlab.evaluation.theory.BoundsTable
    files: dict[str, Path] = field(default_factory=dict)
    vae_dir: Path | None = None


def bounds_job(*, checkpoints: Mapping[str, str | Path], out: str | Path, data: str | None = None,
               vae: str | Path | None = None, latent_dim: int = 10, vae_hidden: int = 400,
               vae_epochs: int = 8, vae_batch_size: int = 128, vae_lr: float = 1e-3, n: int = 200,
               seed: int = 0, lipschitz_samples: int = 256, data_dir: str | None = None,
               download: bool = False, progress: bool = True, quiet: bool = False, projected_n: int = 0,
               transfer: bool = False, query_budget: int = 1000, projection_steps: int = 300) -> BoundsOutput:
    """Train (or load) a VAE on the classifiers' training data and measure the Fawzi et al. table.

    Meant for ``advlab bounds``: ``checkpoints`` maps a column name to a saved classifier (an
    ``advlab.models.save`` directory); ``data`` defaults to the first card's dataset. ``vae`` is a
    directory: loaded when it holds a VAE trained with the same settings, else trained there
    (default ``out/vae``). Writes ``out/bounds.json`` (per-point values, summary, provenance),
    ``out/bounds.md`` (absolute and relative tables) and ``out/bounds_cdf.png``.

    ``projected_n > 0`` adds Theorem 2 for every classifier at the first ``projected_n`` points
    (``projection_steps`` Adam steps per projection, warm-started at the VAE encoder's mean as well
    as the usual starts; ``query_budget`` HopSkipJump queries per point); ``transfer`` adds
    Theorem 3 for every pair of classifiers.
    """
    from advlab.data import load_dataset
    from advlab.evaluation.theory import bounds_table
    from advlab.models import load, load_card
    from advlab.models.generative import VAE, fit_vae, load_vae, save_vae
    from advlab.reports.bounds import bound_cdf_figure

    if not checkpoints:
        raise ValueError("bounds_job needs at least one classifier checkpoint")
    cards = {name: load_card(path) for name, path in checkpoints.items()}
    data = data or next(iter(cards.values())).dataset
    if data is None:
        raise ValueError("the checkpoints' cards name no dataset; pass data=")
    train = load_dataset(data, split="train", root=data_dir, download=download)
    test = load_dataset(data, split="test", root=data_dir, download=download)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vae_dir = Path(vae) if vae is not None else out / "vae"
    want = {"dataset": train.name, "latent_dim": latent_dim, "hidden": vae_hidden, "epochs": vae_epochs,
            "batch_size": vae_batch_size, "lr": vae_lr, "seed": seed}
    generator_model = None
    if (vae_dir / "vae.json").is_file():
        model, extra = load_vae(vae_dir)
        if {k: extra.get(k) for k in want} == want:
            generator_model, vae_info = model, extra
            say(f"loaded the VAE from {vae_dir}", quiet)
    if generator_model is None:
        say(f"training a VAE (latent {latent_dim}, {vae_epochs} epochs) on {len(train)} {train.name} "
             f"images", quiet)
        generator_model = VAE(in_shape=tuple(train.input_shape), latent_dim=latent_dim, hidden=vae_hidden,
                              seed=seed)
        t0 = time.perf_counter()
        history = fit_vae(generator_model, train.x, epochs=vae_epochs, batch_size=vae_batch_size, lr=vae_lr,
                          seed=seed, progress=progress)
        vae_info = {**want, "seconds": round(time.perf_counter() - t0, 1),
                    "final_neg_elbo": history.loss[-1], "final_kl": history.kl[-1]}
        save_vae(generator_model, vae_dir, extra=vae_info)
    with torch.no_grad():
        test_rec = float((generator_model(test.x[:2000]) - test.x[:2000]).flatten(1).norm(dim=1).median())
    classifiers = {name: load(path) for name, path in checkpoints.items()}
    t0 = time.perf_counter()
    vae_model = generator_model
    theorems: dict[str, Any] = {}
    if projected_n:
        theorems.update(projected=True, projected_n=min(projected_n, n), query_budget=query_budget,
                        projection={"steps": projection_steps, "encoder": lambda x: vae_model.encode(x)[0]})
    if transfer:
        theorems["transfer"] = True
    table = bounds_table(classifiers, generator_model.decoder, latent_dim=latent_dim, n=n, seed=seed,
                         lipschitz_samples=lipschitz_samples, test_data=(test.x, test.y),
                         input_shape=tuple(train.input_shape), progress=progress, **theorems,
                         extra_provenance={"dataset": train.name, "vae": vae_info,
                                           "vae_test_reconstruction_l2_median": test_rec,
                                           "checkpoints": {k: str(v) for k, v in checkpoints.items()},
                                           "cards": {k: c.to_dict() for k, c in cards.items()}})
    seconds = time.perf_counter() - t0
    table.provenance["measure_seconds"] = round(seconds, 1)
    files = {"json": out / "bounds.json", "markdown": out / "bounds.md", "figure": out / "bounds_cdf.png"}
    table.to_json(str(files["json"]))
    atomic_write_text(files["markdown"], table.to_markdown() + "\n" + table.to_markdown(relative=True))
    bound_cdf_figure(table, path=files["figure"])
    say(table.to_markdown(), quiet)
    say(f"measured in {seconds:.0f} s; files in {out}", quiet)
    return BoundsOutput(table=table, files=files, vae_dir=vae_dir)
