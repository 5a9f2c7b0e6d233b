"""``advlab evaluate``: robust accuracy over ε for several attacks, optionally the strong cascade."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from advlab._io import atomic_write_text
from advlab.attacks import make_attack
from advlab.evaluation import Evaluation, evaluate
from advlab.runs._common import (DEMO_EPS, ModelSource, command_steps, describe, example_noun, has_gradients,
                                 model_bounds, open_model, say)

log = logging.getLogger(__name__)


DEFAULT_ATTACKS = ("fgsm", "ifgsm", "pgd", "mifgsm")
#: the default for a model with no gradients (a tree, a forest, a k-NN from ``--sklearn``): attacks
#: that only query its scores
QUERY_ATTACKS = ("square", "simba")

def evaluation_attacks(names: Sequence[str], *, norm: str = "linf", steps: int | None = None,
                       step_size: float | None = None, early_stop: bool = True,
                       eps: float = 0.0, bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """``{display name: attack config}`` for an evaluation; iterative attacks in evaluation mode.

    ``eps`` is a placeholder that :func:`advlab.evaluation.evaluate` replaces at every ε (black-box
    attacks refuse 0, so give the largest ε there)."""
    from advlab.attacks.registry import attack_key, entry
    from advlab.threat import L0_ATTACKS, canonical_norm

    sparse = [name for name in names if getattr(entry(name).cls, "norm", None) == "l0"]
    if sparse and len(sparse) < len(names):
        raise ValueError(f"{', '.join(sparse)} count changed features (an L0 budget) and "
                         f"{', '.join(n for n in names if n not in sparse)} measure an Lp norm: one ε axis "
                         "cannot hold both; evaluate them in separate runs")
    if canonical_norm(norm, allow_l0=True) == "l0" and not sparse:
        raise ValueError(f"--norm l0 is the budget of the sparse attacks ({L0_ATTACKS}); "
                         f"{', '.join(names)} step in an Lp norm")
    out: dict[str, Any] = {}
    for name in names:
        spec = entry(name)
        if spec.kind == "minimal":
            raise ValueError(f"{name} is a minimal-perturbation attack (it has no ε); measure it with "
                             "`advlab measure` / advlab.evaluation.measure_minimal_norms")
        if spec.kind == "universal":
            raise ValueError(f"{name} fits one perturbation for all inputs: run `advlab attack --attack {name}`")
        placeholder = (eps if eps > 0 else 1.0) if spec.black_box else 0.0
        out[spec.display] = make_attack(name, eps=placeholder, norm=norm,
                                        steps=command_steps(attack_key(name), steps), step_size=step_size,
                                        early_stop=early_stop or None, bounds=tuple(bounds), strict=False)
    return out


@dataclass
class EvaluateOutput:
    evaluation: Evaluation
    files: dict[str, Path]


def evaluate_job(*, checkpoint: ModelSource, out: str | Path, attacks: Sequence[str] | None = None,
                 eps: Sequence[float] = DEMO_EPS, norm: str = "linf", steps: int | None = None,
                 step_size: float | None = None, n: int = 1000, batch_size: int = 250, seed: int = 0,
                 data: str | None = None, data_dir: str | None = None, download: bool = False,
                 progress: bool = True, quiet: bool = False, title: str | None = None,
                 strong: bool = False, device: str = "cpu", sharded: bool = False,
                 writer: bool = True, strong_version: str = "fast") -> EvaluateOutput:
    """Accuracy against ε for several attacks: table (md, csv), JSON, plot and an HTML page.

    ``strong=True`` also runs, at each ε, the strong cascade of :func:`advlab.evaluation.strong_attacks`
    (APGD-CE, then APGD-T on the points still robust; Croce & Hein 2020) with its per-point record in
    ``OUT/strong/eps_<ε>/``: running the same command again resumes an interrupted cascade from there.
    Its rows are ``APGD-CE`` and ``APGD-CE → APGD-T`` (cumulative), and the worst-case row counts a
    point as broken when any attack or the cascade broke it. ``OUT/strong.md`` holds the cascade's
    stage table per ε.

    ``checkpoint`` is a checkpoint directory, a :class:`~advlab.models.user.UserModel` or a
    :class:`~advlab.models.sklearn.SklearnModel`; ``attacks`` defaults to :data:`DEFAULT_ATTACKS`,
    or :data:`QUERY_ATTACKS` for a model with no gradients; ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``) is where model and data go, once.

    ``sharded=True`` (under torchrun; the process group initialised) spreads the attack calls over
    the ranks (:func:`advlab.evaluation.sharded.evaluate_sharded`: the same rows as unsharded);
    only the rank with ``writer=True`` (rank 0) prints and writes files.
    """
    from advlab.reports import accuracy_curve, write_report, write_table

    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n,
                                 device=device)
    if attacks is None:
        attacks = DEFAULT_ATTACKS if has_gradients(model) else QUERY_ATTACKS
        if not has_gradients(model):
            say(f"{card.architecture} has no gradients: evaluating with the score-based {', '.join(attacks)} "
                "(name --attacks to choose)", quiet or not writer)
    configs = evaluation_attacks(attacks, norm=norm, steps=steps, step_size=step_size, eps=max(eps),
                                 bounds=model_bounds(card))
    if any(getattr(type(a), "norm", None) == "l0" for a in configs.values()) and \
            any(not float(e).is_integer() for e in eps):
        raise ValueError(f"the sparse attacks count changed features: every --eps must be a whole number, "
                         f"got {', '.join(f'{e:g}' for e in eps)}")
    quiet = quiet or not writer
    say(f"evaluating {card.architecture} on {len(ds)} {ds.name} test {example_noun(ds)}: "
         f"{', '.join(configs)} at ε = {', '.join(f'{e:g}' for e in eps)}", quiet)
    if sharded:
        from advlab.evaluation.sharded import evaluate_sharded

        ev = evaluate_sharded(model, ds.x, ds.y, attacks=configs, eps=eps, batch_size=batch_size, seed=seed,
                              progress=progress)
    else:
        ev = evaluate(model, ds.x, ds.y, attacks=configs, eps=eps, batch_size=batch_size, seed=seed,
                      progress=progress)
    ev.provenance.update({"checkpoint": describe(checkpoint), "device": str(ds.x.device), "dataset": ds.name, "model": card.architecture})
    if not writer:
        return EvaluateOutput(evaluation=ev, files={})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "robust_accuracy.md", "csv": out / "robust_accuracy.csv",
             "json": out / "results.json", "plot": out / "accuracy_vs_eps.png"}
    if strong:
        ev, summaries = _add_strong_cascade(ev, model, ds.x, ds.y, eps=eps, norm=norm, out=out / "strong",
                                            bounds=model_bounds(card),
                                            steps=steps or 100,
                                            batch_size=batch_size, seed=seed, progress=progress, quiet=quiet,
                                            version=strong_version)
        files["strong"] = out / "strong.md"
        cascade_name = ("APGD-CE → APGD-T → FAB-T → Square (AutoAttack standard)" if strong_version == "standard"
                        else "APGD-CE → APGD-T")
        atomic_write_text(files["strong"], f"# Strong evaluation: {cascade_name} cascade per ε\n\n"
                          + "\n".join(summaries))
    write_table(ev, files["table"], files["csv"])
    ev.to_json(str(files["json"]))
    accuracy_curve(ev, path=files["plot"], title=title or f"{card.architecture} on {ds.name}")
    figures = [files["plot"].name]
    gallery_attack = _gallery_attack(configs, eps)
    sections: dict[str, str] = {}
    if gallery_attack is not None and (ds.kind in ("table", "signal") or (ds.kind == "image"
                                                                         and ds.x.shape[1] in (1, 3))):
        shown, table = _gallery(model, ds, gallery_attack, out, seed=seed)
        files.update(shown)
        if table is None:
            figures.append(shown["gallery"].name)
        else:
            sections[f"Changed features ({gallery_attack[0]})"] = table
    files["html"] = write_report(out, evaluation=ev, figures=figures, sections=sections,
                                 title=title or f"Robustness of {card.architecture} on {ds.name}")
    if not quiet:
        print(ev.table())
    return EvaluateOutput(evaluation=ev, files=files)


def _gallery_attack(configs: dict[str, Any], eps: Sequence[float]) -> tuple[str, Any] | None:
    """The attack and ε the page's gallery shows: the last white-box attack listed (the strongest,
    by the usual order fgsm, ifgsm, pgd, ...), at the median ε."""
    from advlab.attacks.contract import at_radius

    white = [(name, a) for name, a in configs.items() if getattr(a, "access", "gradients") == "gradients"]
    if not white:
        return None
    name, attack = white[-1]
    e = sorted(eps)[len(eps) // 2]
    return f"{name} at ε = {e:g}", at_radius(attack, e)


def _gallery(model: nn.Module, ds: Any, named: tuple[str, Any], out: Path, *, seed: int,
             points: int = 200) -> tuple[dict[str, Path], str | None]:
    """Adversarial examples of the evaluation's own attack, real successes first: six images,
    four signals or five table rows (see :func:`advlab.runs._common.write_examples`)."""
    from advlab.evaluation import clean_predictions
    from advlab.runs._common import write_examples

    label, attack = named
    x, y = ds.x[:points], ds.y[:points]
    res = attack(model, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)  # (loaded in eval mode)
    clean_pred = clean_predictions(model, x)
    return write_examples(ds, x, res, clean_pred=clean_pred, clean_conf=probs.gather(1, clean_pred[:, None]).squeeze(1),
                          y=y, out=out, title=label)


def _add_strong_cascade(ev: Evaluation, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        eps: Sequence[float], norm: str, out: Path, steps: int, batch_size: int,
                        bounds: tuple[float, float],
                        seed: int, progress: bool, quiet: bool,
                        version: str = "fast") -> tuple[Evaluation, list[str]]:
    """``ev`` plus the strong cascade's rows at each ε, and a worst case over everything."""
    import dataclasses as dc

    from advlab.evaluation import strong_evaluate
    from advlab.evaluation.robustness import WORST_CASE, EvalRow

    rows = [r for r in ev.rows if r.attack != WORST_CASE]
    per_point = dict(ev.per_point)
    summaries = []
    for e in eps:
        record = out / f"eps_{e:g}"
        resumed = (record / "record.json").exists()
        say(f"strong cascade at ε = {e:g} ({'resuming from' if resumed else 'record in'} {record})", quiet)
        cr = strong_evaluate(model, x, y, eps=e, norm=norm, steps=steps, batch_size=batch_size, seed=seed,
                             bounds=bounds, checkpoint_path=record, progress=progress, version=version)
        cascade_rows = cr.rows()
        names = [" → ".join(cr.names[: k + 1]) for k in range(len(cr.names))]
        for row, name in zip(cascade_rows, names):
            rows.append(dc.replace(row, attack=name))
        per_point[f"{names[-1]}@{e:g}"] = cr.broken.to(x.device)
        summaries.append(f"## ε = {e:g}\n\n" + cr.table())
    attack_names = list(dict.fromkeys(r.attack for r in rows))
    first = rows[0]
    for e in eps:
        broken = torch.zeros(first.n, dtype=torch.bool, device=x.device)
        keys = [k for k in per_point if k != "correct" and k.rsplit("@", 1)[1] == f"{e:g}"]
        for k in keys:
            broken |= per_point[k].to(x.device)
        at_e = [r for r in rows if r.eps == e]
        n_broken = int(broken.sum())
        rows.append(EvalRow(
            attack=WORST_CASE, eps=e, norm=first.norm, n=first.n, n_correct=first.n_correct,
            n_robust=first.n_correct - n_broken, clean_accuracy=first.clean_accuracy,
            robust_accuracy=(first.n_correct - n_broken) / first.n,
            success_rate=n_broken / first.n_correct if first.n_correct else float("nan"),
            median_norm=float("nan"), mean_norm=float("nan"),
            grads=sum(r.grads for r in at_e), seconds=sum(r.seconds for r in at_e),
            config="any of: " + ", ".join(a for a in attack_names if a != "APGD-CE")))
    prov = dict(ev.provenance)
    prov["strong"] = {"attacks": "APGD-CE → APGD-T (strong_attacks)", "records": str(out)}
    return Evaluation(rows=rows, provenance=prov, per_point=per_point), summaries
