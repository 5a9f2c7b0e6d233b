"""``advlab defend``: train a model with a defense recipe and compare it with the undefended model.

The comparison is the one a reviewer asks for: clean accuracy, then robust accuracy over ε under
white-box PGD (cross-entropy and the C&W margin, evaluation mode, worst case per point), under
transfer from a held-out surrogate model (one label query per point), and under a black-box
score-based attack (Square, through a query-only oracle with a budget). Both models meet the same
attacks on the same test points; every row states its denominators.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from advlab._io import atomic_write_text
from advlab.runs._common import budget_alias_arg, say
from advlab.evaluation import Evaluation, clean_predictions, evaluate, provenance
from advlab.evaluation.robustness import EvalRow
from advlab.models import build_seeded, load, load_card

log = logging.getLogger(__name__)

RECIPES = ("standard", "fgsm-mix", "pgd", "fast", "trades", "ensemble", "distill", "vat", "ibp", "gaussian", "ovr")


@dataclass
class DefendOutput:
    model_dir: Path
    baseline_dir: Path
    comparison: dict[str, Any]
    evaluation: Evaluation
    files: dict[str, Path] = field(default_factory=dict)


def build_recipe(name: str, *, eps: float, steps: int | None = None, alpha: float = 0.5,
                 beta: float = 6.0, vat_eps: float = 2.0, semi_supervised: bool = False,
                 static_models: Sequence[nn.Module] = (), sigma: float = 0.25) -> Any:
    """The recipe object for a CLI name (``distill`` is a two-stage procedure, not a recipe).

    ``ibp``: interval-bound training at L∞ ``eps`` (Gowal et al. 2018), certified by
    ``advlab certify --method ibp``; ``gaussian``: training under N(0, ``sigma``²) noise, the base
    classifier of randomized smoothing, certified by ``advlab certify --method smoothing``; ``ovr``:
    an RBF network's one-vs-rest likelihood (:class:`~advlab.defenses.OneVsRest`)."""
    from advlab.defenses import Standard
    from advlab.defenses.adversarial import TRADES, EnsembleAdversarial, FastFGSM, FGSMMix, PGDTraining
    from advlab.defenses.vat import VAT

    if name == "standard":
        return Standard()
    if name == "fgsm-mix":
        return FGSMMix(eps=eps, alpha=alpha)
    if name == "pgd":
        return PGDTraining(eps=eps, steps=steps or 7)
    if name == "fast":
        return FastFGSM(eps=eps)
    if name == "trades":
        return TRADES(eps=eps, beta=beta, steps=steps or 10)
    if name == "ensemble":
        if not static_models:
            raise ValueError("the ensemble recipe needs static pre-trained models (--static DIR, repeatable)")
        return EnsembleAdversarial(eps=eps, static_models=tuple(static_models), alpha=alpha)
    if name == "vat":
        return VAT(eps=vat_eps, semi_supervised=semi_supervised)
    if name == "ibp":
        from advlab.defenses import IBPTraining

        return IBPTraining(eps=eps, ramp=0.5)  # ε and κ ramped over the first half (Gowal et al.)
    if name == "gaussian":
        from advlab.defenses import GaussianNoise

        return GaussianNoise(sigma=sigma)
    if name == "ovr":
        from advlab.defenses import OneVsRest

        return OneVsRest()
    raise ValueError(f"unknown recipe {name!r}: use one of {', '.join(RECIPES)}")


def defend_job(*, recipe: str, out: str | Path, data: str = "fashion-mnist", model: str = "small-cnn",
               epochs: int = 2, eps: float = 0.1, seed: int = 0, limit: int | None = None, n: int = 500,
               batch_size: int = 128, lr: float | None = None, lr_schedule: str = "constant",
               steps: int | None = None, alpha: float = 0.5,
               beta: float = 6.0, temperature: float = 100.0, vat_eps: float = 2.0, labels: int | None = None,
               static: Sequence[str | Path] = (), baseline: str | Path | None = None,
               surrogate: str | Path | None = None, eval_eps: Sequence[float] | None = None,
               budget: int = 1000, data_dir: str | None = None, download: bool = False,
               progress: bool = True, quiet: bool = False, queries: int | None = None,
               sigma: float = 0.25) -> DefendOutput:
    """Train ``model`` on ``data`` with ``recipe`` and compare it with the undefended model.

    Writes ``OUT/model`` (the defended zoo checkpoint; its card records the recipe), ``OUT/baseline``
    (the undefended model, trained with the same architecture, data, epochs and seed unless
    ``baseline`` names a checkpoint), ``OUT/surrogate`` (the transfer source, unless given),
    ``OUT/train-state`` (per-epoch training checkpoints: running the command again resumes),
    ``comparison.md``/``.json``, ``accuracy_vs_eps.png`` and ``index.html``.

    ``labels`` (VAT only) keeps that many labelled training points and passes the rest of the
    training set as unlabelled data (semi-supervised VAT); the baseline then sees only the labelled
    points, so the comparison is the semi-supervised one. ``lr`` defaults to 1e-3 (Adam), and to
    1e-2 for ``distill``, whose networks must grow their logits about T-fold at T = 100;
    ``lr_schedule`` (``constant``, ``linear``, ``cosine``, ``cyclic``) applies to every model trained.
    """
    from advlab.defenses.training import train
    from advlab.runs._common import load_data

    budget = budget_alias_arg(budget, queries, "defend_job")  # type: ignore[assignment]
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    if labels is not None and recipe != "vat":
        raise ValueError("--labels (semi-supervised training) is for the vat recipe")
    if static and recipe != "ensemble":
        raise ValueError("--static models are for the ensemble recipe")
    if recipe == "ovr" and model != "rbf":
        raise ValueError(f"the ovr recipe trains RBF units (one-vs-rest likelihood of exp(logit) <= 1): use "
                         f"--model rbf, not {model!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    eval_eps = sorted(float(e) for e in (eval_eps or (eps / 2, eps, 2 * eps)))
    lr = lr if lr is not None else (1e-2 if recipe == "distill" else 1e-3)
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_ds = load_data(data, split="train", data_dir=data_dir, download=download, limit=limit)
    test = load_data(data, split="test", data_dir=data_dir, download=download)
    if n > len(test):
        say(f"the {train_ds.name} test split has {len(test)} points: the comparison uses all of them "
            f"(--n {n} asked for more) and training reports no validation accuracy", quiet)
        n = len(test)
    d = _split(train_ds, test, labels=labels, n=n)
    trainer = _Trainer(d, arch=model, card={"dataset": train_ds.name, "seed": seed,
                                            "class_names": list(train_ds.class_names)},
                       common=dict(epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                                   seed=seed, x_val=d.x_val, y_val=d.y_val, progress=progress))

    # -- the undefended model, the transfer surrogate, the static models -------------------------
    baseline_dir = Path(baseline) if baseline is not None else out / "baseline"
    if baseline is None:
        say(f"training the undefended baseline ({model}, {epochs} epochs, {len(d.x)} labelled images)", quiet)
    base_model = trainer.standard(baseline_dir, seed) if baseline is None else load(baseline_dir)
    surrogate_dir = Path(surrogate) if surrogate is not None else out / "surrogate"
    if surrogate is None:
        say("training a held-out surrogate (same architecture, another seed) as the transfer source", quiet)
    surrogate_model = trainer.standard(surrogate_dir, seed + 1000) if surrogate is None else load(surrogate_dir)
    static_models: list[nn.Module] = [load(p) for p in static]
    if recipe == "ensemble" and not static_models:
        for i, arch in enumerate(("mlp", "lenet5")):
            say(f"training static model {arch} for ensemble adversarial training", quiet)
            static_models.append(trainer.standard(out / f"static-{arch}", seed + 2000 + i, arch))

    # -- the defended model ------------------------------------------------------------------------
    model_dir = out / "model"
    t0 = time.perf_counter()
    if recipe == "distill":
        from advlab.defenses.distillation import distill

        say(f"training with recipe distill (T = {temperature:g})", quiet)
        distill(lambda s: trainer.fresh(s), d.x, d.y, temperature=temperature, checkpoint_dir=out / "train-state",
                save_to=model_dir, card=trainer.card, **trainer.common)
        recipe_card: dict[str, Any] = {"recipe": "distill", "temperature": temperature}
    else:
        if recipe == "vat":
            unl = f", {len(d.x_unlabelled)} unlabelled images" if d.x_unlabelled is not None else ""
            say(f"training with recipe vat (L2 ε = {vat_eps:g} for the virtual perturbation{unl})", quiet)
        elif recipe == "gaussian":
            say(f"training with recipe gaussian (noise σ = {sigma:g})", quiet)
        else:
            say(f"training with recipe {recipe} (ε = {eps:g})", quiet)
        rec = build_recipe(recipe, eps=eps, steps=steps, alpha=alpha, beta=beta, vat_eps=vat_eps,
                           semi_supervised=d.x_unlabelled is not None, static_models=static_models,
                           sigma=sigma)
        train(trainer.fresh(seed), rec, d.x, d.y, **trainer.common, x_unlabelled=d.x_unlabelled,
              checkpoint_dir=out / "train-state", save_to=model_dir, card=trainer.card)
        recipe_card = rec.card()
    train_seconds = time.perf_counter() - t0

    # -- the comparison ------------------------------------------------------------------------------
    summary: dict[str, Any] = {"recipe": recipe_card, "eps": eps, "eval_eps": eval_eps, "n": n,
                               "train_seconds": round(train_seconds, 1), "models": {}}
    say(f"comparing on {n} test images: white-box PGD (CE, C&W margin) at ε = {eval_eps}, transfer "
        f"from the surrogate, Square with {budget} queries", quiet)
    rows: list[EvalRow] = []
    for name, mdl in {"undefended": base_model, "defended": load(model_dir)}.items():
        model_rows, summary["models"][name] = _compare(
            name, mdl, d.x_eval, d.y_eval, eps=eps, eval_eps=eval_eps, budget=budget, seed=seed,
            surrogate=(surrogate_model, surrogate_dir), progress=progress)
        rows += model_rows
    ev_all = Evaluation(rows=rows, provenance=provenance(seed=seed, recipe=recipe_card, dataset=train_ds.name,
                                                         model=model, epochs=epochs,
                                                         baseline=str(baseline_dir), surrogate=str(surrogate_dir)))
    files = _write(out, ev_all, summary, recipe=recipe, data=train_ds.name, arch=model, quiet=quiet)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(files["json"], json.dumps(summary, indent=2) + "\n")
    return DefendOutput(model_dir=model_dir, baseline_dir=baseline_dir, comparison=summary, evaluation=ev_all,
                        files=files)


@dataclass
class _Data:
    """The splits of one defend run: labelled (and unlabelled) training data, validation points held
    apart from the evaluation points, and the evaluation points."""

    x: Any
    y: Any
    x_unlabelled: Any
    x_val: Any
    y_val: Any
    x_eval: Any
    y_eval: Any
    in_shape: tuple[int, ...]
    num_classes: int


def _split(train_ds: Any, test: Any, *, labels: int | None, n: int) -> _Data:
    x, y, x_unlabelled = train_ds.x, train_ds.y, None
    if labels is not None:
        if not 10 <= labels < len(train_ds):
            raise ValueError(f"--labels must be between 10 and the training set size - 1 ({len(train_ds) - 1}), "
                             f"got {labels}")
        x, y, x_unlabelled = train_ds.x[:labels], train_ds.y[:labels], train_ds.x[labels:]
    # validation points are held apart from the evaluation points; a small test split (digits:
    # 450 points) may leave none, and then training reports no per-epoch validation accuracy
    x_val, y_val = test.x[n:n + 1000], test.y[n:n + 1000]
    if x_val.shape[0] == 0:
        x_val = y_val = None
    return _Data(x=x, y=y, x_unlabelled=x_unlabelled, x_val=x_val, y_val=y_val,
                 x_eval=test.x[:n], y_eval=test.y[:n], in_shape=tuple(train_ds.input_shape),
                 num_classes=train_ds.num_classes)


@dataclass
class _Trainer:
    """Builds and trains the run's models with one set of training settings."""

    data: _Data
    arch: str
    card: dict[str, Any]
    common: dict[str, Any]

    def fresh(self, seed: int, arch: str | None = None) -> nn.Module:
        return build_seeded(arch or self.arch, in_shape=self.data.in_shape, num_classes=self.data.num_classes,
                            seed=seed)

    def standard(self, directory: Path, seed: int, arch: str | None = None) -> nn.Module:
        """A standard model in ``directory``: trained there, or reused from an earlier run of the
        command if it was trained with the same settings."""
        from advlab.defenses import Standard
        from advlab.defenses.training import train

        x = self.data.x
        if (directory / "card.json").exists():
            card = load_card(directory)
            if card.architecture != (arch or self.arch):
                raise ValueError(f"{directory} holds a {card.architecture} model, not {arch or self.arch}; "
                                 "use another --out")
            training = card.training or {}
            want = {"epochs": self.common["epochs"], "seed": seed, "num_samples": int(x.shape[0]),
                    "batch_size": self.common["batch_size"], "lr_schedule": self.common["lr_schedule"]}
            got = {key: training.get(key, "constant" if key == "lr_schedule" else None) for key in want}
            if got != want:
                raise ValueError(f"{directory} holds a model trained with {got}, not {want}; use another --out")
            return load(directory)
        train(self.fresh(seed, arch), Standard(), x, self.data.y, **{**self.common, "seed": seed},
              checkpoint_dir=directory.with_name(directory.name + "-state"), save_to=directory,
              card={**self.card, "seed": seed})
        return load(directory)


def _compare(name: str, mdl: nn.Module, x_eval: Any, y_eval: Any, *, eps: float, eval_eps: list[float],
             budget: int, seed: int, surrogate: tuple[nn.Module, Path], progress: bool
             ) -> tuple[list[EvalRow], dict[str, Any]]:
    """One model's rows and summary: white-box PGD (CE, C&W) at every ε, transfer from the
    surrogate, Square through a scores oracle; all on its correctly classified points."""
    from advlab.attacks import MIFGSM, PGD, SquareAttack, TransferAttack
    from advlab.oracle import Oracle

    n = int(y_eval.shape[0])
    white_box = {"PGD-CE": PGD(eps=eps, steps=20, early_stop=True),
                 "PGD-CW": PGD(eps=eps, steps=20, loss="cw", early_stop=True)}
    ev = evaluate(mdl, x_eval, y_eval, attacks=white_box, eps=eval_eps, seed=seed, progress=progress)
    rows = [dataclasses.replace(r, attack=f"{name} · {r.attack}") for r in ev.rows]
    correct = clean_predictions(mdl, x_eval) == y_eval
    n_correct = int(correct.sum())
    idx = correct.nonzero().squeeze(1)
    white: dict[str, dict[str, float]] = {}
    for r in ev.rows:
        white.setdefault(r.attack, {})[f"{r.eps:g}"] = r.robust_accuracy
    entry: dict[str, Any] = {"clean_accuracy": n_correct / n, "n_correct": n_correct, "white_box": white}
    source, source_dir = surrogate
    for key in ("transfer", "square"):
        rates = {}
        for e in eval_eps:
            g = torch.Generator().manual_seed(seed)
            if key == "transfer":
                attack: Any = TransferAttack(attack=MIFGSM(eps=e, steps=10), source=source)
                broken = attack(Oracle(mdl, output="label"), x_eval[idx], y_eval[idx], generator=g).success
                config = f"TransferAttack(attack=MIFGSM(eps={e:g}, steps=10), source={source_dir})"
                label = "transfer MI-FGSM"
            else:
                result = SquareAttack(eps=e, budget=budget)(Oracle(mdl, output="scores", budget=budget),
                                                            x_eval[idx], y_eval[idx], generator=g)
                broken, config, label = result.success, result.attack, f"Square ({budget} queries)"
            n_broken = int(broken.sum())
            rows.append(EvalRow(
                attack=f"{name} · {label}", eps=e, norm="linf", n=n, n_correct=n_correct,
                n_robust=n_correct - n_broken, clean_accuracy=n_correct / n,
                robust_accuracy=(n_correct - n_broken) / n,
                success_rate=n_broken / n_correct if n_correct else float("nan"),
                median_norm=float("nan"), mean_norm=float("nan"), grads=0, seconds=0.0,
                config=config))
            rates[f"{e:g}"] = (n_correct - n_broken) / n
        entry[key] = rates
    return rows, entry


def _write(out: Path, ev: Evaluation, summary: dict[str, Any], *, recipe: str, data: str, arch: str,
           quiet: bool) -> dict[str, Path]:
    from advlab.reports import accuracy_curve, write_report

    files = {"table": out / "comparison.md", "json": out / "comparison.json", "plot": out / "accuracy_vs_eps.png"}
    eps_list = summary["eval_eps"]
    head = "| model | clean | " + " | ".join(f"{a} ε={e:g}" for a in ("white-box worst", "transfer", "Square")
                                            for e in eps_list) + " |"
    lines = [f"# `{recipe}` against the undefended {arch} on {data}", "",
             f"Robust accuracy (%) over n = {summary['n']} test points (attacks run on each model's correctly "
             "classified points; the white-box column is the worst case of PGD-20 with cross-entropy and with "
             "the C&W margin, evaluation mode). Transfer: MI-FGSM (10 steps) crafted on a held-out surrogate, "
             "one label query per point. Square: L∞, score-based, through a query-only oracle.", "",
             head, "|---|---:|" + "---:|" * (3 * len(eps_list))]
    for name, m in summary["models"].items():
        worst = m["white_box"].get("worst-case", {})
        cells = [f"{100 * worst.get(f'{e:g}', float('nan')):.1f}" for e in eps_list]
        cells += [f"{100 * m['transfer'][f'{e:g}']:.1f}" for e in eps_list]
        cells += [f"{100 * m['square'][f'{e:g}']:.1f}" for e in eps_list]
        lines.append(f"| {name} | {100 * m['clean_accuracy']:.1f} | " + " | ".join(cells) + " |")
    lines += ["", f"Recipe: `{json.dumps(summary['recipe'])}`; training took {summary['train_seconds']:.0f} s.",
              "", "All rows:", "", ev.table()]
    atomic_write_text(files["table"], "\n".join(lines) + "\n")
    accuracy_curve(ev, path=files["plot"], title=f"{recipe} vs undefended: robust accuracy")
    files["html"] = write_report(out, evaluation=ev, figures=[files["plot"].name],
                                 title=f"advlab defend: {recipe} on {data}",
                                 notes=[f"{recipe} against the undefended {arch} on {data}. {lines[2]}"])
    if not quiet:
        print("\n".join(lines[:4 + len(summary["models"]) + 2]))
    return files
