"""What the jobs share: loading data for a checkpoint, and saying what is happening."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Union

import torch
from torch import nn

from advlab.data import Dataset, load_dataset
from advlab.models import ModelCard
from advlab.models.sklearn import SklearnModel
from advlab.models.user import UserModel, resolve_device

log = logging.getLogger(__name__)

#: The ε list of seed 004 (the TensorFlow FGSM tutorial) plus 0.05 and 0.2, as issue #2 asks.
DEMO_EPS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.15, 0.2, 0.5, 0.7)


def say(message: str, quiet: bool) -> None:
    log.info(message)
    if not quiet:
        print(message, flush=True)


#: PGD's steps in every command unless --steps says otherwise (attack, evaluate, demo, audit,
#: defend's comparison); the library's PGD class keeps the peers' default of 10
PGD_STEPS = 20


def command_steps(key: str, steps: int | None) -> int | None:
    """The steps a command runs registry attack ``key`` with."""
    return PGD_STEPS if steps is None and key == "pgd" else steps


def load_data(name: str, *, split: str, data_dir: str | None = None, download: bool = False,
              limit: int | None = None) -> Dataset:
    ds = load_dataset(name, split=split, root=data_dir, download=download)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        ds = ds.subset(min(limit, len(ds)))
    return ds


def checkpoint_data(card: ModelCard, *, data: str | None, data_dir: str | None, download: bool,
                     n: int | None) -> Dataset:
    name = data or card.dataset
    if name is None:
        raise ValueError("the checkpoint's card names no dataset; pass --data NAME")
    ds = load_data(name, split="test", data_dir=data_dir, download=download, limit=n)
    shape = tuple(ds.input_shape)
    if shape != tuple(card.in_shape):
        # (the model itself would fail with "mat1 and mat2 shapes cannot be multiplied")
        raise ValueError(f"the checkpoint's model takes inputs {tuple(card.in_shape)} (trained on "
                         f"{card.dataset or 'unknown data'}) but {ds.name} has inputs {shape}; pass the "
                         f"--data it was trained on")
    if ds.num_classes > card.num_classes:
        raise ValueError(f"{ds.name} has {ds.num_classes} classes but the checkpoint's model has "
                         f"{card.num_classes}; pass the --data it was trained on")
    return ds


#: what a command runs on: a checkpoint directory written by ``advlab train``, or the user's model
ModelSource = Union[str, Path, UserModel, SklearnModel]


def open_model(source: ModelSource, *, data: str | None, data_dir: str | None, download: bool,
               n: int | None, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard, Dataset]:
    """The model a command runs on, its card, and its test data: model and data moved to
    ``device`` once, up front (the library itself never moves a tensor).

    ``source`` is a checkpoint directory or a :class:`~advlab.models.user.UserModel`; a user's
    model needs ``data`` (or its own ``dataset``) and takes its input shape from it when it
    declares none."""
    dev = resolve_device(device)
    if isinstance(source, SklearnModel):
        name = data or source.dataset
        if name is None:
            raise ValueError(f"--sklearn {source.path}: an estimator file has no card naming its data: pass --data NAME")
        ds = load_data(name, split="test", data_dir=data_dir, download=download, limit=n)
        model, card = source.load(device=dev, input_shape=tuple(ds.input_shape))
        if ds.num_classes > card.num_classes:
            raise ValueError(f"{ds.name} has {ds.num_classes} classes but the estimator in {source.path} knows "
                             f"{card.num_classes}")
        card = dataclasses.replace(card, dataset=ds.name, class_names=tuple(ds.class_names)
                                   if ds.num_classes == card.num_classes else None)
    elif isinstance(source, UserModel):
        name = data or source.dataset
        if name is None:
            raise ValueError(f"model {source.factory!r} has no card naming its data: pass --data NAME")
        ds = load_data(name, split="test", data_dir=data_dir, download=download, limit=n)
        model, card = source.load(device=dev, input_shape=tuple(ds.input_shape))
        card = dataclasses.replace(card, dataset=ds.name,
                                   class_names=card.class_names or (tuple(ds.class_names)
                                                                    if ds.num_classes == card.num_classes else None))
        if ds.num_classes > card.num_classes:
            raise ValueError(f"{ds.name} has {ds.num_classes} classes but model {source.factory!r} returns "
                             f"{card.num_classes} logits")
    else:
        from advlab.models import load, load_card

        model, card = load(source, device=dev), load_card(source)
        ds = checkpoint_data(card, data=data, data_dir=data_dir, download=download, n=n)
    if ds.x.device != dev:
        ds = dataclasses.replace(ds, x=ds.x.to(dev), y=ds.y.to(dev))
    return model, card, ds


def has_gradients(model: nn.Module) -> bool:
    """False for a model that answers but has no gradient (an estimator from ``--sklearn`` with no
    exact torch conversion: trees, forests, k-NN)."""
    return all(getattr(m, "differentiable", True) is not False for m in model.modules())


def model_bounds(card: ModelCard) -> tuple[float, float]:
    """The input box of a command's model: a user's ``--bounds``, else [0, 1] (every zoo model)."""
    lo, hi = card.training.get("bounds", (0.0, 1.0)) if card.architecture.startswith("user:") else (0.0, 1.0)
    return float(lo), float(hi)


def describe(source: ModelSource) -> str:
    """How provenance names a command's model."""
    if isinstance(source, SklearnModel):
        return f"sklearn estimator {source.path}"
    if isinstance(source, UserModel):
        return f"{source.factory}" + (f" with weights {source.weights}" if source.weights else "")
    return str(source)


def budget_alias_arg(budget: int | None, queries: int | None, job: str) -> int | None:
    """``queries=``, the deprecated name of a job's per-point query ``budget``, with a warning."""
    if queries is None:
        return budget
    from advlab.attacks._blackbox import deprecated

    deprecated(f"{job}(queries=...) is deprecated: the per-point query budget is called budget=")
    return queries


def write_examples(ds: Dataset, x: torch.Tensor, result: object, *, clean_pred: torch.Tensor,
                   clean_conf: torch.Tensor, y: torch.Tensor, out: Path, stem: str = "gallery", n: int = 6,
                   title: str | None = None) -> tuple[dict[str, Path], str | None]:
    """The adversarial examples a page shows, in the form the data's kind calls for: images as a
    gallery (``stem.png``), signals as curves per channel, clean and adversarial overlaid
    (``signal_stem.png``), table rows as their changed features (``changed_features.md`` and ``.csv``).

    Returns the files written (``{"gallery": ...}`` or ``{"changed_features": ..., "changed_features_csv":
    ...}``) and, for a table, the Markdown text (for :func:`~advlab.reports.write_report`'s
    ``sections``)."""
    from advlab.reports import changed_features_from_result, gallery_from_result, signal_gallery_from_result

    kind = ds.kind
    if kind == "table":
        files = {"changed_features": out / "changed_features.md", "changed_features_csv": out / "changed_features.csv"}
        text = changed_features_from_result(x, result, feature_names=ds.feature_names, scaling=ds.scaling,
                                            class_names=list(ds.class_names), clean_pred=clean_pred,
                                            clean_conf=clean_conf, y=y, n=min(n, 5), path_md=files["changed_features"],
                                            path_csv=files["changed_features_csv"])
        return files, text
    path = out / (f"signal_{stem}.png" if kind == "signal" else f"{stem}.png")
    if kind == "signal":
        signal_gallery_from_result(x, result, class_names=list(ds.class_names), clean_pred=clean_pred,
                                   clean_conf=clean_conf, y=y, n=min(n, 4), channel_names=ds.feature_names,
                                   scaling=ds.scaling, title=title, path=path)
    else:
        gallery_from_result(x, result, class_names=list(ds.class_names), clean_pred=clean_pred,
                            clean_conf=clean_conf, y=y, n=n, title=title, path=path)
    return {"gallery": path}, None


def example_noun(ds: Dataset) -> str:
    """What a command's messages call the data's examples: images, rows or signals."""
    return {"table": "rows", "signal": "signals"}.get(ds.kind, "images")
