"""``advlab demo`` (``make demo``): train a small CNN, attack it over ε, write a report."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from advlab.attacks import make_attack
from advlab.data import DatasetNotFoundError, load_dataset
from advlab.evaluation import Evaluation, evaluate
from advlab.models import load

from advlab.runs._common import DEMO_EPS, load_data, say
from advlab.runs.evaluate import DEFAULT_ATTACKS, evaluation_attacks
from advlab.runs.train import train_job

log = logging.getLogger(__name__)


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
             quiet: bool = False, train_limit: int | None = None, quick: bool = False) -> DemoOutput:
    """The main job: train a small CNN on Fashion-MNIST (digits if it is not installed), attack it
    with FGSM, I-FGSM, PGD and MI-FGSM over :data:`DEMO_EPS`, and write a report folder.

    ``data`` forces a dataset (``None``: Fashion-MNIST when installed, else digits). ``quick``
    (a smaller run: the caller passes ``train_limit`` and ``n``) trains 1 epoch on Fashion-MNIST
    or MNIST, 5 on digits, unless ``epochs`` is given.
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
        default_epochs = (1 if quick else 2) if data in ("fashion-mnist", "mnist") else (5 if quick else 20)
    except DatasetNotFoundError as err:
        first = str(err).splitlines()[0]
        msg = (f"Fashion-MNIST is not installed ({first}); falling back to scikit-learn's 8x8 digits. "
               "Install it with `sudo apt-get install dataset-fashion-mnist` for the full demo.")
        say("note: " + msg, quiet)
        notes.append(msg)
        data, default_epochs = "digits", 5 if quick else 20
    epochs = epochs or default_epochs
    trained = train_job(data=data, model="small-cnn", out=out / "model", epochs=epochs, seed=seed,
                        data_dir=data_dir, limit=train_limit, progress=progress, overwrite=True,
                        quiet=quiet)
    model = load(trained.checkpoint)
    ds = load_data(data, split="test", data_dir=data_dir, limit=n)
    configs = evaluation_attacks(DEFAULT_ATTACKS, steps=None)
    say(f"attacking {len(ds)} test images with {', '.join(configs)} at "
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
