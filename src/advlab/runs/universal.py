"""``advlab attack --attack uap|patch``: one perturbation (or sticker) for every input.

The perturbation is fitted on training images and measured on held-out test images (the
fooling rate on the points it was fitted on flatters it), beside random noise of the same norm
(UAP) or a random patch of the same size (patch). Writes ``perturbation.safetensors``,
``metrics.json`` and a gallery of held-out images with the perturbation applied.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from advlab._io import atomic_write_text
from advlab.evaluation import provenance
from advlab.runs._common import ModelSource, describe


def universal_job(*, checkpoint: ModelSource, kind: str, out: str | Path, eps: float | None = None,
                  norm: str | None = None, method: str = "sgd", epochs: int | None = None,
                  target_class: int | None = None, patch_size: float = 0.1, fit_n: int = 1000,
                  n: int = 1000, seed: int = 0, data: str | None = None, data_dir: str | None = None,
                  download: bool = False, quiet: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Fit a universal perturbation (``kind="uap"``) or a targeted patch (``kind="patch"``) on
    ``fit_n`` training images and measure it on ``n`` held-out test images.

    ``checkpoint`` is a checkpoint directory or a :class:`~advlab.models.user.UserModel` (its
    ``bounds`` are the box the perturbation and the patch live in); ``device`` is where model and
    data go, once."""
    from advlab.attacks.patch import AdversarialPatch, patch_success
    from advlab.attacks.universal import UniversalPerturbation, fooling_rate, random_perturbation
    from advlab.reports import gallery
    from advlab.runs._common import load_data, model_bounds, open_model, say as _say

    if kind not in ("uap", "patch"):
        raise ValueError(f"kind must be 'uap' or 'patch', got {kind!r}")
    model, card, test = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n, device=device)
    bounds = model_bounds(card)
    dev = test.x.device
    train = load_data(test.name, split="train", data_dir=data_dir, download=download, limit=fit_n)
    train = dataclasses.replace(train, x=train.x.to(dev), y=train.y.to(dev))
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        clean_logits = model(test.x)
    clean_conf, clean_pred = torch.softmax(clean_logits, 1).max(1)
    metrics: dict[str, Any] = {"kind": kind, "checkpoint": describe(checkpoint), "dataset": test.name,
                               "fit_points": len(train), "held_out_points": len(test)}
    if kind == "uap":
        if eps is None:
            raise ValueError("a universal perturbation needs --eps")
        attack = UniversalPerturbation(norm=norm or "linf", eps=eps, method=method,
                                       max_epochs=epochs or 3, target_class=target_class, bounds=bounds)
        res = attack(model, train.x, train.y, generator=gen)
        target = target_class
        held = fooling_rate(model, test.x, res, target=target)
        noise = [fooling_rate(model, test.x, random_perturbation(tuple(test.x.shape[1:]), norm=attack.norm,
                                                                   eps=eps, generator=gen, device=dev),
                              target=target, bounds=bounds)
                 for _ in range(5)]
        metrics.update({"attack": res.attack, "norm": attack.norm, "eps": eps, "target_class": target,
                        "fooling_rate_fit": res.fooling_rate, "fooling_rate_held_out": held,
                        "random_noise_fooling_rate_held_out": {"mean": sum(noise) / len(noise), "max": max(noise)},
                        "definition": ("fraction of held-out points sent to the target class" if target is not None
                                       else "fraction of held-out points whose prediction changes"),
                        "passes": res.epochs, "grads_per_fit_point": res.num_grads / max(len(train), 1)})
        x_adv = res.apply(test.x)
        save_file({"perturbation": res.perturbation.cpu().contiguous()}, str(out / "perturbation.safetensors"),
                  metadata={"attack": res.attack})
        summary = (f"universal {attack.norm} perturbation, ε={eps:g}: held-out fooling rate {100 * held:.1f}% "
                   f"(random noise {100 * max(noise):.1f}% at most), fitted on {len(train)} images")
    else:
        if target_class is None:
            raise ValueError("an adversarial patch needs --target-class")
        attack_p = AdversarialPatch(target_class=target_class, patch_size=patch_size, bounds=bounds)
        res_p = attack_p(model, train.x, train.y, generator=gen)
        held = patch_success(model, test.x, res_p, y=test.y, generator=torch.Generator(device=dev).manual_seed(seed + 1))
        lo, hi = bounds
        rand_patch = lo + (hi - lo) * torch.rand(res_p.patch.shape, generator=gen, device=dev)
        rand = patch_success(model, test.x, rand_patch, target=target_class, mask=res_p.mask, y=test.y,
                             generator=torch.Generator(device=dev).manual_seed(seed + 1), bounds=bounds)
        metrics.update({"attack": repr(attack_p), "target_class": target_class, "patch_size": patch_size,
                        "success_fit": res_p.success_rate, "success_held_out": held,
                        "random_patch_success_held_out": rand,
                        "definition": "fraction of held-out placements (points not already of the target class) "
                                      "classified as the target"})
        x_adv = res_p.apply(test.x, generator=torch.Generator(device=dev).manual_seed(seed + 2))
        save_file({"patch": res_p.patch.cpu().contiguous(), "mask": res_p.mask.to(torch.float32).cpu().contiguous()},
                  str(out / "perturbation.safetensors"), metadata={"attack": repr(attack_p)})
        summary = (f"patch ({patch_size:g} of the image) for class {target_class}: held-out success "
                   f"{100 * held:.1f}% (random patch {100 * rand:.1f}%)")
    metrics["seconds"] = time.perf_counter() - t0
    metrics["provenance"] = provenance(seed=seed)
    with torch.no_grad():
        adv_logits = model(x_adv)
    adv_conf, adv_pred = torch.softmax(adv_logits, 1).max(1)
    fooled = (adv_pred != clean_pred).nonzero().squeeze(1)
    show = torch.cat([fooled, (adv_pred == clean_pred).nonzero().squeeze(1)])[:6]
    gallery(test.x[show], x_adv[show], class_names=list(test.class_names), clean_pred=clean_pred[show],
            clean_conf=clean_conf[show], adv_pred=adv_pred[show], adv_conf=adv_conf[show],
            true_labels=test.y[show], norm=norm or "linf", bounds=bounds, title=summary, path=out / "gallery.png")
    atomic_write_text((out / "metrics.json"), json.dumps(metrics, indent=2, default=float) + "\n")
    _say(summary + f"; files in {out}", quiet)
    return metrics
