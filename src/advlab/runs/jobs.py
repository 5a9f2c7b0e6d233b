"""The jobs behind the CLI: train a model, attack it, evaluate it, and the demo that does all three.

Each job is a plain function returning what it wrote; the CLI only parses arguments and calls
them, and tests call them directly. Every stored number carries its provenance.
"""

from __future__ import annotations

import json
import math
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import save_file
from torch import nn

from advlab.attacks import AttackResult, make_attack, random_targets
from advlab.attacks.registry import DISPLAY_NAMES, attack_key
from advlab.data import Dataset, DatasetNotFoundError, load_dataset
from advlab.evaluation import Evaluation, clean_predictions, evaluate, provenance
from advlab.models import ModelCard, accuracy, build_seeded, fit, load, load_card, save

log = logging.getLogger(__name__)

#: The ε list of seed 004 (the TensorFlow FGSM tutorial) plus 0.05 and 0.2, as issue #2 asks.
DEMO_EPS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.15, 0.2, 0.5, 0.7)


@dataclass
class TrainOutput:
    checkpoint: Path
    card: ModelCard
    history: dict[str, Any]
    dataset: str


def _say(message: str, quiet: bool) -> None:
    log.info(message)
    if not quiet:
        print(message, flush=True)


def load_data(name: str, *, split: str, data_dir: str | None = None, download: bool = False,
              limit: int | None = None) -> Dataset:
    ds = load_dataset(name, split=split, root=data_dir, download=download)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ds = ds.subset(min(limit, len(ds)))
    return ds


def train_job(*, data: str, model: str, out: str | Path, epochs: int = 2, seed: int = 0,
              batch_size: int = 128, lr: float = 1e-3, data_dir: str | None = None,
              download: bool = False, limit: int | None = None, progress: bool = True,
              overwrite: bool = False, quiet: bool = False) -> TrainOutput:
    """Train a zoo architecture on a dataset and save it as a checkpoint with its card."""
    train = load_data(data, split="train", data_dir=data_dir, download=download, limit=limit)
    test = load_data(data, split="test", data_dir=data_dir, download=download)
    _say(f"training {model} on {train.name} ({len(train)} images {tuple(train.input_shape)}, "
         f"{train.num_classes} classes) for {epochs} epoch(s), seed {seed}", quiet)
    net = build_seeded(model, in_shape=tuple(train.input_shape), num_classes=train.num_classes, seed=seed)
    history = fit(net, train.x, train.y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  progress=progress, x_val=test.x, y_val=test.y)
    acc = accuracy(net, test.x, test.y)
    card = {"dataset": train.name, "class_names": tuple(train.class_names), "clean_accuracy": acc,
            "seed": seed, "training": {**history.settings, "epochs": epochs, "train_size": len(train),
                                       "data_source": train.source}}
    path = save(net, out, card=card, overwrite=overwrite)
    _say(f"test accuracy {100 * acc:.2f}% on {len(test)} images; checkpoint written to {path}", quiet)
    return TrainOutput(checkpoint=Path(path), card=load_card(path), history=history.to_dict(),
                       dataset=train.name)


def _checkpoint_data(card: ModelCard, *, data: str | None, data_dir: str | None, download: bool,
                     n: int | None) -> Dataset:
    name = data or card.dataset
    if name is None:
        raise ValueError("the checkpoint's card names no dataset; pass --data NAME")
    return load_data(name, split="test", data_dir=data_dir, download=download, limit=n)


@dataclass
class AttackOutput:
    result: AttackResult
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def attack_job(*, checkpoint: str | Path, attack: str, eps: float | None, out: str | Path,
               norm: str | None = None, steps: int | None = None, step_size: float | None = None,
               targeted: bool = False, n: int = 100, batch_size: int = 250, seed: int = 0,
               queries: int | None = None, source: str | Path | None = None,
               data: str | None = None, data_dir: str | None = None, download: bool = False,
               gallery_size: int = 6, quiet: bool = False) -> AttackOutput:
    """Attack a saved model on ``n`` test images; save the adversarial examples, metrics, gallery.

    White-box attacks get the model. Black-box attacks (``square``, ``simba``, ``nes``, ...) get
    only ``Oracle(model, output=..., budget=queries)``: ``queries`` is the per-point budget, and
    the metrics record the queries each point used and how many ran out of budget. With
    ``source`` (a checkpoint), the white-box ``attack`` is crafted on that model and transferred:
    the target is asked one label per point. Minimal-perturbation attacks take no ``eps``.
    """
    from advlab.attacks.registry import BLACKBOX, MINIMAL
    from advlab.oracle import Oracle
    from advlab.reports import gallery_from_result

    key = attack_key(attack)
    minimal = key in MINIMAL or (key in BLACKBOX and key in MINIMAL_BLACKBOX)
    if minimal and eps is not None:
        raise ValueError(f"{attack} looks for the smallest perturbation: it takes no --eps")
    if not minimal and eps is None:
        raise ValueError(f"{attack} needs --eps (the perturbation budget)")
    if queries is not None and key not in BLACKBOX:
        raise ValueError(f"--queries is for black-box attacks ({', '.join(BLACKBOX)}); {attack} is white-box")
    if source is not None and key in BLACKBOX:
        raise ValueError("--source crafts a white-box attack on a substitute; use a white-box attack with it")
    model = load(checkpoint)
    card = load_card(checkpoint)
    ds = _checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=n)
    options: dict[str, Any] = {"eps": eps, "norm": norm, "steps": steps, "step_size": step_size}
    if key in BLACKBOX and queries is not None:
        options["queries"] = queries
    config = make_attack(key, strict=True, **options)
    victim: Any = model
    if key in BLACKBOX:
        victim = Oracle(model, output=BLACKBOX[key], budget=queries)  # type: ignore[arg-type]
    elif source is not None:
        from advlab.attacks import TransferAttack
        config = TransferAttack(attack=config, source=load(source))
        victim = Oracle(model, output="label")
    gen = torch.Generator().manual_seed(seed)
    target = random_targets(ds.y, ds.num_classes, generator=gen) if targeted else None
    t0 = time.perf_counter()
    parts, source_parts = [], []
    for i in range(0, len(ds), batch_size):
        sl = slice(i, i + batch_size)
        res = config(victim, ds.x[sl], ds.y[sl], generator=gen,
                     target=None if target is None else target[sl])
        if source is not None:
            source_parts.append(res.source)
            res = res.target
        parts.append(res)
    seconds = time.perf_counter() - t0
    result = _concat(parts)
    with torch.no_grad():
        clean_logits = torch.cat([model(ds.x[i:i + 1000]) for i in range(0, len(ds), 1000)])
    clean_conf, clean_pred = torch.softmax(clean_logits, 1).max(1)
    correct = clean_pred == ds.y
    n_correct = int(correct.sum())
    broken = result.success & correct
    metrics = {
        "attack": result.attack, "checkpoint": str(checkpoint), "dataset": ds.name, "n": len(ds),
        "targeted": targeted, "norm": result.threat.norm,
        "eps": result.threat.eps if math.isfinite(result.threat.eps) else None,
        "clean_accuracy": n_correct / len(ds),
        "robust_accuracy": float((correct & ~result.success).float().mean()) if not targeted else None,
        "success_rate_over_correct": int(broken.sum()) / n_correct if n_correct else None,
        "denominator": f"{n_correct} correctly classified of {len(ds)}",
        "median_norm_of_successes": float(result.norms[broken].median()) if broken.any() else None,
        "grads": int(result.num_grads.sum()), "seconds": seconds,
        "provenance": provenance(seed=seed),
    }
    if result.queries is not None:
        q = result.queries[correct].float()
        metrics.update({
            "access": "black-box: " + ("labels only" if isinstance(victim, Oracle) and victim.output == "label"
                                       else "scores"),
            "query_budget_per_point": queries,
            "queries_mean": float(q.mean()) if q.numel() else None,
            "queries_median": float(q.median()) if q.numel() else None,
            "queries_mean_per_success": float(result.queries[broken].float().mean()) if broken.any() else None,
            "budget_exhausted": int((result.budget_exhausted & correct).sum())
            if result.budget_exhausted is not None else 0,
        })
    if source_parts:
        src = _concat(source_parts)
        metrics["transfer"] = {"source": str(source),
                               "source_white_box_success": float(src.success[correct].float().mean())
                               if n_correct else None}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"adversarial": out / "adversarial.safetensors", "metrics": out / "metrics.json",
             "gallery": out / "gallery.png"}
    tensors = {"x": ds.x, "x_adv": result.x_adv, "y": ds.y, "pred_adv": result.pred,
               "success": result.success.to(torch.uint8), "clean_pred": clean_pred}
    if target is not None:
        tensors["target"] = target
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(files["adversarial"]),
              metadata={"attack": result.attack, "class_names": json.dumps(list(ds.class_names))})
    files["metrics"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    gallery_from_result(ds.x, result, class_names=list(ds.class_names), clean_pred=clean_pred,
                        clean_conf=clean_conf, y=ds.y, n=gallery_size, path=files["gallery"])
    rate = metrics["success_rate_over_correct"]
    budget = f"ε={eps:g}" if eps is not None else "minimal perturbation"
    _say(f"{DISPLAY_NAMES.get(key, attack)} {budget}: success {100 * (rate or 0):.1f}% of the "
         f"{n_correct} correctly classified of {len(ds)} images; files in {out}", quiet)
    return AttackOutput(result=result, metrics=metrics, files=files)


def _concat(parts: Sequence[AttackResult]) -> AttackResult:
    first = parts[0]
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return AttackResult(x_adv=cat("x_adv"), success=cat("success"), pred=cat("pred"),
                        confidence=cat("confidence"), norms=cat("norms"), num_grads=cat("num_grads"),
                        num_forwards=cat("num_forwards"), threat=first.threat, attack=first.attack,
                        target=cat("target") if first.target is not None else None,
                        queries=cat("queries") if first.queries is not None else None,
                        budget_exhausted=cat("budget_exhausted") if first.budget_exhausted is not None else None)


DEFAULT_ATTACKS = ("fgsm", "ifgsm", "pgd", "mifgsm")

#: black-box attacks that minimise the perturbation instead of working within an eps
MINIMAL_BLACKBOX = frozenset({"hsj", "hopskipjump", "boundary"})


def evaluation_attacks(names: Sequence[str], *, norm: str = "linf", steps: int | None = None,
                       step_size: float | None = None, early_stop: bool = True) -> dict[str, Any]:
    """``{display name: attack config}`` for an evaluation; iterative attacks in evaluation mode."""
    from advlab.attacks.registry import MINIMAL

    out: dict[str, Any] = {}
    for name in names:
        key = attack_key(name)
        if key in MINIMAL:
            raise ValueError(f"{name} is a minimal-perturbation attack (it has no ε); measure it with "
                             "`advlab measure` / advlab.evaluation.measure_minimal_norms")
        out[DISPLAY_NAMES.get(key, key)] = make_attack(
            key, eps=0.0, norm=None if key in ("fgm", "mifgm") else norm, steps=steps,
            step_size=step_size, early_stop=early_stop or None, strict=False)
    return out


@dataclass
class EvaluateOutput:
    evaluation: Evaluation
    files: dict[str, Path]


def evaluate_job(*, checkpoint: str | Path, out: str | Path, attacks: Sequence[str] = DEFAULT_ATTACKS,
                 eps: Sequence[float] = DEMO_EPS, norm: str = "linf", steps: int | None = None,
                 step_size: float | None = None, n: int = 1000, batch_size: int = 250, seed: int = 0,
                 data: str | None = None, data_dir: str | None = None, download: bool = False,
                 progress: bool = True, quiet: bool = False, title: str | None = None,
                 strong: bool = False) -> EvaluateOutput:
    """Accuracy against ε for several attacks: table (md, csv), JSON, plot and an HTML page.

    ``strong=True`` also runs, at each ε, the strong cascade of :func:`advlab.evaluation.strong_attacks`
    (APGD-CE, then APGD-T on the points still robust; Croce & Hein 2020) with its per-point record in
    ``OUT/strong/eps_<ε>/``: running the same command again resumes an interrupted cascade from there.
    Its rows are ``APGD-CE`` and ``APGD-CE → APGD-T`` (cumulative), and the worst-case row counts a
    point as broken when any attack or the cascade broke it. ``OUT/strong.md`` holds the cascade's
    stage table per ε.
    """
    from advlab.reports import accuracy_curve, write_report, write_table

    model = load(checkpoint)
    card = load_card(checkpoint)
    ds = _checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=n)
    configs = evaluation_attacks(attacks, norm=norm, steps=steps, step_size=step_size)
    _say(f"evaluating {card.architecture} on {len(ds)} {ds.name} test images: "
         f"{', '.join(configs)} at ε = {', '.join(f'{e:g}' for e in eps)}", quiet)
    ev = evaluate(model, ds.x, ds.y, attacks=configs, eps=eps, batch_size=batch_size, seed=seed,
                  progress=progress)
    ev.provenance.update({"checkpoint": str(checkpoint), "dataset": ds.name, "model": card.architecture})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"table": out / "robust_accuracy.md", "csv": out / "robust_accuracy.csv",
             "json": out / "results.json", "plot": out / "accuracy_vs_eps.png"}
    if strong:
        ev, summaries = _add_strong_cascade(ev, model, ds.x, ds.y, eps=eps, norm=norm, out=out / "strong",
                                            steps=steps or 100,
                                            batch_size=batch_size, seed=seed, progress=progress, quiet=quiet)
        files["strong"] = out / "strong.md"
        files["strong"].write_text("# Strong evaluation: APGD-CE → APGD-T cascade per ε\n\n"
                                   + "\n".join(summaries), encoding="utf-8")
    write_table(ev, files["table"], files["csv"])
    ev.to_json(str(files["json"]))
    accuracy_curve(ev, path=files["plot"], title=title or f"{card.architecture} on {ds.name}")
    files["html"] = write_report(out, evaluation=ev, figures=[files["plot"].name],
                                 title=title or f"Robustness of {card.architecture} on {ds.name}")
    if not quiet:
        print(ev.table())
    return EvaluateOutput(evaluation=ev, files=files)


def _add_strong_cascade(ev: Evaluation, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        eps: Sequence[float], norm: str, out: Path, steps: int, batch_size: int,
                        seed: int, progress: bool, quiet: bool) -> tuple[Evaluation, list[str]]:
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
        _say(f"strong cascade at ε = {e:g} ({'resuming from' if resumed else 'record in'} {record})", quiet)
        cr = strong_evaluate(model, x, y, eps=e, norm=norm, steps=steps, batch_size=batch_size, seed=seed,
                             checkpoint_path=record, progress=progress)
        cascade_rows = cr.rows()
        names = ["APGD-CE", "APGD-CE → APGD-T"]
        for row, name in zip(cascade_rows, names):
            rows.append(dc.replace(row, attack=name))
        per_point[f"{names[-1]}@{e:g}"] = cr.broken.to(x.device)
        summaries.append(f"## ε = {e:g}\n\n" + cr.summary())
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


#: default radii at which ``measure_job`` tabulates robust accuracy, per norm
MEASURE_EPS = {"l2": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0), "linf": (0.01, 0.05, 0.1, 0.15, 0.2, 0.3),
               "l1": (1.0, 2.0, 5.0, 10.0, 15.0, 20.0)}


@dataclass
class MeasureOutput:
    minimal: Any  # advlab.evaluation.MinimalNorms
    evaluation: Evaluation
    files: dict[str, Path] = field(default_factory=dict)


def measure_job(*, checkpoint: str | Path, out: str | Path, attacks: Sequence[str] = ("deepfool", "fmn"),
                norm: str = "l2", eps: Sequence[float] | None = None, steps: int | None = None,
                n: int = 1000, batch_size: int = 250, data: str | None = None, data_dir: str | None = None,
                download: bool = False, progress: bool = True, quiet: bool = False) -> MeasureOutput:
    """Minimal perturbations of a saved model: per-point distances, their distribution, and the
    whole robust-accuracy-vs-ε curve read off them in one pass.

    Runs each minimal-norm attack (``deepfool``, ``fmn``, ``cw``) on the correctly classified
    points and keeps, per point, the smallest distance any of them found. Writes ``minimal.json``
    (every point's distances, summary, curve, provenance), ``minimal.md`` (median and quartiles
    per attack, robust accuracy at ``eps``), ``minimal_norms.png`` (curve and histogram) and
    ``index.html``.
    """
    from advlab.attacks.registry import MINIMAL
    from advlab.evaluation import measure_minimal_norms
    from advlab.evaluation.robustness import EvalRow
    from advlab.reports import minimal_norms_figure, write_report
    from advlab.threat import canonical_norm

    norm = canonical_norm(norm)
    if not attacks:
        raise ValueError("measure needs at least one minimal-norm attack")
    configs: dict[str, Any] = {}
    for name in attacks:
        key = attack_key(name)
        if key not in MINIMAL:
            raise ValueError(f"{name} is not a minimal-perturbation attack; use one of "
                             f"{', '.join(sorted(MINIMAL))} (fixed-ε attacks belong in `advlab evaluate`)")
        options = {"steps": steps} if key != "cw" and key != "cwl2" else {}
        if key not in ("cw", "cwl2"):
            options["norm"] = norm
        elif norm != "l2":
            raise ValueError(f"C&W here is the L2 attack; it cannot measure {norm} distances")
        configs[DISPLAY_NAMES.get(key, key)] = make_attack(key, **options)
    eps = tuple(float(e) for e in (eps if eps is not None else MEASURE_EPS[norm]))
    if any(b <= a for a, b in zip(eps, eps[1:])) or any(e < 0 for e in eps):
        raise ValueError(f"eps must be non-negative and strictly increasing, got {list(eps)}")
    model = load(checkpoint)
    card = load_card(checkpoint)
    ds = _checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=n)
    _say(f"minimal {norm} perturbations of {card.architecture} on {len(ds)} {ds.name} test images: "
         f"{', '.join(configs)}", quiet)
    mn = measure_minimal_norms(model, ds.x, ds.y, attacks=configs, norm=norm, batch_size=batch_size,
                               progress=progress)
    mn.provenance.update({"checkpoint": str(checkpoint), "dataset": ds.name, "model": card.architecture})
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
    files["table"].write_text("\n".join(lines) + "\n", encoding="utf-8")
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


@dataclass
class DemoOutput:
    folder: Path
    dataset: str
    clean_accuracy: float
    evaluation: Evaluation
    files: dict[str, Path]
    seconds: float


def demo_job(*, out: str | Path = "report", epochs: int | None = None, n: int = 1000, seed: int = 0,
             data: str | None = None, data_dir: str | None = None, progress: bool = True,
             quiet: bool = False, train_limit: int | None = None) -> DemoOutput:
    """The main job: train a small CNN on Fashion-MNIST (digits if it is not installed), attack it
    with FGSM, I-FGSM, PGD and MI-FGSM over :data:`DEMO_EPS`, and write a report folder.

    ``data`` forces a dataset (``None``: Fashion-MNIST when installed, else digits).
    """
    from advlab.reports import gallery_from_result

    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    try:
        if data is None:
            load_dataset("fashion-mnist", split="test", root=data_dir)
            data = "fashion-mnist"
        default_epochs = 2 if data in ("fashion-mnist", "mnist") else 20
    except DatasetNotFoundError as err:
        first = str(err).splitlines()[0]
        msg = (f"Fashion-MNIST is not installed ({first}); falling back to scikit-learn's 8x8 digits. "
               "Install it with `sudo apt-get install dataset-fashion-mnist` for the full demo.")
        _say("note: " + msg, quiet)
        notes.append(msg)
        data, default_epochs = "digits", 20
    epochs = epochs or default_epochs
    trained = train_job(data=data, model="small-cnn", out=out / "model", epochs=epochs, seed=seed,
                        data_dir=data_dir, limit=train_limit, progress=progress, overwrite=True,
                        quiet=quiet)
    model = load(trained.checkpoint)
    ds = load_data(data, split="test", data_dir=data_dir, limit=n)
    configs = evaluation_attacks(DEFAULT_ATTACKS, steps=None)
    configs["PGD"] = make_attack("pgd", eps=0.0, steps=20, early_stop=True)
    _say(f"attacking {len(ds)} test images with {', '.join(configs)} at "
         f"ε = {', '.join(f'{e:g}' for e in DEMO_EPS)} (evaluation mode: a point stops being "
         "attacked once it is misclassified)", quiet)
    ev = evaluate(model, ds.x, ds.y, attacks=configs, eps=DEMO_EPS, seed=seed, progress=progress)
    ev.provenance.update({"dataset": ds.name, "model": "small-cnn", "checkpoint": str(trained.checkpoint),
                          "train_epochs": epochs})

    from advlab.reports import accuracy_curve, write_report, write_table

    files = {"table": out / "robust_accuracy.md", "csv": out / "robust_accuracy.csv",
             "json": out / "results.json", "plot": out / "accuracy_vs_eps.png",
             "gallery": out / "gallery_pgd_eps0.1.png", "gallery_fgsm": out / "gallery_fgsm_eps0.1.png"}
    write_table(ev, files["table"], files["csv"])
    ev.to_json(str(files["json"]))
    accuracy_curve(ev, path=files["plot"], title=f"small-cnn on {ds.name}")
    with torch.no_grad():
        clean_logits = model(ds.x[:200])
    clean_conf, clean_pred = torch.softmax(clean_logits, 1).max(1)
    for key, attack in (("gallery", make_attack("pgd", eps=0.1, steps=20)),
                        ("gallery_fgsm", make_attack("fgsm", eps=0.1))):
        res = attack(model, ds.x[:200], ds.y[:200], generator=torch.Generator().manual_seed(seed))
        gallery_from_result(ds.x[:200], res, class_names=list(ds.class_names), clean_pred=clean_pred,
                            clean_conf=clean_conf, y=ds.y[:200], n=6, path=files[key])
    seconds = time.perf_counter() - t_start
    notes.append(f"Model: small-cnn trained for {epochs} epoch(s) (seed {seed}); clean test accuracy "
                 f"{100 * trained.card.clean_accuracy:.2f}% on the full test split.")
    notes.append(f"Iterative attacks ran in evaluation mode (early_stop=True); the whole demo took "
                 f"{seconds:.0f} s.")
    files["html"] = write_report(out, evaluation=ev,
                                 figures=[files["plot"].name, files["gallery"].name, files["gallery_fgsm"].name],
                                 title=f"advlab demo: small-cnn on {ds.name}", notes=notes)
    if not quiet:
        print(ev.table())
        print(f"report written to {files['html']} ({seconds:.0f} s)")
    return DemoOutput(folder=out, dataset=ds.name, clean_accuracy=trained.card.clean_accuracy,
                      evaluation=ev, files=files, seconds=seconds)


def audit_job(*, checkpoint: str | Path, eps: float, out: str | Path, norm: str = "linf",
              n: int = 500, steps: int = 20, seed: int = 0, data: str | None = None,
              data_dir: str | None = None, download: bool = False, quiet: bool = False) -> Any:
    """Run the gradient-masking audit on a checkpoint; write ``audit.json`` and ``audit.txt``."""
    from advlab.evaluation import audit

    model = load(checkpoint)
    card = load_card(checkpoint)
    ds = _checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=n)
    report = audit(model, ds.x, ds.y, norm=norm, eps=eps, steps=steps, seed=seed, max_points=n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_out = report.to_dict()
    data_out["provenance"].update({"checkpoint": str(checkpoint), "dataset": ds.name})
    (out / "audit.json").write_text(json.dumps(data_out, indent=2, default=float) + "\n", encoding="utf-8")
    (out / "audit.txt").write_text(report.summary() + "\n", encoding="utf-8")
    _say(report.summary(), quiet)
    return report


def geometry_job(*, checkpoint: str | Path, out: str | Path, n_maps: int = 6, extent: float = 0.3,
                 resolution: int = 41, gaas_eps: Sequence[float] = (1.0, 2.0, 4.0),
                 max_directions: int = 64, n_gaas: int = 200, eps: float = 0.1, steps: int = 10,
                 n: int = 500, clip: bool = False, seed: int = 0, data: str | None = None,
                 data_dir: str | None = None, download: bool = False, progress: bool = True,
                 quiet: bool = False) -> dict[str, Any]:
    """Decision-boundary maps, adversarial-subspace dimensions (GAAS) and the successive-update
    cosine of I-FGSM vs MI-FGSM; writes ``decision_maps.png``, ``gaas.png``, ``cosine.png`` and
    ``geometry.json``."""
    from advlab.evaluation.geometry import (adversarial_subspace_dim, decision_map,
                                            default_cosine_attacks, perturbation_cosine_similarity)
    from advlab.reports.geometry import cosine_figure, decision_maps_figure, subspace_dim_figure

    model = load(checkpoint)
    card = load_card(checkpoint)
    ds = _checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=max(n, n_gaas, n_maps))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bounds = (0.0, 1.0) if clip else None
    maps = [decision_map(model, ds.x[i:i + 1], ds.y[i:i + 1], extent=extent, resolution=resolution,
                         bounds=bounds, generator=torch.Generator().manual_seed(seed + i))
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
    (out / "geometry.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    _say(f"geometry of {card.architecture} on {ds.name}: figures and geometry.json in {out}", quiet)
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
               download: bool = False, progress: bool = True, quiet: bool = False) -> BoundsOutput:
    """Train (or load) a VAE on the classifiers' training data and measure the Fawzi et al. table.

    Meant for ``advlab bounds``: ``checkpoints`` maps a column name to a saved classifier (an
    ``advlab.models.save`` directory); ``data`` defaults to the first card's dataset. ``vae`` is a
    directory: loaded when it holds a VAE trained with the same settings, else trained there
    (default ``out/vae``). Writes ``out/bounds.json`` (per-point values, summary, provenance),
    ``out/bounds.md`` (absolute and relative tables) and ``out/bounds_cdf.png``.
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
            _say(f"loaded the VAE from {vae_dir}", quiet)
    if generator_model is None:
        _say(f"training a VAE (latent {latent_dim}, {vae_epochs} epochs) on {len(train)} {train.name} "
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
    table = bounds_table(classifiers, generator_model.decoder, latent_dim=latent_dim, n=n, seed=seed,
                         lipschitz_samples=lipschitz_samples, test_data=(test.x, test.y),
                         input_shape=tuple(train.input_shape), progress=progress,
                         extra_provenance={"dataset": train.name, "vae": vae_info,
                                           "vae_test_reconstruction_l2_median": test_rec,
                                           "checkpoints": {k: str(v) for k, v in checkpoints.items()},
                                           "cards": {k: c.to_dict() for k, c in cards.items()}})
    seconds = time.perf_counter() - t0
    table.provenance["measure_seconds"] = round(seconds, 1)
    files = {"json": out / "bounds.json", "markdown": out / "bounds.md", "figure": out / "bounds_cdf.png"}
    table.to_json(str(files["json"]))
    files["markdown"].write_text(table.to_markdown() + "\n" + table.to_markdown(relative=True),
                                 encoding="utf-8")
    bound_cdf_figure(table, path=files["figure"])
    _say(table.to_markdown(), quiet)
    _say(f"measured in {seconds:.0f} s; files in {out}", quiet)
    return BoundsOutput(table=table, files=files, vae_dir=vae_dir)
