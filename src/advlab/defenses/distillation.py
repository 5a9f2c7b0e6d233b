"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami, IEEE S&P 2016, "Distillation as a
Defense to Adversarial Perturbations against Deep Neural Networks").

A teacher is trained at softmax temperature ``T`` (``CE(f(x) / T, y)``); a student of the same
architecture is then trained at the same ``T`` on the teacher's soft labels
``p_T(x) = softmax(teacher(x) / T)``:

    L_student = −Σ_k p_T(x)_k · log softmax(student(x) / T)_k          (soft cross-entropy)
              [+ w · CE(student(x) / T, y) with (1 − w) on the soft term, optional, w = 0 in the paper]

and is *deployed at T = 1*: the deployed model is the student network itself, returning its raw
logits, which are about ``T`` times larger than an ordinary network's. Its softmax is saturated
(one-hot in float32) almost everywhere, so the input gradient of the cross-entropy is exactly zero
on most points and FGSM / PGD with the cross-entropy loss appear to fail. That is gradient
masking, not robustness: Carlini & Wagner (2017) break it with a margin loss on the logits
(``PGD(loss="cw")``), and :func:`advlab.evaluation.audit.audit` flags such a model.

Example::

    build = lambda s: build_seeded("small-cnn", in_shape=(1, 28, 28), num_classes=10, seed=s)
    result = distill(build, x, y, temperature=100.0, epochs=2, seed=0)
    student = result.student          # deployed at T = 1: raw logits, eval mode
    PGD(eps=0.1, loss="cw")(student, x_test, y_test).success.float().mean()  # high
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advlab._checks import quiet_eval
from advlab.defenses.recipe import Standard, recipe_card

__all__ = ["Distillation", "DistillationResult", "distill", "soft_cross_entropy"]

logger = logging.getLogger(__name__)


def _check_temperature(temperature: Any) -> None:
    if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature) or temperature <= 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; "
                         "defensive distillation uses T = 100 (Papernot et al. 2016)")


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Mean over the batch of ``−Σ_k q_k · log softmax(logits)_k``; ``logits``, ``target_probs`` ``(B, K)``."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, every submodule's own mode restored afterwards (no warning)."""
    with quiet_eval(model), torch.no_grad():
        yield


def _fingerprint(model: nn.Module) -> str:
    """sha256 of a model's state dict (names, shapes, values), to record which teacher was used."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Distillation:
    """The student's recipe of defensive distillation (Papernot et al. 2016), for the trainer.

    ``L = (1 − w) · softCE(student(x) / T, softmax(teacher(x) / T)) + w · CE(student(x) / T, y)``
    with ``w = hard_label_weight`` (0, soft labels only, as in the paper). The teacher is frozen:
    it runs in eval mode under ``torch.no_grad`` (its weights, modes, ``requires_grad`` flags and
    ``.grad`` are left as they were). The trained student is deployed at T = 1 (raw logits).

    Args:
        teacher: the network trained at temperature ``T`` (e.g. with ``Standard(temperature=T)``);
            it must not be the student itself.
        temperature: T > 0 of both the teacher's soft labels and the student's training softmax.
        hard_label_weight: w in [0, 1], the share of the loss on the true labels.

    Example:
        >>> recipe = Distillation(teacher=teacher, temperature=100.0)
        >>> loss, logs = recipe.batch_loss(student, x, y, generator=torch.Generator())
    """

    name: ClassVar[str] = "distill"
    teacher: nn.Module
    temperature: float = 100.0
    hard_label_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module returning logits, got "
                            f"{type(self.teacher).__name__}")
        _check_temperature(self.temperature)
        w = self.hard_label_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (0.0 <= w <= 1.0):
            raise ValueError(f"hard_label_weight must be a number in [0, 1], got {w!r}")

    def soft_labels(self, x: Tensor) -> Tensor:
        """``softmax(teacher(x) / T)`` ``(B, K)``, computed in eval mode without gradients."""
        with _frozen_eval(self.teacher):
            return F.softmax(self.teacher(x) / self.temperature, dim=1)

    def batch_loss(self, model: nn.Module, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
                   x_unlabelled: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        if model is self.teacher:
            raise ValueError("the student must be a different network from the teacher: build a fresh "
                             "model of the same architecture for the student")
        if x_unlabelled is not None:
            raise ValueError("Distillation uses labelled batches only; x_unlabelled was given (the "
                             "teacher's soft labels could label it: pass it as x with the teacher's "
                             "argmax as y instead)")
        soft = self.soft_labels(x)  # (B, K)
        logits = model(x)  # (B, K)
        if logits.shape != soft.shape:
            raise ValueError(f"student returns logits of shape {tuple(logits.shape)} but the teacher "
                             f"{tuple(soft.shape)}: they must classify the same classes")
        scaled = logits / self.temperature
        soft_loss = soft_cross_entropy(scaled, soft)
        w = float(self.hard_label_weight)
        if w > 0:
            hard_loss = F.cross_entropy(scaled, y)
            loss = (1.0 - w) * soft_loss + w * hard_loss
        else:
            loss = soft_loss
        pred = logits.detach().argmax(1)
        logs = {"loss": float(loss.detach()), "soft_ce": float(soft_loss.detach()),
                "acc": float((pred == y).float().mean()),
                "agree": float((pred == soft.argmax(1)).float().mean())}
        return loss, logs

    def card(self) -> dict[str, Any]:
        out = recipe_card(self)
        out["teacher"] = type(self.teacher).__name__
        out["teacher_sha256"] = _fingerprint(self.teacher)
        return out


@dataclass
class DistillationResult:
    """What :func:`distill` returns.

    Attributes:
        student: the distilled network, deployed at T = 1 (its raw logits), in eval mode.
        teacher: the network trained at temperature T, in eval mode.
        temperature: the T both were trained at.
        teacher_history, student_history: the trainer's results
            (:class:`advlab.defenses.training.TrainResult`); ``teacher_history`` is ``None`` when a
            trained teacher was passed in.
    """

    student: nn.Module
    teacher: nn.Module
    temperature: float
    teacher_history: Any
    student_history: Any


def distill(build_model: Callable[[int], nn.Module], x: Tensor, y: Tensor, *,
            temperature: float = 100.0, epochs: int = 10, teacher_epochs: int | None = None,
            batch_size: int = 128, lr: float = 1e-3, optimizer: str = "adam", seed: int = 0,
            hard_label_weight: float = 0.0, teacher: nn.Module | None = None,
            x_val: Tensor | None = None, y_val: Tensor | None = None,
            weight_decay: float = 0.0, lr_schedule: str = "constant",
            checkpoint_dir: str | Path | None = None,
            resume: bool = True, progress: bool = False, save_to: str | Path | None = None,
            card: dict[str, Any] | None = None) -> DistillationResult:
    """Defensive distillation end to end (Papernot et al. 2016, Sec. IV).

    1. teacher ``= build_model(seed)`` trained with ``Standard(temperature=T)`` (skipped when a
       trained ``teacher`` is given);
    2. student ``= build_model(seed + 1)`` trained with ``Distillation(teacher, temperature=T)``;
    3. the student is returned *deployed at T = 1*: the same network, whose raw logits are the
       deployed model's output (no division by T), in eval mode.

    Both runs use :func:`advlab.defenses.training.train` with the same ``batch_size``, ``lr``,
    ``lr_schedule``, ``optimizer`` and ``seed``; ``teacher_epochs`` defaults to ``epochs``. With
    ``checkpoint_dir``, the runs checkpoint to ``checkpoint_dir/teacher`` and
    ``checkpoint_dir/student`` (``resume``, on by default as in the trainer, continues them);
    ``save_to`` / ``card`` write the deployed student as a zoo checkpoint (its card records the
    distillation recipe, the teacher's SHA-256 included), loadable with :func:`advlab.models.load`.

    Args:
        build_model: ``seed -> nn.Module``, a fresh network (e.g. ``lambda s: build_seeded(...,
            seed=s)``); teacher and student share the architecture, as in the paper.
        x, y: training data ``(N, C, H, W)`` in [0, 1] and ``(N,)`` int64.
        temperature: T > 0 (100 in the paper's MNIST/CIFAR experiments).

    Returns:
        A :class:`DistillationResult` with the deployed student, the teacher and both histories.
    """
    from advlab.defenses.training import train  # the one trainer; imported late (it imports recipes)

    _check_temperature(temperature)
    if isinstance(build_model, nn.Module):
        raise TypeError("build_model must be a function seed -> fresh nn.Module, not a model; wrap it, "
                        "e.g. lambda s: build_seeded('small-cnn', in_shape=..., num_classes=10, seed=s), "
                        "and pass an already trained teacher as teacher=...")
    if not callable(build_model):
        raise TypeError(f"build_model must be a callable seed -> nn.Module, got {type(build_model).__name__}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if teacher_epochs is None:
        teacher_epochs = epochs
    common: dict[str, Any] = dict(batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                                  weight_decay=weight_decay, lr_schedule=lr_schedule, x_val=x_val,
                                  y_val=y_val, resume=resume,
                                  progress=progress)
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None

    teacher_history = None
    if teacher is None:
        teacher = build_model(seed)
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"build_model must return an nn.Module, got {type(teacher).__name__}")
        logger.info("distill: training the teacher at T = %g for %d epochs", temperature, teacher_epochs)
        teacher_history = train(teacher, Standard(temperature=float(temperature)), x, y,
                                epochs=teacher_epochs,
                                checkpoint_dir=root / "teacher" if root is not None else None, **common)
    elif not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module or None, got {type(teacher).__name__}")
    teacher.eval()

    student = build_model(seed + 1)
    if not isinstance(student, nn.Module):
        raise TypeError(f"build_model must return an nn.Module, got {type(student).__name__}")
    if student is teacher:
        raise ValueError("build_model returned the same module twice; it must build a fresh network")
    recipe = Distillation(teacher=teacher, temperature=float(temperature),
                          hard_label_weight=hard_label_weight)
    logger.info("distill: training the student at T = %g for %d epochs", temperature, epochs)
    student_history = train(student, recipe, x, y, epochs=epochs,
                            checkpoint_dir=root / "student" if root is not None else None,
                            save_to=save_to, card=card, **common)
    student.eval()  # deployed at T = 1: the raw logits of the network trained at T
    return DistillationResult(student=student, teacher=teacher, temperature=float(temperature),
                              teacher_history=teacher_history, student_history=student_history)
