"""``advlab measure``: minimal perturbations per point, their distribution and the accuracy curve."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from advlab._io import atomic_write_text
from advlab.attacks import make_attack
from advlab.attacks.registry import DISPLAY_NAMES, attack_key
from advlab.evaluation import Evaluation
from advlab.runs._common import ModelSource, describe, example_noun, has_gradients, model_bounds, open_model, say

log = logging.getLogger(__name__)


#: default radii at which ``measure_job`` tabulates robust accuracy, per norm
MEASURE_EPS = {"l2": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0), "linf": (0.01, 0.05, 0.1, 0.15, 0.2, 0.3),
               "l1": (1.0, 2.0, 5.0, 10.0, 15.0, 20.0)}


@dataclass
class MeasureOutput:
    minimal: Any  # advlab.evaluation.MinimalNorms
    evaluation: Evaluation
    files: dict[str, Path] = field(default_factory=dict)


def measure_job(*, checkpoint: ModelSource, out: str | Path, attacks: Sequence[str] | None = None,
                norm: str = "l2", eps: Sequence[float] | None = None, steps: int | None = None,
                n: int = 1000, batch_size: int = 250, data: str | None = None, data_dir: str | None = None,
                download: bool = False, progress: bool = True, quiet: bool = False,
                device: str = "cpu") -> MeasureOutput:
    """Minimal perturbations of a saved model: per-point distances, their distribution, and the
    whole robust-accuracy-vs-ε curve read off them in one pass.

    Runs each minimal-norm attack (``deepfool``, ``fmn``, ``cw``) on the correctly classified
    points and keeps, per point, the smallest distance any of them found. Writes ``minimal.json``
    (every point's distances, summary, curve, provenance), ``minimal.md`` (median and quartiles
    per attack, robust accuracy at ``eps``), ``minimal_norms.png`` (curve and histogram) and
    ``index.html``. ``attacks=None``: DeepFool and FMN, or for a decision tree with no gradients
    (``--sklearn``) the tree attack of Papernot et al. (2016).
    """
    from advlab.attacks.registry import entry, list_attacks
    from advlab.evaluation import measure_minimal_norms
    from advlab.evaluation.robustness import EvalRow
    from advlab.reports import minimal_norms_figure, write_report
    from advlab.threat import canonical_norm

    norm = canonical_norm(norm)
    model = card = ds = None
    if attacks is None:
        model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n,
                                     device=device)
        attacks = ("deepfool", "fmn") if has_gradients(model) else _structural_default(model, card.architecture)
    if not attacks:
        raise ValueError("measure needs at least one minimal-norm attack")
    configs: dict[str, Any] = {}
    for name in attacks:
        key = attack_key(name)
        if entry(name).kind != "minimal" or entry(name).black_box:
            raise ValueError(f"{name} is not a minimal-perturbation attack; use one of "
                             f"{', '.join(list_attacks(access='gradients', kind='minimal'))} (fixed-ε attacks belong in `advlab evaluate`)")
        fields = {f.name for f in dataclasses.fields(entry(name).cls)}
        options = {"steps": steps} if key not in ("cw", "cwl2", "lbfgs") else {}
        if "norm" in fields:
            options["norm"] = norm
        elif norm != str(getattr(entry(name).cls, "norm", "l2")):
            raise ValueError(f"{entry(name).display} here is an {getattr(entry(name).cls, 'norm', 'l2')} attack; "
                             f"it cannot measure {norm} distances")
        configs[DISPLAY_NAMES.get(key, key)] = make_attack(key, **options)
    eps = tuple(float(e) for e in (eps if eps is not None else MEASURE_EPS[norm]))
    if any(b <= a for a, b in zip(eps, eps[1:])) or any(e < 0 for e in eps):
        raise ValueError(f"eps must be non-negative and strictly increasing, got {list(eps)}")
    if model is None:
        model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n,
                                     device=device)
    configs = {k: dataclasses.replace(v, bounds=model_bounds(card)) if hasattr(v, "bounds") else v
               for k, v in configs.items()}
    say(f"minimal {norm} perturbations of {card.architecture} on {len(ds)} {ds.name} test {example_noun(ds)}: "
         f"{', '.join(configs)}", quiet)
    mn = measure_minimal_norms(model, ds.x, ds.y, attacks=configs, norm=norm, batch_size=batch_size,
                               progress=progress)
    mn.provenance.update({"checkpoint": describe(checkpoint), "device": str(ds.x.device), "dataset": ds.name, "model": card.architecture})
    rows = []
    series = [(name, name) for name in mn.attacks] + ([("best of all", None)] if len(mn.attacks) > 1 else [])
    for label, key in series:
        acc = mn.robust_accuracy_curve(list(eps), attack=key)
        d = mn._d(key)
        for e, a in zip(eps, acc.tolist()):
            broken = mn.correct & (d <= e)
            n_broken = int(broken.sum())
            rows.append(EvalRow(
                attack=label, eps=e, norm=norm, n=mn.n, n_correct=mn.n_correct,
                n_robust=mn.n_correct - n_broken, clean_accuracy=mn.clean_accuracy, robust_accuracy=a,
                success_rate=n_broken / mn.n_correct if mn.n_correct else float("nan"),
                median_norm=float(d[broken].median()) if n_broken else float("nan"),
                mean_norm=float(d[broken].mean()) if n_broken else float("nan"),
                grads=mn.grads.get(label, sum(mn.grads.values())),
                seconds=mn.seconds.get(label, sum(mn.seconds.values())),
                config="minimal distances: " + (label if key is not None else ", ".join(mn.attacks))))
    ev = Evaluation(rows=rows, provenance=dict(mn.provenance))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "minimal.json", "table": out / "minimal.md", "plot": out / "minimal_norms.png"}
    mn.to_json(str(files["json"]))
    lines = [f"# Minimal {norm} perturbations: {card.architecture} on {ds.name}", "",
             f"n = {mn.n} test points, {mn.n_correct} correctly classified (clean accuracy "
             f"{100 * mn.clean_accuracy:.1f}%); the attacks ran on those {mn.n_correct}. Distances are "
             "the norms of the perturbations found (upper bounds on each point's true distance).", "",
             "| attack | median (correct points) | q25 | q75 | unbroken | backward passes | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, key in series:
        q = mn.quantiles([0.25, 0.5, 0.75], correct_only=True, attack=key)
        unbroken = int(torch.isinf(mn._d(key)).sum())
        grads = mn.grads.get(label, sum(mn.grads.values()))
        secs = mn.seconds.get(label, sum(mn.seconds.values()))
        lines.append(f"| {label} | {q[1]:.4g} | {q[0]:.4g} | {q[2]:.4g} | {unbroken} | {grads} | {secs:.1f} |")
    lines += ["", "Robust accuracy read off the distances (a point is robust at ε when its distance "
              "exceeds ε):", "", ev.table()]
    atomic_write_text(files["table"], "\n".join(lines) + "\n")
    minimal_norms_figure(mn, path=files["plot"],
                         title=f"Minimal {norm} perturbations, {card.architecture} on {ds.name}")
    files["html"] = write_report(out, evaluation=ev, figures=[files["plot"].name],
                                 title=f"Minimal perturbations of {card.architecture} on {ds.name}",
                                 notes=[f"Median minimal {norm} distance over the {mn.n_correct} correctly "
                                        f"classified points: {mn.median(correct_only=True):.4g} (best of "
                                        f"{', '.join(mn.attacks)})."])
    if not quiet:
        print("\n".join(lines))
    return MeasureOutput(minimal=mn, evaluation=ev, files=files)


def _structural_default(model: Any, architecture: str) -> tuple[str, ...]:
    """The minimal-perturbation attack for a model with no gradients: the tree attack for a single
    decision tree; anything else (a forest, a k-NN) has no exact minimal attack here."""
    est = next((getattr(m, "estimator") for m in model.modules() if hasattr(m, "estimator")), None)
    if est is not None and hasattr(est, "tree_"):
        return ("tree",)
    raise ValueError(f"{architecture} has no gradients and no exact minimal-perturbation attack here: measure it "
                     "with `advlab evaluate --attacks square,simba` (score-based, at fixed ε), or attack a "
                     "differentiable surrogate (advlab.models.SoftKNN for a k-NN)")
