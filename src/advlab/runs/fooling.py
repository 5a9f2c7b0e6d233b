"""``advlab fooling``: fooling images for a saved model, and how sure it is of plain noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from advlab._io import atomic_write_text
from advlab.runs._common import ModelSource, describe, model_bounds, open_model, say


def fooling_job(*, checkpoint: ModelSource, out: str | Path, level: float = 0.99, per_class: int = 4,
                steps: int = 200, starts: Sequence[str] = ("uniform", "gaussian"), noise_n: int = 1000,
                seed: int = 0, data: str | None = None, data_dir: str | None = None, download: bool = False,
                quiet: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Fooling images from each kind of noise in ``starts`` (a gallery per kind) and the rate at
    which ``noise_n`` plain noise inputs are classified with confidence ``>= level``. Writes
    ``fooling.json``, ``fooling.md`` and ``fooling_<start>.png``."""
    from advlab.evaluation import fooling_images, noise_confidence
    from advlab.reports import fooling_gallery

    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=1, device=device)
    shape, bounds = tuple(ds.input_shape), model_bounds(card)
    names = list(card.class_names or ds.class_names or [])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"fooling images for {card.architecture} ({ds.name}): level {level:g}, {per_class} per class", quiet)
    summary: dict[str, Any] = {"level": level, "per_class": per_class, "steps": steps, "model": card.architecture,
                               "dataset": ds.name, "checkpoint": describe(checkpoint), "seed": seed, "starts": {}}
    lines = [f"# Fooling images: {card.architecture} ({ds.name})", "",
             f"Targeted PGD from noise to every class until p(class) ≥ {level:g} (at most {steps} steps); "
             f"plain noise: {noise_n} samples, unattacked.", "",
             "| noise | fooling images that reached the level | median steps | plain noise classified with p ≥ level |",
             "|---|---:|---:|---:|"]
    for start in starts:
        r = fooling_images(model, input_shape=shape, per_class=per_class, level=level, start=start, steps=steps,
                           bounds=bounds, seed=seed)
        nc = noise_confidence(model, input_shape=shape, n=noise_n, level=level, start=start, bounds=bounds,
                              seed=seed + 1)
        path = out / f"fooling_{start}.png"
        fooling_gallery(r, class_names=names or None, path=path)
        s = r.summary()
        summary["starts"][start] = {**s, "noise_rate": nc.rate, "noise_per_class": nc.per_class, "noise_n": noise_n}
        lines.append(f"| {start} | {int(r.reached.sum())}/{r.target.numel()} | {s['median_steps']:.0f} | "
                     f"{100 * nc.rate:.1f}% ({round(nc.rate * noise_n)}/{noise_n}) |")
    atomic_write_text(out / "fooling.json", json.dumps(summary, indent=1))
    atomic_write_text(out / "fooling.md", "\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))
    return summary


__all__ = ["fooling_job"]
