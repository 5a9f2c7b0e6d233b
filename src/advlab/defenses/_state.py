"""Training checkpoints on disk: model, optimiser and generator state as safetensors plus a JSON
``state.json`` that commits them (written last, atomically; a crash leaves the previous epoch's
pair). Loading never runs code: tensors come from safetensors, the rest from JSON, and the
tensors' SHA-256 must match what the JSON recorded."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from advlab._io import atomic_write, atomic_write_text, clean_orphans, read_json


logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_FORMAT = "advlab-training-state"
STATE_VERSION = 1


def _atomic_save_tensors(path: Path, tensors: dict[str, Tensor]) -> str:
    """Write ``tensors`` to ``path`` atomically; return the file's SHA-256."""
    digest: list[str] = []

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata={"format": "pt"})
        digest.append(hashlib.sha256(Path(tmp).read_bytes()).hexdigest())

    atomic_write(path, write)
    return digest[0]


def cpu_copy(t: Tensor) -> Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Optimiser state: tensors (``optim.<param>.<key>``) for safetensors, the rest as JSON."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = cpu_copy(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, scalars


def optimizer_restore(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor],
                       scalars: Mapping[str, Mapping[str, Any]]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in scalars.items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


def read_training_state(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON half of a training checkpoint (epoch, history, recipe, settings), or ``None``."""
    path = Path(checkpoint_dir) / STATE_FILE
    if not path.is_file():
        return None
    data = read_json(path, "training checkpoint")
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not an advlab training checkpoint (format {STATE_FORMAT!r})")
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: training checkpoint version {data.get('version')!r} is not supported "
                         f"(this advlab reads version {STATE_VERSION})")
    problem = _state_problem(data)
    if problem:
        raise ValueError(f"training checkpoint {path} is corrupt: {problem}")
    return data


def _is_index(text: Any) -> bool:
    return isinstance(text, str) and text.isascii() and text.isdigit()


def _state_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a state file, or ``None`` (the format and version were
    checked; the tensors file name is checked where it is opened)."""
    epoch = data.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch must be a whole number >= 0, got {epoch!r}"
    if not isinstance(data.get("sha256"), str):
        return f"sha256 must be a string, got {data.get('sha256')!r}"
    for key in ("recipe", "settings", "optimizer_scalars"):
        if not isinstance(data.get(key, {}), dict):
            return f"{key} must be a JSON object, got {type(data[key]).__name__}"
    history = data.get("history")
    if (not isinstance(history, list) or len(history) != epoch
            or any(not isinstance(h, dict) or h.get("epoch") != i + 1 for i, h in enumerate(history))):
        return f"its history must list epochs 1 to {epoch}, one object each"
    for pid, entries in data.get("optimizer_scalars", {}).items():
        if not _is_index(pid) or not isinstance(entries, dict):
            return f"optimizer_scalars must map parameter indices to objects, got {pid!r}: {entries!r}"
    return None


def _optimizer_template(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The state ``opt``'s kind keeps per parameter (``step``, ``exp_avg``...), from one step of
    a throwaway twin on a 2-element parameter: a 0-d tensor stays 0-d, a 2-element one is shaped
    like its parameter."""
    probe = torch.zeros(2, requires_grad=True)
    accepted = inspect.signature(type(opt).__init__).parameters
    twin = type(opt)([probe], **{k: v for k, v in opt.defaults.items() if k in accepted})
    probe.grad = torch.zeros(2)
    twin.step()
    return dict(twin.state[probe])


def check_restorable(where: Path, tensors: Mapping[str, Tensor], scalars: Mapping[str, Mapping[str, Any]],
                     opt: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """Refuse optimiser and generator state that does not fit ``opt`` and ``generator`` (torch
    would raise from inside, or only at the next optimiser step): parameter indices out of range,
    missing or unexpected entries, tensors of another shape or dtype."""
    params = [p for group in opt.param_groups for p in group["params"]]
    template = _optimizer_template(opt)
    found: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            pid, _, key = name[len("optim."):].partition(".")
            found.setdefault(pid, {})[key] = value
    for pid, entries in scalars.items():
        found.setdefault(pid, {}).update(entries)
    for pid in found:
        if not _is_index(pid) or int(pid) >= len(params):
            raise ValueError(f"training checkpoint {where} holds optimiser state for parameter {pid!r}; "
                             f"the model has {len(params)} parameters")
    for pid, entries in found.items():
        if set(entries) != set(template):
            raise ValueError(f"training checkpoint {where}: the optimiser state of parameter {pid} has "
                             f"{sorted(entries)}, expected {sorted(template)}")
        param = params[int(pid)]
        for key, ref in template.items():
            value = entries[key]
            if isinstance(ref, Tensor):  # 0-d like the twin's (step), or shaped like the parameter
                shape, dtype = ((), ref.dtype) if ref.ndim == 0 else (tuple(param.shape), param.dtype)
                fits = isinstance(value, Tensor) and value.dtype == dtype and tuple(value.shape) == shape
            else:
                fits = type(value) is type(ref)
            if not fits:
                raise ValueError(f"training checkpoint {where}: optimiser state {key!r} of parameter {pid} "
                                 f"does not fit the optimiser")
    state, ref = tensors.get("generator"), generator.get_state()
    if not isinstance(state, Tensor) or state.dtype != ref.dtype or state.shape != ref.shape:
        raise ValueError(f"training checkpoint {where} lacks a random generator state of {ref.numel()} bytes")


def write_checkpoint(directory: Path, *, model: nn.Module, opt: torch.optim.Optimizer,
                      generator: torch.Generator, epoch: int, result: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    clean_orphans(directory)
    tensors = {f"model.{k}": cpu_copy(v) for k, v in model.state_dict().items()}
    opt_tensors, opt_scalars = _optimizer_split(opt)
    tensors.update(opt_tensors)
    tensors["generator"] = generator.get_state().clone()
    weights_name = f"state-epoch{epoch:04d}.safetensors"
    digest = _atomic_save_tensors(directory / weights_name, tensors)
    state = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "epoch": epoch,
        "tensors": weights_name, "sha256": digest,
        "recipe": result.recipe, "settings": result.settings, "history": result.history,
        "optimizer_scalars": opt_scalars,
    }
    atomic_write_text(directory / STATE_FILE, json.dumps(state, indent=1, allow_nan=False) + "\n")
    for old in directory.glob("state-epoch*.safetensors"):  # committed: older tensors are stale
        if old.name != weights_name:
            old.unlink(missing_ok=True)


def _diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{k}: checkpoint {saved.get(k, '<absent>')!r} vs now {now.get(k, '<absent>')!r}"
            for k in keys if saved.get(k, "<absent>") != now.get(k, "<absent>")]


def load_checkpoint(directory: Path, *, recipe_card: dict[str, Any], settings: dict[str, Any],
                     epochs: int) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    state = read_training_state(directory)
    if state is None:
        return None
    where = directory / STATE_FILE
    recipe_diff = _diff(state.get("recipe", {}), recipe_card)
    if recipe_diff:
        raise ValueError(
            f"cannot resume from {where}: it was written by a different recipe "
            f"({'; '.join(recipe_diff)}); use another checkpoint_dir or resume=False to start over"
        )
    settings_diff = _diff(state.get("settings", {}), settings)
    if settings_diff:
        raise ValueError(
            f"cannot resume from {where}: it was written with different settings "
            f"({'; '.join(settings_diff)}); use another checkpoint_dir or resume=False to start over"
        )
    done = state["epoch"]
    if done > epochs:
        raise ValueError(f"cannot resume from {where}: it has already trained {done} epochs, more "
                         f"than the {epochs} asked for")
    name = state.get("tensors")
    # a bare file name inside the checkpoint's folder: a state file must not point elsewhere
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"training checkpoint {where} names tensors {name!r}; expected a file name "
                         "inside its folder")
    tensor_path = directory / name
    if not tensor_path.is_file():
        raise ValueError(f"training checkpoint {where} names {tensor_path.name}, which is missing")
    digest = hashlib.sha256(tensor_path.read_bytes()).hexdigest()
    if digest != state["sha256"]:
        raise ValueError(f"training checkpoint {tensor_path} is corrupt (SHA-256 differs from {where})")
    try:  # the digest only says the file is the one the state file names, not what it holds
        return state, load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"training checkpoint {tensor_path} is not a readable safetensors file: {exc}") from None
