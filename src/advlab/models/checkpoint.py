"""Checkpoints: weights in safetensors, provenance in a JSON model card. No pickle anywhere.

A checkpoint is a directory::

    path/
      model.safetensors   state dict of the zoo architecture (without any Normalize wrapper)
      card.json           ModelCard: architecture, shapes, normalisation, data, accuracy, provenance

:func:`load` rebuilds the architecture from the registry (:data:`advlab.models.zoo.ARCHITECTURES`),
wraps it in :class:`~advlab.models.wrappers.Normalize` when the card records a normalisation, loads
the weights strictly and returns the model in eval mode.

Example::

    save(model, "runs/fmnist-cnn", card={"dataset": "fashion-mnist", "clean_accuracy": 0.91, "seed": 0})
    model = load("runs/fmnist-cnn")
    model.advlab_card.clean_accuracy  # 0.91
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from advlab._io import atomic_write_group, committed_path, read_json, recover_group
from advlab import __version__
from advlab.models.wrappers import Normalize
from advlab.models.zoo import ARCHITECTURES, architecture_options, build, list_architectures

__all__ = ["ModelCard", "save", "load", "load_card", "code_revision"]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
CARD_FORMAT_VERSION = 1

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../advlab


def code_revision(*, source_dir: str | os.PathLike[str] | None = None) -> str:
    """Return the git commit (``rev-parse HEAD``) of the advlab source tree, or ``"unknown"``.

    ``"unknown"`` when git is missing, the package is not inside a git checkout of advlab (e.g. an
    installed wheel sitting inside some other repository), the repository has no commit yet, or
    anything else goes wrong. Never raises.

    Args:
        source_dir: the ``advlab`` package directory; defaults to the one this module lives in.
    """
    try:
        package_dir = Path(source_dir).resolve() if source_dir is not None else _PACKAGE_DIR

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(package_dir), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            return done.stdout.strip()

        toplevel = Path(git("rev-parse", "--show-toplevel")).resolve()
        # Only trust the repository if it is advlab's own (src layout or flat layout).
        if package_dir not in (toplevel / "src" / "advlab", toplevel / "advlab"):
            return "unknown"
        sha = git("rev-parse", "HEAD")
        return sha if _SHA_RE.match(sha) else "unknown"
    except Exception:  # noqa: BLE001 -- documented to never raise
        return "unknown"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is and where it came from; stored as ``card.json``.

    Attributes:
        architecture: registry name, one of :func:`~advlab.models.zoo.list_architectures`.
        in_shape: the shape of one input the architecture was built for: ``(C, H, W)`` for images,
            ``(D,)`` for a table, ``(C, T)`` for signals.
        num_classes: number of logits.
        mean, std: per-channel normalisation applied inside the model (a
            :class:`~advlab.models.wrappers.Normalize` wrapper), or both ``None``.
        dataset: name of the training data set.
        class_names: one name per class, or ``None``.
        clean_accuracy: accuracy on the clean test set, in ``[0, 1]``, or ``None``.
        seed: seed used for initialisation and training.
        training: training settings (epochs, lr, ...); must be JSON-serialisable.
        options: the architecture's own keyword arguments (``hidden`` widths, ...; see
            :func:`~advlab.models.zoo.architecture_options`), JSON-ready; ``{}`` for the defaults of
            an architecture that has none. Cards written before this field rebuild the defaults.
        advlab_version: version of advlab that wrote the checkpoint.
        code_revision: git commit of the advlab source, or ``"unknown"``.
        created: UTC timestamp in ISO 8601.
    """

    architecture: str
    in_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dataset: str | None = None
    class_names: tuple[str, ...] | None = None
    clean_accuracy: float | None = None
    seed: int | None = None
    training: Mapping[str, Any] = field(default_factory=dict, hash=False)
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    advlab_version: str = __version__
    code_revision: str = field(default_factory=code_revision)
    created: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        def set_(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.architecture, str) or not self.architecture:
            raise ValueError(f"ModelCard: architecture must be a non-empty string, got {self.architecture!r}")
        dims = self.in_shape
        if (isinstance(dims, (str, bytes)) or not hasattr(dims, "__len__")
                or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims)):
            # (8.7 used to become 8)
            raise ValueError(f"ModelCard: in_shape must be one to three integers, got {self.in_shape!r}")
        in_shape = tuple(int(d) for d in dims)
        if not 1 <= len(in_shape) <= 3 or min(in_shape) < 1:
            raise ValueError(f"ModelCard: in_shape must be one to three positive integers ((D,), (C, T) or "
                             f"(C, H, W)), got {self.in_shape!r}")
        set_("in_shape", in_shape)
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 2:
            raise ValueError(f"ModelCard: num_classes must be an integer >= 2, got {self.num_classes!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("ModelCard: give both mean and std, or neither")
        if self.mean is not None and self.std is not None:
            mean = tuple(float(v) for v in self.mean)
            std = tuple(float(v) for v in self.std)
            if len(mean) != in_shape[0] or len(std) != in_shape[0]:
                raise ValueError(
                    f"ModelCard: mean and std need {in_shape[0]} values (one per channel), "
                    f"got {len(mean)} and {len(std)}"
                )
            if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(s) and s > 0 for s in std):
                raise ValueError(f"ModelCard: mean must be finite and std finite and > 0, got {mean}, {std}")
            set_("mean", mean)
            set_("std", std)
        if self.class_names is not None:
            names = tuple(str(n) for n in self.class_names)
            if len(names) != self.num_classes:
                raise ValueError(
                    f"ModelCard: {len(names)} class_names for {self.num_classes} classes"
                )
            set_("class_names", names)
        if self.clean_accuracy is not None:
            acc = float(self.clean_accuracy)
            if not 0.0 <= acc <= 1.0:
                raise ValueError(f"ModelCard: clean_accuracy must be in [0, 1], got {acc}")
            set_("clean_accuracy", acc)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"ModelCard: seed must be an int or None, got {self.seed!r}")
        if not isinstance(self.training, Mapping):
            raise ValueError(f"ModelCard: training must be a mapping, got {type(self.training).__name__}")
        set_("training", dict(self.training))
        try:
            json.dumps(self.training, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ModelCard: training settings must be JSON-serialisable: {exc}") from None
        if not isinstance(self.options, Mapping) or not all(isinstance(k, str) for k in self.options):
            raise ValueError(f"ModelCard: options must be a mapping with string keys, got {self.options!r}")
        try:  # tuples become lists: the card compares equal to the one read back
            set_("options", json.loads(json.dumps(dict(self.options), allow_nan=False)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ModelCard: architecture options must be JSON-serialisable: {exc}") from None

    @property
    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild the architecture: ``in_shape``, ``num_classes`` and its options."""
        return {"in_shape": self.in_shape, "num_classes": self.num_classes, **self.options}

    @property
    def normalization(self) -> dict[str, list[float]] | None:
        """``{"mean": [...], "std": [...]}`` or ``None`` when the model has no Normalize wrapper."""
        if self.mean is None or self.std is None:
            return None
        return {"mean": list(self.mean), "std": list(self.std)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists) with a ``format_version`` entry."""
        out: dict[str, Any] = {"format_version": CARD_FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, strict: bool = False) -> ModelCard:
        """Inverse of :meth:`to_dict`.

        Unknown keys raise :class:`ValueError` when ``strict``, else they are ignored with a warning
        (cards written by a newer advlab stay readable). Missing required keys always raise.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        version = data.get("format_version", CARD_FORMAT_VERSION)
        if version != CARD_FORMAT_VERSION:
            raise ValueError(
                f"ModelCard: card format_version {version!r} is not supported "
                f"(this advlab reads version {CARD_FORMAT_VERSION})"
            )
        unknown = sorted(set(data) - names - {"format_version"})
        if unknown and strict:
            raise ValueError(
                f"ModelCard: unknown fields {unknown}; valid fields: {sorted(names)}"
            )
        if unknown:
            logger.warning("ModelCard: ignoring unknown card fields %s", unknown)
        missing = [n for n in ("architecture", "in_shape", "num_classes") if n not in data]
        if missing:
            raise ValueError(f"ModelCard: card lacks required fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})


def _short_float32(value: float) -> float:
    """The shortest decimal that rounds to the same float32 (``0.4`` rather than ``0.4000000059604645``).

    Normalize keeps mean/std in float32; writing them this way keeps the card readable and loading
    it back gives bit-identical buffers.
    """
    return float(str(np.float32(value)))


def _inner_and_norm(model: nn.Module) -> tuple[nn.Module, Normalize | None]:
    if isinstance(model, Normalize):
        return model.model, model
    return model, None


def _architecture_name(inner: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(inner) is cls:
            return name
    raise TypeError(
        f"save: {type(inner).__name__} is not a registered architecture "
        f"({', '.join(list_architectures())}), optionally wrapped in Normalize; "
        "register it in advlab.models.zoo.ARCHITECTURES to checkpoint it"
    )


def _complete_card(model: nn.Module, card: Mapping[str, Any] | ModelCard) -> ModelCard:
    """Fill what the model itself knows (architecture, shapes, normalisation) and check agreement."""
    inner, norm = _inner_and_norm(model)
    arch = _architecture_name(inner)
    facts: dict[str, Any] = {
        "architecture": arch,
        "in_shape": tuple(inner.in_shape),
        "num_classes": int(inner.num_classes),
        "mean": tuple(_short_float32(v) for v in norm.mean.tolist()) if norm is not None else None,
        "std": tuple(_short_float32(v) for v in norm.std.tolist()) if norm is not None else None,
        "options": architecture_options(inner),
    }
    if isinstance(card, ModelCard):
        given = {k: getattr(card, k) for k in facts}
        result = card
    elif isinstance(card, Mapping):
        given = {k: card[k] for k in facts if k in card}
        result = ModelCard.from_dict({**facts, **dict(card)}, strict=True)
    else:
        raise TypeError(f"save: card must be a dict or a ModelCard, got {type(card).__name__}")
    for key, value in given.items():
        expected = facts[key]
        actual = getattr(result, key)
        if key in ("mean", "std") and actual is not None and expected is not None:
            agree = len(actual) == len(expected) and all(
                math.isclose(a, e, rel_tol=1e-6, abs_tol=1e-7) for a, e in zip(actual, expected)
            )
        else:
            agree = actual == expected
        if not agree:
            raise ValueError(
                f"save: card says {key}={value!r} but the model has {key}={expected!r}; "
                "fix the card or leave the field out to take it from the model"
            )
    return result


def holds_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether directory ``path`` holds a checkpoint (or part of one), after finishing a save
    that a crash interrupted there: a committed weights + card pair is moved into place, an
    uncommitted one discarded, so that a writer never finds (or leaves) pending files."""
    directory = Path(path)
    if not directory.is_dir():
        return False
    recover_group(directory)
    return (directory / WEIGHTS_FILE).exists() or (directory / CARD_FILE).exists()


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    card: Mapping[str, Any] | ModelCard,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a checkpoint directory ``path/`` (``model.safetensors`` + ``card.json``).

    ``model`` is a registered zoo architecture, optionally wrapped in
    :class:`~advlab.models.wrappers.Normalize`. ``card`` is a :class:`ModelCard` or a dict of its
    fields; from a dict, ``architecture``, ``in_shape``, ``num_classes``, ``mean`` and ``std`` may be
    left out and are taken from the model. Either way they must agree with the model.

    Returns the checkpoint directory. Raises :class:`FileExistsError` if it already holds a
    checkpoint and ``overwrite`` is false.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save: model must be a torch.nn.Module, got {type(model).__name__}")
    full_card = _complete_card(model, card)
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save: {directory} exists and is not a directory")
    if not overwrite and holds_checkpoint(directory):
        raise FileExistsError(f"save: {directory} already holds a checkpoint; pass overwrite=True")
    directory.mkdir(parents=True, exist_ok=True)

    inner, _ = _inner_and_norm(model)
    # Own CPU copies: contiguous, no shared storage, the model itself stays where it is.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in inner.state_dict().items()}
    card_text = json.dumps(full_card.to_dict(), indent=2, allow_nan=False) + "\n"

    # Weights and card as one unit: a crash at any moment leaves the old pair or the new pair.
    atomic_write_group(directory, {
        WEIGHTS_FILE: lambda tmp: save_file(state, tmp, metadata={"format": "pt",
                                                                  "architecture": full_card.architecture}),
        CARD_FILE: lambda tmp: Path(tmp).write_text(card_text, encoding="utf-8"),
    })
    logger.info("saved %s checkpoint to %s", full_card.architecture, directory)
    return directory


def _resolve(path: str | os.PathLike[str], *, need_weights: bool = True) -> tuple[Path, Path]:
    """Return ``(weights_path, card_path)`` for a checkpoint directory or one of its files."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}: no such directory or file")
    if p.is_dir():
        directory, weights, card = p, committed_path(p, WEIGHTS_FILE), committed_path(p, CARD_FILE)
    elif p.suffix == ".safetensors":
        weights = committed_path(p.parent, WEIGHTS_FILE) if p.name == WEIGHTS_FILE else p
        directory, card = p.parent, committed_path(p.parent, CARD_FILE)
    elif p.suffix == ".json":
        card = committed_path(p.parent, CARD_FILE) if p.name == CARD_FILE else p
        directory, weights = p.parent, committed_path(p.parent, WEIGHTS_FILE)
    else:
        raise ValueError(
            f"{p} is not a checkpoint: give its directory, its .safetensors file or its {CARD_FILE}"
        )
    for needed in (card, weights) if need_weights else (card,):
        if not needed.is_file():
            raise FileNotFoundError(f"checkpoint {directory} is incomplete: {needed} is missing")
    return weights, card


def _read_card(card_path: Path) -> ModelCard:
    data = read_json(card_path, "checkpoint card")
    if not isinstance(data, dict):
        raise ValueError(f"checkpoint card {card_path} must hold a JSON object, got {type(data).__name__}")
    try:
        return ModelCard.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint card {card_path} is invalid: {exc}") from None


def load_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read the :class:`ModelCard` of a checkpoint (directory, its ``.safetensors`` or its card)."""
    return _read_card(_resolve(path, need_weights=False)[1])


def load(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a checkpointed model and return it in eval mode.

    Accepts the checkpoint directory or the ``model.safetensors`` inside it (its ``card.json`` must
    sit next to it). The architecture comes from the registry, wrapped in
    :class:`~advlab.models.wrappers.Normalize` when the card has a normalisation; weights are loaded
    strictly with safetensors. The card is attached as ``model.advlab_card``.

    Args:
        path: checkpoint directory or weights file.
        device: where to put the weights (default CPU).

    Raises:
        FileNotFoundError: missing directory, weights or card.
        ValueError: corrupt card or weights, unknown architecture, missing/unexpected keys or
            shape mismatches (the message names the checkpoint).
    """
    weights_path, card_path = _resolve(path)
    card = _read_card(card_path)
    if card.architecture not in ARCHITECTURES:
        raise ValueError(
            f"checkpoint {card_path.parent}: unknown architecture {card.architecture!r}; "
            f"valid names: {', '.join(list_architectures())}"
        )
    # built on the meta device: no memory (a card may claim in_shape 1e6 x 1e6 or 1e9 classes) and
    # no draw from the global RNG (loading a model must not change the user's random stream)
    try:
        with torch.device("meta"):
            inner = build(card.architecture, **card.arch_kwargs)
    except (TypeError, ValueError) as exc:  # an option this advlab's architecture does not take, or a bad one
        raise ValueError(f"checkpoint {card_path.parent}: cannot rebuild {card.architecture!r} from its card: "
                         f"{exc}") from None
    expected = {k: tuple(v.shape) for k, v in inner.state_dict().items()}
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {weights_path} is not a readable safetensors file: {exc}") from None
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f"{k}: checkpoint {found[k]} vs model {expected[k]}"
                  for k in sorted(set(found) & set(expected)) if found[k] != expected[k]]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches [{'; '.join(mismatched)}]")
        raise ValueError(
            f"checkpoint {weights_path} does not fit architecture {card.architecture!r} "
            f"{card.arch_kwargs}: {', '.join(parts)}"
        )
    try:  # the shapes fit the file, so this allocates what the file holds
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {weights_path} is not a readable safetensors file: {exc}") from None
    dtypes = {k: v.dtype for k, v in inner.state_dict().items()}
    retyped = [f"{k}: checkpoint {state[k].dtype} vs model {dtypes[k]}" for k in sorted(state)
               if state[k].dtype != dtypes[k] and not (state[k].is_floating_point() and dtypes[k].is_floating_point)]
    if retyped:  # load_state_dict would cast them (int32 bits read as numbers, say) without a word; a
        # float of another precision (a float64 model's checkpoint) is cast as before
        raise ValueError(
            f"checkpoint {weights_path} does not fit architecture {card.architecture!r}: dtype mismatches "
            f"[{'; '.join(retyped)}]"
        )
    inner = inner.to_empty(device="cpu")
    inner.load_state_dict(state, strict=True)
    model: nn.Module = inner
    if card.mean is not None and card.std is not None:
        model = Normalize(inner, mean=card.mean, std=card.std)
    model.to(device)
    model.eval()
    model.advlab_card = card
    logger.info("loaded %s checkpoint from %s", card.architecture, weights_path.parent)
    return model
