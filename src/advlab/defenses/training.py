"""One trainer for every recipe: batching, optimiser, progress, checkpoints, resume, data parallelism.

A :class:`~advlab.defenses.recipe.Recipe` says how one batch becomes a loss (standard, FGSM mix,
PGD, TRADES, distillation, VAT ...); :func:`train` does everything else, the same way for all:

- **Determinism.** One master :class:`torch.Generator` seeded with ``seed`` shuffles the data; at
  the start of each epoch it also draws the seed of that epoch's recipe generator (the one passed
  to ``recipe.batch_loss(..., generator=...)``, e.g. for PGD's random start) and the seed of the
  forked global RNG that in-model randomness (dropout) draws from. The caller's global RNG is left
  unchanged. Same seed, same initial weights, same data → same weights, bit for bit.
- **Checkpoints** (``checkpoint_dir``): after every epoch the model weights, the optimiser state
  tensors and the master generator state go into ``state-epochNNNN.safetensors``; the epoch, the
  history, the recipe card, the run's settings and the optimiser's scalars go into ``state.json``,
  which names that safetensors file and its SHA-256. Both are written to temporary files and
  moved into place with :func:`os.replace`; ``state.json`` is replaced last and is the commit
  point, so an interruption at any moment leaves the previous complete checkpoint. No pickle.
- **Resume** (``resume=True``): a later call with the same recipe and settings continues after the
  last finished epoch and ends with weights identical to an uninterrupted run. A checkpoint of
  another recipe, other hyperparameters, other data or other settings is refused with an error
  that names what differs.
- **Data parallel.** Under ``torchrun`` (``WORLD_SIZE > 1``) the trainer initialises
  :mod:`torch.distributed` itself (gloo for CPU data, nccl for CUDA) unless it already is. Every
  rank draws the same shuffled order; each global batch of ``batch_size`` is split into
  ``WORLD_SIZE`` contiguous shards; gradients are all-reduced weighted by shard size, so a step
  uses the gradient of the mean loss over the *global* batch, as a single process would. Floating
  point buffers (BatchNorm running statistics) are averaged across ranks after each step, so all
  ranks keep identical models. Only rank 0 writes checkpoints and shows a progress bar. On GPUs
  each rank needs its own device: put model and data on :func:`local_device` (``cuda:LOCAL_RANK``;
  data on another rank's GPU is refused with that advice). The gloo path is tested with two
  processes; the nccl path has not been run on a multi-GPU machine yet.

Example::

    model = build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=0)
    result = train(model, PGDTraining(eps=0.1), x, y, epochs=10, checkpoint_dir="runs/pgd",
                   save_to="zoo/pgd-cnn", card={"dataset": "fashion-mnist"})
    result.val_accuracy, result.recipe  # per-epoch accuracy, {"recipe": "pgd", "eps": 0.1, ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.defenses._distributed import (all_reduce_grads, average_buffers, broadcast_model, local_device,
                                          setup_distributed)
from advlab.defenses._state import (STATE_FILE, check_restorable, load_checkpoint, optimizer_restore,
                                    read_training_state, write_checkpoint)
from advlab.defenses.recipe import Recipe
from advlab.models.training import (_check_data, _check_labels_fit, _check_training_args, _make_optimizer,
                                    accuracy)

__all__ = ["TrainResult", "train", "read_training_state", "local_device", "STATE_FILE", "LR_SCHEDULES"]

LR_SCHEDULES = ("constant", "linear", "cosine", "cyclic")

logger = logging.getLogger(__name__)

_MAX_SEED = 2**62


@dataclass
class TrainResult:
    """What :func:`train` did, epoch by epoch.

    Attributes:
        history: one dict per finished epoch (earlier epochs of a resumed run included):
            ``{"epoch": 1-based, "loss": mean loss, "logs": {name: mean over the epoch},
            "val_accuracy": float or None, "seconds": wall, "cpu_seconds": process CPU}``.
        recipe: ``recipe.card()``, JSON-ready.
        settings: the run's settings (batch size, lr, optimiser, seed, data fingerprint, ...).
        resumed_from: epochs already finished in the checkpoint this call resumed from (0 if none).
        world_size: number of data-parallel processes.
        saved_to: directory of the zoo checkpoint written at the end, or ``None``.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    recipe: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0
    world_size: int = 1
    saved_to: Path | None = None

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def loss(self) -> list[float]:
        return [h["loss"] for h in self.history]

    @property
    def val_accuracy(self) -> list[float | None]:
        return [h["val_accuracy"] for h in self.history]

    @property
    def seconds(self) -> list[float]:
        return [h["seconds"] for h in self.history]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {"history": self.history, "recipe": self.recipe, "settings": self.settings,
                "resumed_from": self.resumed_from, "world_size": self.world_size,
                "saved_to": str(self.saved_to) if self.saved_to is not None else None}


# ----------------------------------------------------------------------------- validation


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _fingerprint(*tensors: Tensor | None) -> str:
    """SHA-256 over shapes, dtypes and (a strided subsample of) the values: cheap, stable."""
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        flat = t.detach().reshape(t.shape[0], -1) if t.dim() > 1 else t.detach().reshape(-1, 1)
        step = max(1, flat.shape[0] // 2048)
        h.update(flat[::step].to("cpu").contiguous().numpy().tobytes())
        h.update(np.float64(flat.double().sum().item()).tobytes())
    return h.hexdigest()[:16]


def _check_recipe(recipe: Any) -> dict[str, Any]:
    if not isinstance(recipe, Recipe):
        raise TypeError(
            f"recipe must implement advlab.defenses.Recipe (name, batch_loss(model, x, y, *, generator, "
            f"x_unlabelled=None), card()), got {type(recipe).__name__}"
        )
    card = recipe.card()
    try:
        return json.loads(json.dumps(card, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"recipe.card() must be JSON-serialisable: {exc}") from None


# ----------------------------------------------------------------------------- trainer


def train(
    model: nn.Module,
    recipe: Recipe,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    seed: int = 0,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    x_unlabelled: Tensor | None = None,
    unlabelled_batch_size: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
    save_to: str | os.PathLike[str] | None = None,
    card: Mapping[str, Any] | None = None,
    callback: Callable[[int, TrainResult], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``recipe``; return the per-epoch :class:`TrainResult`.

    Each step: ``loss, logs = recipe.batch_loss(model, x_b, y_b, generator=g_epoch,
    x_unlabelled=u_b)`` with the model in training mode, then ``backward`` and one optimiser step.
    The model is left in eval mode, also when training fails.

    Args:
        model: maps ``(B, C, H, W)`` to logits ``(B, K)``; trained in place.
        recipe: how a batch becomes a loss (:class:`~advlab.defenses.Standard`,
            :class:`~advlab.defenses.adversarial.PGDTraining`, ...).
        x, y: training data, ``(N, C, H, W)`` float in [0, 1] and ``(N,)`` int64.
        epochs: total number of epochs (a resumed run counts the finished ones).
        batch_size: samples per step over all ranks; the last batch of an epoch may be smaller.
        lr, optimizer, weight_decay: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        lr_schedule: the learning rate at step ``s`` of ``S = epochs × batches per epoch``, with
            ``t = (s + ½)/S``: ``"constant"`` ``lr``; ``"linear"`` ``lr·(1 − t)`` (decay to 0, as
            VAT's reference runs decay it); ``"cosine"`` ``lr·½(1 + cos πt)``; ``"cyclic"``
            ``lr·(1 − |2t − 1|)``, up from 0 to ``lr`` and back (Wong et al. 2020's fast adversarial
            training). A function of the global step only, so resuming reproduces it exactly; a
            non-constant schedule depends on ``epochs``, which a resumed run must then keep.
        seed: seeds shuffling, the recipe's generator and in-model randomness.
        x_val, y_val: optional validation data, accuracy measured after every epoch.
        x_unlabelled: ``(U, C, H, W)`` unlabelled inputs for semi-supervised recipes (VAT); each
            step gets ``unlabelled_batch_size`` (default ``batch_size``) of them, drawn by cycling
            through a fresh permutation every epoch.
        checkpoint_dir: write a training checkpoint there after every epoch (rank 0 only).
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one; ``False``
            starts over and overwrites it.
        progress: a tqdm bar per epoch with the running means of the recipe's logs.
        save_to: at the end, save a zoo checkpoint there (:func:`advlab.models.save`, overwriting)
            with ``card`` completed by ``training = {"recipe": recipe.card(), settings, history}``
            and ``seed``; :func:`advlab.models.load` rebuilds the model from it.
        card: extra ModelCard fields for ``save_to`` (``dataset``, ``clean_accuracy`` ...).
        callback: called as ``callback(epoch, result)`` after each epoch (and its checkpoint);
            an exception it raises stops training with the checkpoint intact.

    Raises:
        TypeError / ValueError: bad arguments or data (the message names which); a checkpoint
            from another recipe or other settings.
        FloatingPointError: the loss became NaN or Inf.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    recipe_card = _check_recipe(recipe)
    _check_training_args(model, x, y, x_val, y_val, epochs=epochs, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, seed=seed, optimizer=optimizer)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; valid names: {', '.join(LR_SCHEDULES)}")
    ub = _unlabelled_batch(model, x, x_unlabelled, unlabelled_batch_size, batch_size)
    if card is not None and save_to is None:
        raise ValueError("card is only used with save_to; pass save_to=DIR to write a zoo checkpoint")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")

    dist = setup_distributed(x.device)
    check_batch = getattr(recipe, "check_batch_size", None)
    if callable(check_batch):
        check_batch(math.ceil(batch_size / dist.world))  # e.g. BatchMix: k <= batch

    settings: dict[str, Any] = {
        "batch_size": batch_size, "lr": float(lr), "optimizer": optimizer,
        "weight_decay": float(weight_decay), "seed": seed, "num_samples": int(x.shape[0]),
        "data": _fingerprint(x, y),
        "num_unlabelled": int(x_unlabelled.shape[0]) if x_unlabelled is not None else 0,
        "unlabelled_batch_size": ub, "world_size": dist.world,
    }
    if lr_schedule != "constant":  # older checkpoints (constant lr) keep resuming
        settings.update({"lr_schedule": lr_schedule, "schedule_epochs": epochs})
    result = TrainResult(recipe=recipe_card, settings=settings, world_size=dist.world)
    loop = _Loop(model=model, recipe=recipe, name=recipe_card["recipe"], x=x, y=y,
                 x_unlabelled=x_unlabelled, ub=ub, batch_size=batch_size, epochs=epochs, lr=lr,
                 lr_schedule=lr_schedule, params=params, dist=dist, show=progress and dist.rank == 0,
                 opt=_make_optimizer(optimizer, params, lr=lr, weight_decay=weight_decay),
                 generator=torch.Generator(device="cpu").manual_seed(seed))
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start_epoch = 0
    if directory is not None and resume:
        start_epoch = _resume(loop, directory, result, recipe_card, settings)
    if dist.active:
        broadcast_model(model)

    cuda_devices = [x.device.index or 0] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            for epoch in range(start_epoch, epochs):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                loss_sum, seen, sums = _run_epoch(loop, epoch)
                epoch_loss = loss_sum / seen
                if not math.isfinite(epoch_loss):
                    raise FloatingPointError(f"training diverged in epoch {epoch + 1}: loss is "
                                             f"{epoch_loss}; lower lr or check the recipe")
                val = accuracy(model, x_val, y_val) if x_val is not None and y_val is not None else None
                model.train()
                result.history.append({
                    "epoch": epoch + 1, "loss": epoch_loss,
                    "logs": {k: v / seen for k, v in sums.items()}, "val_accuracy": val,
                    "seconds": time.perf_counter() - wall0, "cpu_seconds": time.process_time() - cpu0,
                })
                logger.info("%s epoch %d/%d: loss %.4f%s, %.1fs", loop.name, epoch + 1,
                            epochs, epoch_loss, f", val acc {val:.4f}" if val is not None else "",
                            result.history[-1]["seconds"])
                if directory is not None and dist.rank == 0:
                    write_checkpoint(directory, model=model, opt=loop.opt, generator=loop.generator,
                                     epoch=epoch + 1, result=result)
                if dist.active:
                    torch.distributed.barrier()
                if callback is not None:
                    callback(epoch + 1, result)
    finally:
        model.eval()

    if save_to is not None and dist.rank == 0:
        result.saved_to = _save_trained(model, save_to, card, result, settings, epochs=epochs, seed=seed,
                                        validated=x_val is not None and y_val is not None)
    return result


def _unlabelled_batch(model: nn.Module, x: Tensor, x_unlabelled: Tensor | None,
                      unlabelled_batch_size: int | None, batch_size: int) -> int:
    """Check the unlabelled inputs; return the unlabelled points per step (0 without them)."""
    if x_unlabelled is None:
        if unlabelled_batch_size is not None:
            raise ValueError("unlabelled_batch_size given without x_unlabelled")
        return 0
    _check_data(x_unlabelled, torch.zeros(x_unlabelled.shape[0], dtype=torch.int64,
                                          device=x_unlabelled.device),
                model=model, what="x_unlabelled/its labels")
    if x_unlabelled.shape[1:] != x.shape[1:]:
        raise ValueError(f"x_unlabelled samples are {tuple(x_unlabelled.shape[1:])} but x samples "
                         f"are {tuple(x.shape[1:])}")
    return _positive_int("unlabelled_batch_size",
                         batch_size if unlabelled_batch_size is None else unlabelled_batch_size)


@dataclass
class _Loop:
    """What every epoch of one :func:`train` run shares (the optimiser and the data generator
    carry over from epoch to epoch)."""

    model: nn.Module
    recipe: Recipe
    name: str
    x: Tensor
    y: Tensor
    x_unlabelled: Tensor | None
    ub: int
    batch_size: int
    epochs: int
    lr: float
    lr_schedule: str
    params: list[nn.Parameter]
    dist: Any
    show: bool
    opt: torch.optim.Optimizer
    generator: torch.Generator

    @property
    def num_batches(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)


def _resume(loop: _Loop, directory: Path, result: TrainResult, recipe_card: dict[str, Any],
            settings: dict[str, Any]) -> int:
    """Restore model, optimiser, generator and history from ``directory``'s checkpoint, if any;
    return the epochs already done."""
    loaded = load_checkpoint(directory, recipe_card=recipe_card, settings=settings, epochs=loop.epochs)
    if loaded is None:
        return 0
    state, tensors = loaded
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = {k: (tuple(v.shape), v.dtype) for k, v in loop.model.state_dict().items()}
    found = {k: (tuple(v.shape), v.dtype) for k, v in model_state.items()}
    if found != expected:
        diff = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
        raise ValueError(f"cannot resume from {directory}: it holds a model of another architecture "
                         f"(first difference: {diff[0]}); use another checkpoint_dir or resume=False")
    where = directory / state["tensors"]
    check_restorable(where, tensors, state.get("optimizer_scalars", {}), loop.opt, loop.generator)
    loop.model.load_state_dict(model_state, strict=True)
    optimizer_restore(loop.opt, tensors, state.get("optimizer_scalars", {}))
    try:
        loop.generator.set_state(tensors["generator"])
    except RuntimeError as exc:  # torch checks the state's own fields
        raise ValueError(f"training checkpoint {where} holds an invalid random generator state ({exc})") from None
    result.history = list(state["history"])
    result.resumed_from = int(state["epoch"])
    logger.info("resuming from %s after epoch %d", directory, result.resumed_from)
    return result.resumed_from


def _run_epoch(loop: _Loop, epoch: int) -> tuple[float, int, dict[str, float]]:
    """One epoch: the data order and seeds from the run's generator, then every step; returns the
    loss sum, the points seen and the recipe's log sums (over all ranks)."""
    x, dist = loop.x, loop.dist
    order = torch.randperm(x.shape[0], generator=loop.generator).to(x.device)
    seeds = torch.randint(_MAX_SEED, (2,), generator=loop.generator).tolist()
    recipe_gen = torch.Generator(device=x.device).manual_seed(seeds[0] + dist.rank)
    torch.manual_seed(seeds[1] + dist.rank)  # dropout etc., inside the forked RNG
    u_order = None
    if loop.x_unlabelled is not None:
        nu = loop.x_unlabelled.shape[0]
        u_total = loop.num_batches * loop.ub
        u_order = torch.cat([torch.randperm(nu, generator=loop.generator)
                             for _ in range(math.ceil(u_total / nu))])[:u_total].to(x.device)
    loop.model.train()
    sums: dict[str, float] = {}
    loss_sum, seen = 0.0, 0
    bar = tqdm(range(loop.num_batches), desc=f"{loop.name} epoch {epoch + 1}/{loop.epochs}",
               disable=not loop.show, leave=True, unit="batch")
    for step in bar:
        b, loss_value, logs = _step(loop, epoch, step, order, u_order, recipe_gen)
        loss_sum += loss_value * b
        seen += b
        for k, v in logs.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        if loop.show and (step % 10 == 0 or step == loop.num_batches - 1):
            bar.set_postfix({k: f"{v / seen:.4f}" for k, v in sums.items()} or
                            {"loss": f"{loss_sum / seen:.4f}"})
    bar.close()
    if dist.active:
        keys = sorted(sums)
        packed = torch.tensor([loss_sum, float(seen), *(sums[k] for k in keys)],
                              dtype=torch.float64, device=x.device)
        torch.distributed.all_reduce(packed)
        loss_sum, seen = float(packed[0]), int(packed[1])
        sums = {k: float(v) for k, v in zip(keys, packed[2:].tolist())}
    return loss_sum, seen, sums


def _step(loop: _Loop, epoch: int, step: int, order: Tensor, u_order: Tensor | None,
          recipe_gen: torch.Generator) -> tuple[int, float, dict[str, Any]]:
    """One optimiser step on this rank's share of batch ``step``; returns its size, loss, logs."""
    dist, bs, ub = loop.dist, loop.batch_size, loop.ub
    idx = order[step * bs : (step + 1) * bs]
    global_b = idx.shape[0]
    if dist.active:
        idx = idx.tensor_split(dist.world)[dist.rank]
    xb, yb = loop.x[idx], loop.y[idx]  # (b, C, H, W), (b,)
    ubatch = None
    if u_order is not None:
        uidx = u_order[step * ub : (step + 1) * ub]
        if dist.active:
            uidx = uidx.tensor_split(dist.world)[dist.rank]
        ubatch = loop.x_unlabelled[uidx]  # type: ignore[index]
    if loop.lr_schedule != "constant":
        scheduled = loop.lr * _lr_factor(loop.lr_schedule, epoch * loop.num_batches + step,
                                         loop.epochs * loop.num_batches)
        for group in loop.opt.param_groups:
            group["lr"] = scheduled
    loop.opt.zero_grad(set_to_none=True)
    b = xb.shape[0]
    loss_value, logs = 0.0, {}
    if b > 0:
        if epoch == 0 and step == 0:
            with torch.no_grad():  # eval mode: no dropout draw, no BN update
                _check_labels_fit(_eval_logits(loop.model, xb[:2]), loop.y, "y")
        extra = ({"progress": (epoch * loop.num_batches + step) / (loop.epochs * loop.num_batches)}
                 if getattr(loop.recipe, "uses_progress", False) else {})
        loss, logs = loop.recipe.batch_loss(loop.model, xb, yb, generator=recipe_gen, x_unlabelled=ubatch,
                                            **extra)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise TypeError(f"{type(loop.recipe).__name__}.batch_loss must return a scalar "
                            f"tensor loss, got {type(loss).__name__}")
        loss.backward()
        loss_value = float(loss.detach())
    if dist.active:
        all_reduce_grads(loop.params, b / global_b)
    loop.opt.step()
    if dist.active:
        average_buffers(loop.model, dist.world)
    return b, loss_value, logs


def _save_trained(model: nn.Module, save_to: str | os.PathLike[str], card: Mapping[str, Any] | None,
                  result: TrainResult, settings: dict[str, Any], *, epochs: int, seed: int,
                  validated: bool) -> Path:
    """The zoo checkpoint of a finished run: ``card`` completed by the training record."""
    from advlab.models.checkpoint import save

    extra = dict(card or {})
    training = dict(extra.pop("training", {}) or {})
    training.update({"recipe": result.recipe, **settings, "epochs": epochs, "history": result.history})
    extra.setdefault("seed", seed)
    if validated and "clean_accuracy" not in extra:
        extra["clean_accuracy"] = result.history[-1]["val_accuracy"]
    return save(model, save_to, card={**extra, "training": training}, overwrite=True)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    """The multiplier of ``lr`` at global step ``step`` of ``total`` (see :func:`train`)."""
    t = (step + 0.5) / total
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "cyclic":
        return 1.0 - abs(2.0 * t - 1.0)
    return 1.0


def _eval_logits(model: nn.Module, xb: Tensor) -> Tensor:
    """Logits in eval mode (a BatchNorm model must not see a batch of one in train mode)."""
    model.eval()
    try:
        return model(xb)
    finally:
        model.train()
