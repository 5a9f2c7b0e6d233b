"""Plain supervised training and accuracy for classifiers on in-memory tensors.

Inputs are ``x`` of any shape ``(N, *)`` with at least one feature axis, floating point in ``[0, 1]``:
images ``(N, C, H, W)``, tables ``(N, D)``, signals ``(N, C, T)``; and ``y`` of shape ``(N,)``, int64 class
indices. There is no augmentation here (no flips or crops), so nothing assumes images. Nothing here
moves a model or a tensor between devices: they must agree.

Example::

    model = build_seeded("small-cnn", in_shape=(1, 8, 8), num_classes=10, seed=0)
    history = fit(model, x_train, y_train, epochs=5, seed=0, x_val=x_test, y_val=y_test)
    accuracy(model, x_test, y_test)  # == history.val_accuracy[-1]
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from advlab._checks import preserve_modes

__all__ = ["TrainHistory", "fit", "accuracy"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass
class TrainHistory:
    """Per-epoch record of a :func:`fit` run; every list has one entry per epoch.

    Attributes:
        loss: mean training cross-entropy over the epoch.
        train_accuracy: fraction of training samples classified correctly during the epoch
            (running, in train mode).
        val_accuracy: accuracy on ``(x_val, y_val)`` after the epoch (eval mode); empty when no
            validation data was given.
        seconds: wall-clock time of the epoch (training and validation).
        settings: the hyperparameters of the run, for a model card.
    """

    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        """Number of completed epochs."""
        return len(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def _check_data(x: Any, y: Any, *, model: nn.Module, what: str = "x/y") -> None:
    """Validate a data set: ``x`` (N, *) float in [0, 1], ``y`` (N,) int64, same device as model."""
    xn, yn = what.split("/")
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{xn} and {yn} must be torch tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    if x.dim() < 2:
        raise ValueError(
            f"{xn} must have shape (N, *): (N, D) for a table, (N, C, T) for signals, (N, C, H, W) for "
            f"images; got {tuple(x.shape)} (a single feature per sample is {xn}.unsqueeze(1))"
        )
    if not x.is_floating_point():
        raise TypeError(f"{xn} must be floating point with values in [0, 1], got dtype {x.dtype}")
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"{yn} must be int64 of shape (N,), got {y.dtype} of shape {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{xn} has {x.shape[0]} samples but {yn} has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{xn} and {yn} are empty")
    if x.device != y.device:
        raise ValueError(f"{xn} is on {x.device} but {yn} is on {y.device}")
    device = _model_device(model)
    if device is not None and device != x.device:
        raise ValueError(
            f"model is on {device} but {xn} is on {x.device}; move one of them so they agree"
        )
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(
            f"{xn} must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); scale the data and put "
            "any normalisation inside the model with advlab.models.Normalize"
        )
    if int(y.min()) < 0:
        raise ValueError(f"{yn} must hold class indices >= 0, got min {int(y.min())}")


def _check_labels_fit(logits: torch.Tensor, y: torch.Tensor, yn: str) -> None:
    if logits.dim() != 2:
        raise ValueError(f"model must return logits of shape (B, num_classes), got {tuple(logits.shape)}")
    top = int(y.max())
    if top >= logits.shape[1]:
        raise ValueError(f"{yn} holds class {top} but the model has only {logits.shape[1]} outputs")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y`` (argmax of the logits), in eval mode.

    Runs under :func:`torch.no_grad` and restores the model's train/eval mode afterwards.
    Shapes: ``x`` ``(N, *)`` in [0, 1], ``y`` ``(N,)`` int64.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    _check_data(x, y, model=model)
    correct = 0
    with preserve_modes(model), torch.no_grad():
        model.eval()
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size])  # (B, K)
            if start == 0:
                _check_labels_fit(logits, y, "y")
            correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    return correct / x.shape[0]


def _make_optimizer(
    name: str, params: Any, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")


def _check_training_args(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor | None,
                         y_val: torch.Tensor | None,
                         *, epochs: Any, batch_size: Any, lr: Any, weight_decay: Any, seed: Any,
                         optimizer: Any) -> None:
    """The argument and data checks both trainers share (:func:`fit` and ``advlab.defenses.train``)."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid names: {', '.join(OPTIMIZERS)}")
    _check_data(x, y, model=model)
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    if x_val is not None:
        _check_data(x_val, y_val, model=model, what="x_val/y_val")
        if x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_val samples are {tuple(x_val.shape[1:])} but x samples are {tuple(x.shape[1:])}")


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    x_val: torch.Tensor | None = None,
    y_val: torch.Tensor | None = None,
    optimizer: str = "adam",
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy and mini-batches; return the per-epoch history.

    Deterministic given ``seed`` and the model's initial weights: batches are shuffled with an
    explicit :class:`torch.Generator`, and any randomness inside the model (dropout) draws from a
    forked global RNG seeded with ``seed``, so the caller's global RNG state is left unchanged.
    Initialise the model reproducibly with :func:`advlab.models.build_seeded`.

    The model is left in eval mode, also when training fails.

    Args:
        model: maps ``(B, *)`` to logits ``(B, K)``; trained in place.
        x, y: training data, ``(N, *)`` float in [0, 1] (images, tables or signals) and ``(N,)`` int64.
        epochs: passes over the data.
        batch_size: samples per step; the last batch of an epoch may be smaller.
        lr: learning rate.
        weight_decay: L2 penalty passed to the optimiser.
        seed: seeds shuffling and in-model randomness.
        progress: show a tqdm bar per epoch with running loss and accuracy.
        x_val, y_val: optional validation data, evaluated after every epoch.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_training_args(model, x, y, x_val, y_val, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, seed=seed, optimizer=optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")

    settings = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "seed": seed,
        "optimizer": optimizer,
        "num_samples": int(x.shape[0]),
    }
    history = TrainHistory(settings=settings)
    opt = _make_optimizer(optimizer, params, lr=lr, weight_decay=weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    n = x.shape[0]
    num_batches = math.ceil(n / batch_size)
    cuda_devices = [x.device.index or 0] if x.device.type == "cuda" else []

    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            for epoch in range(epochs):
                start_time = time.perf_counter()
                model.train()
                order = torch.randperm(n, generator=generator).to(x.device)
                loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
                correct = torch.zeros((), dtype=torch.int64, device=x.device)
                seen = 0
                bar = tqdm(
                    range(num_batches),
                    desc=f"epoch {epoch + 1}/{epochs}",
                    disable=not progress,
                    leave=True,
                    unit="batch",
                )
                for step in bar:
                    idx = order[step * batch_size : (step + 1) * batch_size]
                    xb, yb = x[idx], y[idx]  # (B, *), (B,)
                    logits = model(xb)  # (B, K)
                    if epoch == 0 and step == 0:
                        _check_labels_fit(logits, y, "y")
                    loss = F.cross_entropy(logits, yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach().double() * yb.shape[0]
                    correct += (logits.detach().argmax(dim=1) == yb).sum()
                    seen += yb.shape[0]
                    if progress and (step % 20 == 0 or step == num_batches - 1):
                        bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}")
                bar.close()
                epoch_loss = float(loss_sum) / seen
                if not math.isfinite(epoch_loss):
                    raise FloatingPointError(
                        f"training diverged in epoch {epoch + 1}: loss is {epoch_loss}; lower lr"
                    )
                history.loss.append(epoch_loss)
                history.train_accuracy.append(int(correct) / seen)
                if x_val is not None and y_val is not None:
                    history.val_accuracy.append(accuracy(model, x_val, y_val))
                history.seconds.append(time.perf_counter() - start_time)
                logger.info(
                    "epoch %d/%d: loss %.4f, train acc %.4f%s, %.1fs",
                    epoch + 1,
                    epochs,
                    history.loss[-1],
                    history.train_accuracy[-1],
                    f", val acc {history.val_accuracy[-1]:.4f}" if history.val_accuracy else "",
                    history.seconds[-1],
                )
    finally:
        model.eval()
    return history
