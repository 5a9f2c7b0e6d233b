"""Running one cell of a spec: a pure function of its configuration and the store's file folder.

:func:`run_cell` is what every executor calls (in the driver for ``local``, in a Ray task for
``ray``): it reads the models and data its configuration names, writes its own files under
``files/<cell hash>/`` (a trained model as a checkpoint; safetensors only), and returns a
:class:`~advlab.runs.store.CellResult` of metric rows and per-point outcomes for the driver to
store. It never touches the store itself, so the driver is the only writer.

Outcome conventions: ``point`` is the index of the point in its dataset's test split;
``success`` means "classified correctly clean, and the attack's output is misclassified inside
the threat model"; ``eps = -1`` marks a minimal-perturbation attack's outcome, whose ``norm`` is
the distance it found (``success`` false and ``norm`` NULL where it found none).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from advlab.runs.store import CellResult

log = logging.getLogger(__name__)

MINIMAL_EPS = -1.0   # the outcomes' ε of a minimal-perturbation attack


def run_cell(kind: str, config: Mapping[str, Any], cell_hash: str, *, files: str | Path,
             data_dir: str | None = None, device: str = "cpu", progress: bool = False) -> CellResult:
    """Run one cell and return what the driver stores; ``files`` is the store's file folder."""
    files = Path(files)
    t0 = time.perf_counter()
    torch.manual_seed(int(config.get("seed", 0)))
    runner = {"train": _train, "robust": _robust, "strong": _strong, "minimal": _minimal,
              "transfer": _transfer, "audit": _audit, "certify": _certify, "techniques": _techniques,
              "study": _study}[kind]
    metrics, outcomes, summary = runner(config, cell_hash=cell_hash, files=files, data_dir=data_dir,
                                        device=device, progress=progress)
    return CellResult(metrics=metrics, outcomes=outcomes, seconds=time.perf_counter() - t0, summary=summary)


# --- models and data ----------------------------------------------------------------------------

def trained_dir(files: Path, cell: str) -> Path:
    """Where a train cell's checkpoint lives."""
    return files / cell / "model"


def open_ref(ref: Mapping[str, Any], *, files: Path, device: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The model a cell configuration refers to, in eval mode on ``device``."""
    from advlab.models import load
    from advlab.models.user import UserModel, resolve_device

    dev = resolve_device(device)
    if ref["source"] == "trained":
        return load(trained_dir(files, ref["cell"]), device=dev)
    if ref["source"] == "checkpoint":
        return load(ref["path"], device=dev)
    if ref["source"] == "sklearn":
        from advlab.models.sklearn import SklearnModel

        return SklearnModel(path=ref["path"], trusted=tuple(ref.get("trust", ()))).load(
            device=dev, input_shape=input_shape)[0]
    spec = UserModel(factory=ref["factory"], weights=ref.get("weights"),
                     input_shape=tuple(ref["input_shape"]) if "input_shape" in ref else None,
                     num_classes=ref.get("classes"), mean=ref.get("mean"), std=ref.get("std"),
                     bounds=tuple(ref.get("bounds", (0.0, 1.0))))
    return spec.load(device=dev, input_shape=input_shape)[0]


def ref_bounds(ref: Mapping[str, Any]) -> tuple[float, float]:
    lo, hi = ref.get("bounds", (0.0, 1.0)) if ref.get("source") == "factory" else (0.0, 1.0)
    return float(lo), float(hi)


def _test_data(config: Mapping[str, Any], data_dir: str | None, device: str) -> Any:
    from advlab.models.user import resolve_device
    from advlab.runs._common import load_data

    d = config["data"]
    ds = load_data(d["name"], split="test", data_dir=data_dir, limit=d.get("n"))
    dev = resolve_device(device)
    return ds, ds.x.to(dev), ds.y.to(dev)


# --- the kinds ------------------------------------------------------------------------------------

def _train(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
           progress: bool) -> tuple[list, list, dict]:
    from advlab.defenses import train
    from advlab.models import accuracy, build_seeded, save
    from advlab.models.user import resolve_device
    from advlab.runs._common import load_data
    from advlab.runs.defend import build_recipe

    out = trained_dir(files, cell_hash)
    data = config["data"]["name"]
    train_set = load_data(data, split="train", data_dir=data_dir, limit=config.get("limit"))
    test = load_data(data, split="test", data_dir=data_dir)
    dev = resolve_device(device)
    r = dict(config["recipe"])
    name = r.pop("name")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in config.get("options", {}).items()}
    if name == "distill":  # two stages, teacher then student, both at temperature T
        from advlab.defenses import distill

        result = distill(lambda s: build_seeded(config["architecture"], in_shape=tuple(train_set.input_shape),
                                                num_classes=train_set.num_classes, seed=s, **options).to(dev),
                         train_set.x.to(dev), train_set.y.to(dev), temperature=r["temperature"],
                         epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
                         lr_schedule=config["lr_schedule"], seed=config["seed"], progress=progress,
                         checkpoint_dir=files / cell_hash / "state")
        model, history = result.student, result.student_history
    else:
        if name == "batch-mix":
            from advlab.defenses import BatchMix

            recipe: Any = BatchMix(eps=r["eps"], k=int(r["k"]), lam=float(r["lam"]))
        else:
            recipe = build_recipe(name, eps=r.get("eps", 0.1), steps=r.get("steps"), alpha=r.get("alpha", 0.5),
                                  beta=r.get("beta", 6.0), vat_eps=r.get("vat_eps", 2.0), sigma=r.get("sigma", 0.25))
        model = build_seeded(config["architecture"], in_shape=tuple(train_set.input_shape),
                             num_classes=train_set.num_classes, seed=config["seed"], **options).to(dev)
        history = train(model, recipe, train_set.x.to(dev), train_set.y.to(dev), epochs=config["epochs"],
                        batch_size=config["batch_size"], lr=config["lr"], lr_schedule=config["lr_schedule"],
                        seed=config["seed"], progress=progress, checkpoint_dir=files / cell_hash / "state")
    model.eval()
    acc = accuracy(model, test.x.to(dev), test.y.to(dev))
    card = {"dataset": train_set.name, "class_names": tuple(train_set.class_names), "clean_accuracy": acc,
            "seed": config["seed"], "training": {"recipe": config["recipe"], "epochs": config["epochs"],
                                                 "cell": cell_hash}}
    # overwrite: a cell is a pure function of its config, so another process that finished the
    # same cell first (two runs on one store) wrote the same model; the pair is replaced atomically.
    # Under torchrun the trainer ran data-parallel on every rank (the same weights on each): rank 0
    # writes, the others wait for the file
    if not _sharded() or torch.distributed.get_rank() == 0:
        save(model.cpu(), out, card=card, overwrite=True)
    if _sharded():
        torch.distributed.barrier()
    metrics = [{"attack": "", "eps": None, "name": "clean_accuracy", "value": acc},
               {"attack": "", "eps": None, "name": "final_loss",
                "value": float(history.history[-1]["loss"]) if getattr(history, "history", None) else None}]
    return metrics, [], {"clean_accuracy": acc, "checkpoint": str(out)}


def _make(attack: Mapping[str, Any], *, eps: float | None, norm: str, bounds: tuple[float, float]) -> Any:
    """The attack configuration of a cell (iterative attacks in evaluation mode, PGD 20 steps
    unless the spec says otherwise, as in every command)."""
    from advlab.attacks.registry import entry, make_attack
    from advlab.runs._common import command_steps

    opts = {k: v for k, v in attack.items() if k != "name"}
    key = attack["name"]
    opts["steps"] = command_steps(key, opts.get("steps"))
    # (dataclasses.fields, not __dataclass_fields__: that also lists ClassVars such as L-BFGS's norm)
    fields = {f.name for f in dataclasses.fields(entry(key).cls)}
    if "early_stop" in fields and "early_stop" not in opts:
        opts["early_stop"] = True
    if "norm" in fields:
        opts["norm"] = norm
    if "bounds" in fields:
        opts["bounds"] = bounds
    if eps is not None:
        opts["eps"] = eps
    return make_attack(key, strict=True, **{k: v for k, v in opts.items() if v is not None})


def _rows_of(ev: Any, attack_label: str) -> list[dict[str, Any]]:
    out = []
    for r in ev.rows:
        for name in ("n", "n_correct", "n_robust", "clean_accuracy", "robust_accuracy", "success_rate",
                     "median_norm", "grads", "seconds"):
            out.append({"attack": attack_label if r.attack != "worst-case" else r.attack, "eps": r.eps,
                        "name": name, "value": getattr(r, name)})
    return out


def _outcomes_of(ev: Any, name: str, label: str, eps: list[float]) -> list[dict[str, Any]]:
    correct = ev.per_point["correct"].cpu()
    out = []
    for e in eps:
        key = f"{name}@{e:g}"
        broken = ev.per_point[key].cpu()
        norms = ev.point_norms[key].cpu()
        queries = ev.point_queries[key].cpu()
        for i in range(correct.numel()):
            q = int(queries[i])
            nv = float(norms[i])
            out.append({"attack": label, "eps": e, "point": i, "clean_correct": bool(correct[i]),
                        "success": bool(broken[i]), "norm": nv if math.isfinite(nv) else None,
                        "queries": q if q >= 0 else None})
    return out


def _robust(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
            progress: bool) -> tuple[list, list, dict]:
    from advlab.attacks.registry import display_name
    from advlab.evaluation import evaluate

    ds, x, y = _test_data(config, data_dir, device)
    model = open_ref(config["model"], files=files, device=device, input_shape=tuple(ds.input_shape))
    eps = list(config["eps"])
    label = display_name(config["attack"]["name"])
    attack = _make(config["attack"], eps=max(eps), norm=config["norm"], bounds=ref_bounds(config["model"]))
    from advlab.evaluation.sharded import evaluate_sharded

    # under torchrun: this rank's share of the attack calls, the records merged over the ranks
    ev = (evaluate_sharded if _sharded() else evaluate)(model, x, y, attacks={label: attack}, eps=eps,
                                                        batch_size=config["batch_size"], seed=config["seed"],
                                                        progress=progress, examples=GALLERY_POINTS)
    if not _sharded() or torch.distributed.get_rank() == 0:
        save_examples(files / cell_hash / "examples.safetensors", model, x, y, ev, label=label,
                      norm=config["norm"], class_names=list(ds.class_names), ds=ds)
    return _rows_of(ev, label), _outcomes_of(ev, label, label, eps), {
        "robust_accuracy": {f"{r.eps:g}": r.robust_accuracy for r in ev.rows}}


GALLERY_POINTS = 8   # adversarial examples a robust cell keeps per ε (the first attacked points)


def save_examples(path: Path, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ev: Any, *, label: str,
                  norm: str, class_names: list[str], ds: Any = None) -> None:
    """The cell's kept adversarial examples, with the model's classes and confidences at the
    clean and the adversarial inputs, as one safetensors file (written whole, then renamed): what
    a report's gallery shows without running a model. With the dataset ``ds`` the metadata also
    say its kind (image, signal, table), its feature (channel) names and scaling, so that a report
    draws signals as curves and tables as changed features in original units."""
    import json

    from safetensors.torch import save_file

    from advlab._io import atomic_write

    tensors: dict[str, torch.Tensor] = {}
    eps_list = []
    for key, (points, x_adv) in ev.examples.items():
        e = key.rsplit("@", 1)[1]
        pts = points.to(x.device)
        with torch.no_grad():
            p_clean = torch.softmax(model(x[pts]), dim=1)
            p_adv = torch.softmax(model(x_adv.to(x.device)), dim=1)
        c_conf, c_pred = p_clean.max(dim=1)
        a_conf, a_pred = p_adv.max(dim=1)
        for name, t in (("points", points), ("x", x[pts]), ("y", y[pts]), ("x_adv", x_adv), ("clean_pred", c_pred),
                        ("clean_conf", c_conf), ("adv_pred", a_pred), ("adv_conf", a_conf)):
            tensors[f"{name}@{e}"] = t.detach().cpu().clone().contiguous()   # (no shared storage)
        eps_list.append(e)
    if not tensors:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"attack": label, "norm": norm, "eps": json.dumps(eps_list), "class_names": json.dumps(class_names)}
    if ds is not None:
        meta["kind"] = ds.kind
        if getattr(ds, "feature_names", None):
            meta["feature_names"] = json.dumps(list(ds.feature_names))
        if getattr(ds, "scaling", None) is not None:
            meta["scaling"] = json.dumps({"low": list(ds.scaling.low), "high": list(ds.scaling.high),
                                          "fitted_on": ds.scaling.fitted_on})
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _sharded() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _strong(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
            progress: bool) -> tuple[list, list, dict]:
    from advlab.evaluation import strong_evaluate

    ds, x, y = _test_data(config, data_dir, device)
    model = open_ref(config["model"], files=files, device=device, input_shape=tuple(ds.input_shape))
    version = config.get("version", "fast")  # (cells written before #13 have none: the fast list)
    metrics, outcomes, summary = [], [], {}
    for e in config["eps"]:
        cr = strong_evaluate(model, x, y, eps=e, norm=config["norm"], steps=config["steps"],
                             bounds=ref_bounds(config["model"]), batch_size=config["batch_size"],
                             seed=config["seed"], checkpoint_path=files / cell_hash / f"eps_{e:g}",
                             progress=progress, version=version)
        row = cr.rows()[-1]
        label = " → ".join(cr.names)  # "APGD-CE → APGD-T", or the standard list's four (three under L1)
        for name in ("n", "n_correct", "n_robust", "clean_accuracy", "robust_accuracy", "success_rate", "grads",
                     "seconds"):
            metrics.append({"attack": label, "eps": e, "name": name, "value": getattr(row, name)})
        broken, correct = cr.broken.cpu(), cr.correct.cpu()
        outcomes += [{"attack": label, "eps": e, "point": i, "clean_correct": bool(correct[i]),
                      "success": bool(broken[i]), "norm": None, "queries": None} for i in range(correct.numel())]
        summary[f"{e:g}"] = row.robust_accuracy
    return metrics, outcomes, {"robust_accuracy": summary}


def _minimal(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
             progress: bool) -> tuple[list, list, dict]:
    from advlab.attacks.registry import display_name
    from advlab.evaluation import measure_minimal_norms

    ds, x, y = _test_data(config, data_dir, device)
    model = open_ref(config["model"], files=files, device=device, input_shape=tuple(ds.input_shape))
    label = display_name(config["attack"]["name"])
    attack = _make(config["attack"], eps=None, norm=config["norm"], bounds=ref_bounds(config["model"]))
    mn = measure_minimal_norms(model, x, y, attacks={label: attack}, norm=config["norm"],
                               batch_size=config["batch_size"], progress=progress)
    d, correct = mn.distances.cpu(), mn.correct.cpu()
    outcomes = [{"attack": label, "eps": MINIMAL_EPS, "point": i, "clean_correct": bool(correct[i]),
                 "success": bool(correct[i]) and math.isfinite(float(d[i])),
                 "norm": float(d[i]) if bool(correct[i]) and math.isfinite(float(d[i])) else None,
                 "queries": None} for i in range(d.numel())]
    med = mn.median(correct_only=True)
    metrics = [{"attack": label, "eps": None, "name": "median_norm", "value": med},
               {"attack": label, "eps": None, "name": "n", "value": mn.n},
               {"attack": label, "eps": None, "name": "n_correct", "value": mn.n_correct},
               {"attack": label, "eps": None, "name": "unbroken", "value": mn.n_unbroken},
               {"attack": label, "eps": None, "name": "clean_accuracy", "value": mn.clean_accuracy}]
    return metrics, outcomes, {"median_norm": med}


def _transfer(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
              progress: bool) -> tuple[list, list, dict]:
    """Crafted white-box on the source, shown to the target once per point (labels only);
    success is counted on the points the target classifies correctly (the denominator).

    The examples depend on the source, the attack, ε, the seed and the data, not on the target:
    they are crafted once, on every test point, and kept under ``files/crafted/`` (see
    :func:`crafted_examples`), so that a source × target matrix pays for one attack per source,
    not one per cell."""
    from advlab.attacks.registry import display_name
    from advlab.evaluation import clean_predictions

    ds, x, y = _test_data(config, data_dir, device)
    shape = tuple(ds.input_shape)
    target = open_ref(config["model"], files=files, device=device, input_shape=shape)
    label = f"transfer {display_name(config['attack']['name'])} from {config['source'].get('name', 'source')}"
    correct = clean_predictions(target, x, y=y) == y
    idx = correct.nonzero().squeeze(1)
    n, n_correct = int(y.numel()), int(idx.numel())
    metrics, outcomes, summary = [], [], {}
    bs = config["batch_size"]
    crafted = crafted_examples(config, files=files, x=x, y=y, device=device, input_shape=shape)
    for e in config["eps"]:
        # the target's labels only, one query per point it classifies correctly
        broken = torch.zeros(n, dtype=torch.bool)
        if n_correct:
            pred = clean_predictions(target, crafted[float(e)][idx], batch_size=bs)
            broken[idx.cpu()] = (pred != y[idx]).cpu()
        n_broken = int(broken.sum())
        for name, value in (("n", n), ("n_correct", n_correct), ("n_robust", n_correct - n_broken),
                            ("clean_accuracy", n_correct / n), ("robust_accuracy", (n_correct - n_broken) / n),
                            ("success_rate", n_broken / n_correct if n_correct else None)):
            metrics.append({"attack": label, "eps": e, "name": name, "value": value})
        outcomes += [{"attack": label, "eps": e, "point": i, "clean_correct": bool(correct[i]),
                      "success": bool(broken[i]), "norm": None, "queries": 1 if bool(correct[i]) else None}
                     for i in range(n)]
        summary[f"{e:g}"] = n_broken / n_correct if n_correct else None
    return metrics, outcomes, {"success_rate": summary}


CRAFTED = "crafted"   # the store files' folder of transfer examples shared by the cells of one source


def crafted_key(config: Mapping[str, Any]) -> str:
    """What a transfer cell's examples depend on: its configuration without the target."""
    from advlab.runs.spec import cell_hash

    return cell_hash("crafted", {k: v for k, v in config.items() if k != "model"})


def crafted_examples(config: Mapping[str, Any], *, files: Path, x: torch.Tensor, y: torch.Tensor, device: str,
                     input_shape: tuple[int, ...]) -> dict[float, torch.Tensor]:
    """The source's adversarial examples of every test point at each ε of a transfer cell.

    Crafted white-box on the source in batches of ``batch_size`` over all the points (in order,
    one ``torch.Generator`` seeded with the cell's seed per ε), and saved as one safetensors file
    ``files/crafted/<key>.safetensors`` (written whole, then renamed; two workers that craft the
    same examples at once write the same file). The next cell of the same source, attack, ε, seed
    and data reads them back instead of attacking again; a file that does not match the points
    (another data size) is crafted anew. Each example is checked against the threat model when it
    is read back (inside the ε-ball of its point and the bounds)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from advlab._io import atomic_write

    path = files / CRAFTED / f"{crafted_key(config)}.safetensors"
    eps_list = [float(e) for e in config["eps"]]
    lo, hi = ref_bounds(config["source"])
    norm = config["norm"]
    if path.exists():
        try:
            kept = load_file(str(path))
            got = {e: kept[f"x_adv@{e!r}"].to(x.device) for e in eps_list}
            if all(v.shape == x.shape and v.dtype == x.dtype and _inside(v, x, e, norm, lo, hi)
                   for e, v in got.items()):
                return got
            log.warning("crafted examples %s do not match this cell's points or threat model: crafting anew", path)
        except (KeyError, OSError, SafetensorError) as err:
            log.warning("crafted examples %s unreadable (%s): crafting anew", path, err)
    source = open_ref(config["source"], files=files, device=device, input_shape=input_shape)
    bs = config["batch_size"]
    out: dict[float, torch.Tensor] = {}
    for e in eps_list:
        white = _make(config["attack"], eps=e, norm=norm, bounds=(lo, hi))
        gen = torch.Generator(device=x.device).manual_seed(config["seed"])
        x_adv = torch.empty_like(x)
        for i in range(0, x.shape[0], bs):
            x_adv[i:i + bs] = white(source, x[i:i + bs], y[i:i + bs], generator=gen).x_adv.detach()
        out[e] = x_adv
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"x_adv@{e!r}": v.cpu().contiguous() for e, v in out.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"attack": str(config["attack"]),
                                                                     "source": str(config["source"].get("name"))}))
    return out


def _inside(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, lo: float, hi: float) -> bool:
    """Every row of ``x_adv`` inside the bounds and the ε-ball of its row of ``x`` (a float tolerance)."""
    if not bool(torch.isfinite(x_adv).all()) or float(x_adv.min()) < lo - 1e-6 or float(x_adv.max()) > hi + 1e-6:
        return False
    d = (x_adv - x).flatten(1)
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0}.get(norm)
    if p is None:
        return True
    return bool((d.norm(p=p, dim=1) <= eps * (1 + 1e-5) + 1e-6).all())


def _study(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
           progress: bool) -> tuple[list, list, dict]:
    from advlab.runs.study_cells import run_study

    return run_study(config, files=files, data_dir=data_dir, device=device, progress=progress)


def technique_label(source: str, target: str) -> str:
    """The metrics' attack label of one cell of a technique matrix."""
    return f"techniques {source} → {target}"


def _techniques(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
                progress: bool) -> tuple[list, list, dict]:
    """Papernot et al.'s cross-technique matrix: the techniques fitted on the train split (seeded),
    each crafting with its own attack at each ε; one metric row per (source, target, ε)."""
    from advlab.evaluation.techniques import fit_learners, technique_matrix
    from advlab.runs._common import load_data

    d = config["data"]
    if device not in ("cpu", "auto"):
        log.info("the technique matrix runs on the CPU (scikit-learn)")
    train = load_data(d["name"], split="train", data_dir=data_dir, limit=config.get("limit"))
    test = load_data(d["name"], split="test", data_dir=data_dir, limit=d.get("n"))
    learners = fit_learners(train.x, train.y, learners=config["learners"], seed=config["seed"])
    metrics, summary = [], {}
    for e in config["eps"]:
        m = technique_matrix(learners, test.x, test.y, eps=e, norm=config["norm"], steps=config["steps"],
                             budget=config["budget"], batch_size=config["batch_size"], seed=config["seed"])
        for s in m.sources:
            wb = m.white_box[s]
            for t in m.targets:
                c = m.cell(s, t)
                for name, value in (("transferred", c.transferred), ("target_correct", c.target_correct),
                                    ("success_rate", c.rate if c.target_correct else None),
                                    ("source_fooled", c.source_fooled),
                                    ("white_box_rate", wb.rate if wb.correct else None)):
                    metrics.append({"attack": technique_label(s, t), "eps": e, "name": name, "value": value})
        summary[f"{e:g}"] = {f"{s}→{t}": m.rate(s, t) for s in m.sources for t in m.targets
                             if (s, t) in (("lr", "tree"), ("dnn", "dnn"))}
    return metrics, [], {"techniques": summary}


AUDIT = "audit"   # the metrics' attack label of an audit cell


def _certify(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
             progress: bool) -> tuple[list, list, dict]:
    """A certificate at each radius (``eps``): certified accuracy over all n points, the count, and
    for IBP PGD's robust accuracy beside it and the verified points it broke (must be 0). Per
    point, the certified radius is the outcome's ``norm`` (eps = -1, as a minimal distance) and
    ``success`` means *certified* (radius > 0; ``clean_correct``: the certified classifier, smoothed
    or not, is right there)."""
    from advlab.runs.certify import certify_points

    ds, x, y = _test_data(config, data_dir, device)
    model = open_ref(config["model"], files=files, device=device, input_shape=tuple(ds.input_shape))
    method = config["method"]
    rows, radius, extra = certify_points(
        model, x, y, method=method, radii=config["eps"], sigma=config.get("sigma", 0.25),
        samples=config.get("samples", 1000), alpha=config.get("alpha", 0.001), bounds=ref_bounds(config["model"]),
        seed=config["seed"], batch_size=config["batch_size"], pgd_steps=config.get("steps", 20))
    label = f"certify:{method}"
    metrics: list[dict[str, Any]] = []
    for r in rows:
        for name in ("certified_accuracy", "certified", "pgd_robust_accuracy", "verified_broken_by_pgd"):
            if name in r:
                metrics.append({"attack": label, "eps": r["radius"], "name": name, "value": float(r[name])})
    metrics.append({"attack": label, "eps": MINIMAL_EPS, "name": "seconds_per_point",
                    "value": float(extra["seconds_per_point"])})
    if "abstained" in extra:
        metrics.append({"attack": label, "eps": MINIMAL_EPS, "name": "abstained", "value": float(extra["abstained"])})
    n = int(y.shape[0])
    outcomes = [{"attack": label, "eps": MINIMAL_EPS, "point": i, "clean_correct": bool(extra["correct"][i]),
                 "success": bool(radius[i] > 0), "norm": float(radius[i]) if radius[i] > 0 else None,
                 "queries": None} for i in range(n)]
    return metrics, outcomes, {"certified_accuracy": {f"{r['radius']:g}": r["certified_accuracy"] for r in rows},
                               **({"broken_promises": extra["broken_promises"]} if method == "ibp" else {})}


def _audit(config: Mapping[str, Any], *, cell_hash: str, files: Path, data_dir: str | None, device: str,
           progress: bool) -> tuple[list, list, dict]:
    """The gradient-masking audit at each ε: per check, passed (1/0) and its numbers; the verdict."""
    from advlab.evaluation import audit

    ds, x, y = _test_data(config, data_dir, device)
    model = open_ref(config["model"], files=files, device=device, input_shape=tuple(ds.input_shape))
    metrics: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for e in config["eps"]:
        rep = audit(model, x, y, norm=config["norm"], eps=e, bounds=ref_bounds(config["model"]),
                    steps=config["steps"], max_points=config["max_points"], batch_size=config["batch_size"],
                    seed=config["seed"])
        metrics.append({"attack": AUDIT, "eps": e, "name": "passed", "value": float(rep.passed)})
        metrics.append({"attack": AUDIT, "eps": e, "name": "n", "value": rep.n})
        for c in rep.checks:
            metrics.append({"attack": AUDIT, "eps": e, "name": f"check:{c.name}", "value": float(c.passed)})
            for k, v in c.values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics.append({"attack": AUDIT, "eps": e, "name": f"{c.name}.{k}", "value": float(v)})
        summary[f"{e:g}"] = {"passed": rep.passed, "failed_checks": [c.name for c in rep.failed_checks]}
    return metrics, [], {"audit": summary}
