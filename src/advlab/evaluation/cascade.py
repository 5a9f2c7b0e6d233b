"""Worst-case evaluation with a cascade of attacks, resumable from a per-point record.

A :class:`Cascade` runs its attacks in turn, each on the points still robust after the ones before
it (as AutoAttack does): a point counts as broken by the *first* attack that breaks it, whose
adversarial input is kept. The clean pass decides which points are attacked at all (the correctly
classified ones); robust accuracy is over all ``n`` points, every summary states both denominators.

Each attack's claimed successes are checked, not trusted: a point is broken only if its returned
input lies in the threat model and the model misclassifies it (one forward pass per batch).

With ``checkpoint_path`` the per-point record is written after every (attack, batch), as
``record.safetensors`` (tensors) plus ``record.json`` (metadata), each atomically (a temporary file
then :func:`os.replace`). Running again with the same path, model, data and attacks resumes after
the last finished batch; anything else refuses to resume rather than mixing two evaluations.
Every batch's random generator is seeded from (run seed, attack, batch), so a resumed evaluation
equals an uninterrupted one.

Example:
    >>> result = Cascade(strong_attacks(eps=8 / 255)).run(model, x, y, checkpoint_path="eval/")
    >>> print(result.summary())
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab._checks import check_inputs, check_model, eval_mode
from advlab.evaluation.robustness import WORST_CASE, EvalRow, Evaluation, provenance
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

RECORD_TENSORS = "record.safetensors"
RECORD_JSON = "record.json"
FORMAT = "advlab-cascade-record/1"
NOT_BROKEN = -1


def _config_str(attack: Any) -> str:
    from advlab.attacks._base import config_repr
    return config_repr(attack) if dataclasses.is_dataclass(attack) else repr(attack)


def _default_name(attack: Any) -> str:
    name = type(attack).__name__
    loss = getattr(attack, "loss", None)
    return f"{name}-{loss.upper()}" if name == "APGD" and isinstance(loss, str) else name


@dataclass(frozen=True)
class CascadeResult:
    """The per-point outcome of a cascade over ``n`` points.

    Attributes:
        names: the attacks' names, in cascade order.
        configs: each attack's configuration (``repr``).
        correct: ``(n,)`` bool, the model classifies the clean point correctly.
        broken_by: ``(n,)`` int64, the index into ``names`` of the attack that first broke the
            point, ``-1`` if none did (always ``-1`` for points misclassified when clean).
        x_adv: ``(n, *)`` the breaking attack's input for broken points, the clean input otherwise.
        num_grads: ``(n,)`` int64, forward+backward passes spent on each point over all attacks.
        stage_seconds: wall-clock seconds per attack (summed over resumed sessions).
        seconds: total seconds, the clean pass included.
        threat: the threat model shared by the attacks (``None`` if they do not declare one).
        provenance: versions, code revision, seed, batch size, attack configurations.
    """

    names: tuple[str, ...]
    configs: tuple[str, ...]
    correct: Tensor
    broken_by: Tensor
    x_adv: Tensor = field(repr=False)
    num_grads: Tensor = field(repr=False)
    stage_seconds: tuple[float, ...]
    seconds: float
    threat: ThreatModel | None
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def broken(self) -> Tensor:
        """``(n,)`` bool, some attack broke the (correctly classified) point."""
        return self.broken_by >= 0

    @property
    def robust(self) -> Tensor:
        """``(n,)`` bool, correctly classified and broken by no attack."""
        return self.correct & ~self.broken

    @property
    def n_robust(self) -> int:
        return int(self.robust.sum())

    @property
    def clean_accuracy(self) -> float:
        return self.n_correct / self.n

    @property
    def robust_accuracy(self) -> float:
        """Robust accuracy over all ``n`` points (the attacks ran on the ``n_correct`` ones)."""
        return self.n_robust / self.n

    @property
    def stage_robust_accuracy(self) -> tuple[float, ...]:
        """Robust accuracy over ``n`` after each attack of the cascade (non-increasing)."""
        out = []
        for s in range(len(self.names)):
            broken = (self.broken_by >= 0) & (self.broken_by <= s)
            out.append(int((self.correct & ~broken).sum()) / self.n)
        return tuple(out)

    @property
    def broken_by_name(self) -> list[str | None]:
        """Per point, the name of the attack that broke it, or ``None``."""
        return [self.names[i] if i >= 0 else None for i in self.broken_by.tolist()]

    def summary(self) -> str:
        """Markdown: robust accuracy after each attack, with both denominators."""
        threat = (f"{self.threat.norm} ε={self.threat.eps:g}; " if self.threat is not None else "")
        lines = [f"{threat}clean accuracy {100 * self.clean_accuracy:.2f}% ({self.n_correct}/{self.n}); "
                 f"robust accuracy {100 * self.robust_accuracy:.2f}% ({self.n_robust}/{self.n}) over all "
                 f"n = {self.n} points; attacks ran only on the {self.n_correct} correctly classified "
                 f"points; {self.seconds:.1f} s.", "",
                 "| after attack | robust (of n) | robust accuracy | broken here | seconds |",
                 "|---|---:|---:|---:|---:|"]
        for s, (name, acc) in enumerate(zip(self.names, self.stage_robust_accuracy)):
            here = int((self.broken_by == s).sum())
            lines.append(f"| {name} | {round(acc * self.n)}/{self.n} | {100 * acc:.2f}% | {here} | "
                         f"{self.stage_seconds[s]:.1f} |")
        return "\n".join(lines) + "\n"

    def rows(self) -> list[EvalRow]:
        """One :class:`EvalRow` per attack, cumulative (robust after it and every attack before),
        the last named ``worst-case``; with ``Evaluation(rows=result.rows())`` they render like
        :func:`advlab.evaluation.evaluate`'s rows."""
        if self.threat is None:
            raise ValueError("rows() needs attacks that declare eps and norm")
        out = []
        for s, name in enumerate(self.names):
            broken = (self.broken_by >= 0) & (self.broken_by <= s)
            n_broken = int(broken.sum())
            last = s == len(self.names) - 1
            out.append(EvalRow(
                attack=WORST_CASE if last and len(self.names) > 1 else name, eps=self.threat.eps,
                norm=self.threat.norm, n=self.n, n_correct=self.n_correct,
                n_robust=self.n_correct - n_broken, clean_accuracy=self.clean_accuracy,
                robust_accuracy=(self.n_correct - n_broken) / self.n,
                success_rate=n_broken / self.n_correct if self.n_correct else float("nan"),
                median_norm=float("nan"), mean_norm=float("nan"),
                grads=int(self.num_grads.sum()) if last else 0,
                seconds=float(sum(self.stage_seconds[:s + 1])),
                config="cascade: " + " → ".join(self.names[:s + 1])))
        return out

    def to_evaluation(self) -> Evaluation:
        return Evaluation(rows=self.rows(), provenance=dict(self.provenance),
                          per_point={"correct": self.correct, "broken": self.broken})

    def to_dict(self) -> dict[str, Any]:
        """Scalars for JSON results (per-point tensors are in the checkpoint record)."""
        return {"names": list(self.names), "configs": list(self.configs), "n": self.n,
                "n_correct": self.n_correct, "n_robust": self.n_robust,
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "stage_robust_accuracy": list(self.stage_robust_accuracy),
                "broken_per_attack": [int((self.broken_by == s).sum()) for s in range(len(self.names))],
                "stage_seconds": list(self.stage_seconds), "seconds": self.seconds,
                "grads": int(self.num_grads.sum()), "provenance": self.provenance}


# -- the record on disk ----------------------------------------------------------------------


def _digest_tensor(h: "hashlib._Hash", t: Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():  # (reshape first: a 0-d tensor cannot be viewed as bytes)
        h.update(t.to("cpu", copy=True).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def _fingerprint(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, str]:
    hx, hm = hashlib.sha256(), hashlib.sha256()
    _digest_tensor(hx, x)
    _digest_tensor(hx, y)
    for k, v in model.state_dict().items():
        hm.update(k.encode())
        _digest_tensor(hm, v)
    return {"data_sha256": hx.hexdigest(), "model_sha256": hm.hexdigest()}


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_record(directory: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Tensors first, then the JSON; the tensors' header carries the same metadata, so a crash
    between the two replacements leaves a record that still loads consistently."""
    from safetensors.torch import save_file

    text = json.dumps(meta, indent=1, allow_nan=False)
    cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    _atomic_write(directory / RECORD_TENSORS, lambda p: save_file(cpu, p, metadata={"record": text}))

    def write_json(p: str) -> None:
        with open(p, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")

    _atomic_write(directory / RECORD_JSON, write_json)


def _load_record(directory: Path, device: torch.device) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    from safetensors import safe_open

    tensors_path = directory / RECORD_TENSORS
    if not tensors_path.exists():
        return None
    try:
        with safe_open(str(tensors_path), framework="pt", device="cpu") as fh:
            meta = json.loads((fh.metadata() or {})["record"])
            tensors = {k: fh.get_tensor(k).to(device) for k in fh.keys()}
    except Exception as err:  # a corrupt record must not be silently ignored
        raise ValueError(f"the cascade record {tensors_path} is unreadable ({err}); delete "
                         f"{directory} to start the evaluation afresh") from err
    json_path = directory / RECORD_JSON
    try:
        json_meta = json.loads(json_path.read_text(encoding="utf-8"))
        if json_meta.get("saves") != meta.get("saves"):
            log.warning("%s is one save behind %s (interrupted between the two writes); using the "
                        "latter", json_path, tensors_path)
    except (OSError, json.JSONDecodeError):
        log.warning("%s is missing or unreadable; using the metadata in %s", json_path, tensors_path)
    return tensors, meta


def _batch_seed(base: int, stage: int, batch: int) -> int:
    digest = hashlib.sha256(f"{base}:{stage}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# -- the cascade ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cascade:
    """Attacks run in turn on the points still robust; worst case per point.

    Args:
        attacks: a ``{name: attack}`` mapping or a sequence of attacks (named after their class,
            ``APGD-CE``/``APGD-DLR`` for APGD). An attack is any callable
            ``attack(model, x, y, *, generator) -> AttackResult``: the white-box attacks of
            :mod:`advlab.attacks`, and later the black-box ones, which take the same call. Attacks
            that declare ``eps``/``norm``/``bounds`` must agree on them.

    Example:
        >>> cascade = Cascade({"apgd-ce": APGD(eps=0.1), "apgd-t": APGDT(eps=0.1)})
        >>> result = cascade.run(model, x, y, batch_size=500, checkpoint_path="runs/strong")
        >>> result.robust_accuracy, result.stage_robust_accuracy, result.broken_by_name[:5]
    """

    attacks: Mapping[str, Any] | Sequence[Any]

    def __post_init__(self) -> None:
        items = (list(self.attacks.items()) if isinstance(self.attacks, Mapping)
                 else [(None, a) for a in self.attacks])
        if not items:
            raise ValueError("a Cascade needs at least one attack")
        named: list[tuple[str, Any]] = []
        for name, attack in items:
            if not callable(attack):
                raise TypeError(f"cascade member {name or len(named)} is a {type(attack).__name__}, not "
                                "an attack (a callable attack(model, x, y, *, generator))")
            key = str(name) if name is not None else _default_name(attack)
            base, i = key, 2
            while key in {k for k, _ in named}:
                key, i = f"{base}#{i}", i + 1
            named.append((key, attack))
        for attr in ("eps", "norm", "bounds"):
            values = {repr(_canonical(attr, getattr(a, attr))) for _, a in named if hasattr(a, attr)}
            if len(values) > 1:
                raise ValueError(f"the cascade's attacks disagree on {attr}: {sorted(values)}; a worst "
                                 "case per point needs one threat model")
        object.__setattr__(self, "attacks", tuple(named))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.attacks)  # type: ignore[misc]

    def threat(self) -> ThreatModel | None:
        for _, a in self.attacks:  # type: ignore[misc]
            if all(hasattr(a, k) for k in ("eps", "norm")):
                return ThreatModel(norm=a.norm, eps=a.eps, bounds=getattr(a, "bounds", (0.0, 1.0)))
        return None

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256,
            generator: torch.Generator | None = None, checkpoint_path: str | os.PathLike[str] | None = None,
            progress: bool = True, callback: Callable[[dict[str, Any]], None] | None = None,
            ) -> CascadeResult:
        """Run the cascade on ``x`` ``(N, *)``, ``y`` ``(N,)``.

        Args:
            batch_size: points per attack call.
            generator: one draw from it seeds the whole run (``None``: seed 0); each (attack, batch)
                gets its own generator derived from that seed, so results do not depend on which
                batches ran in this session.
            checkpoint_path: a directory for the per-point record; resumes from it when present.
            progress: show a progress bar per attack.
            callback: called after each (attack, batch) is recorded (and saved), with
                ``{"stage", "name", "batch", "num_batches", "n_robust"}``; an exception it raises
                interrupts the run, which a later call with the same ``checkpoint_path`` resumes.
        """
        check_model(model)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        threat = self.threat()
        bounds = threat.bounds if threat is not None else (0.0, 1.0)
        check_inputs(model, x, y, bounds=bounds, generator=generator)
        x, y = x.detach(), y.detach()
        base_seed = 0 if generator is None else int(
            torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        names = self.names
        configs = tuple(_config_str(a) for _, a in self.attacks)  # type: ignore[misc]
        identity = {"format": FORMAT, "attacks": list(names), "configs": list(configs),
                    "n": int(x.shape[0]), "input_shape": list(x.shape[1:]), "batch_size": batch_size,
                    "seed": base_seed, **_fingerprint(model, x, y)}
        directory = Path(checkpoint_path) if checkpoint_path is not None else None
        record = None
        if directory is not None:
            if directory.exists() and not directory.is_dir():
                raise NotADirectoryError(f"checkpoint_path {directory} exists and is not a directory")
            directory.mkdir(parents=True, exist_ok=True)
            record = _load_record(directory, x.device)
        t_start = time.perf_counter()
        if record is not None:
            tensors, meta = record
            differ = sorted(k for k in identity if meta.get("identity", {}).get(k) != identity[k])
            if differ:
                raise ValueError(f"the record in {directory} belongs to another evaluation (it differs "
                                 f"in: {', '.join(differ)}); use another checkpoint_path or delete it")
            correct, broken_by = tensors["correct"], tensors["broken_by"]
            x_adv, num_grads = tensors["x_adv"].to(x.dtype), tensors["num_grads"]
            stage, next_batch = meta["stage"], meta["batch"]
            stage_seconds = list(meta["stage_seconds"])
            clean_seconds, saves = meta["clean_seconds"], meta["saves"]
            log.info("resuming the cascade from %s at attack %d/%d, batch %d", directory,
                     min(stage + 1, len(names)), len(names), next_batch)
        else:
            with eval_mode(model), torch.no_grad():
                pred = torch.cat([model(x[i:i + batch_size]).argmax(dim=1)
                                  for i in range(0, x.shape[0], batch_size)])
            correct = pred == y
            broken_by = torch.full_like(y, NOT_BROKEN, dtype=torch.long)
            x_adv, num_grads = x.clone(), torch.zeros_like(y, dtype=torch.long)
            stage, next_batch, stage_seconds, saves = 0, 0, [0.0] * len(names), 0
            clean_seconds = time.perf_counter() - t_start

        def save() -> None:
            nonlocal saves
            if directory is None:
                return
            saves += 1
            meta = {"identity": identity, "stage": stage, "batch": next_batch, "saves": saves,
                    "stage_seconds": stage_seconds, "clean_seconds": clean_seconds,
                    "names": list(names), "n_correct": int(correct.sum()),
                    "n_robust": int((correct & (broken_by < 0)).sum())}
            _save_record(directory, {"correct": correct, "broken_by": broken_by, "x_adv": x_adv,
                                     "num_grads": num_grads}, meta)

        if record is None:
            save()
        unverified = 0
        while stage < len(names):
            s = stage
            name, attack = self.attacks[s]  # type: ignore[index]
            earlier = (broken_by >= 0) & (broken_by < s)
            todo = (correct & ~earlier).nonzero().squeeze(1)  # robust at this attack's start
            batches = [todo[i:i + batch_size] for i in range(0, todo.numel(), batch_size)]
            with tqdm(total=len(batches), initial=next_batch, desc=f"{name} ({s + 1}/{len(names)})",
                      disable=not progress, leave=False) as bar:
                for j in range(next_batch, len(batches)):
                    t0 = time.perf_counter()
                    b = batches[j]
                    gen = torch.Generator(device=x.device).manual_seed(_batch_seed(base_seed, s, j))
                    res = attack(model, x[b], y[b], generator=gen)
                    with eval_mode(model), torch.no_grad():
                        pred = model(res.x_adv).argmax(dim=1)
                    hit = pred != y[b]
                    if threat is not None:
                        hit &= threat.contains(res.x_adv, x[b])
                    claimed = getattr(res, "success", None)
                    if claimed is not None and getattr(res, "target", None) is None:
                        unverified += int((claimed.to(hit.device) & ~hit).sum())
                    broken_by[b[hit]] = s
                    x_adv[b[hit]] = res.x_adv[hit].detach().to(x_adv.dtype)
                    if getattr(res, "num_grads", None) is not None:
                        num_grads[b] += res.num_grads.to(num_grads.device)
                    stage_seconds[s] += time.perf_counter() - t0
                    stage, next_batch = (s + 1, 0) if j == len(batches) - 1 else (s, j + 1)
                    t0 = time.perf_counter()
                    save()
                    stage_seconds[s] += time.perf_counter() - t0  # (on disk with the next save)
                    n_robust = int((correct & (broken_by < 0)).sum())
                    bar.update(1)
                    bar.set_postfix_str(f"robust {n_robust}/{x.shape[0]}")
                    if callback is not None:
                        callback({"stage": s, "name": name, "batch": j, "num_batches": len(batches),
                                  "n_robust": n_robust})
            if not batches:  # nothing left to attack: the stage is done at once
                stage, next_batch = s + 1, 0
                save()
            log.info("after %s: robust %d/%d", name, int((correct & (broken_by < 0)).sum()), x.shape[0])
        if unverified:
            log.warning("%d successes claimed by the attacks did not hold up when re-evaluated (outside "
                        "the threat model or classified correctly); they count as robust", unverified)
        prov = provenance(seed=base_seed, batch_size=batch_size, attacks=dict(zip(names, configs)),
                          resumed=record is not None)
        return CascadeResult(names=names, configs=configs, correct=correct.clone(),
                             broken_by=broken_by.clone(), x_adv=x_adv.clone(), num_grads=num_grads.clone(),
                             stage_seconds=tuple(stage_seconds),
                             seconds=clean_seconds + sum(stage_seconds), threat=threat, provenance=prov)


def _canonical(attr: str, value: Any) -> Any:
    if attr == "norm":
        from advlab.threat import canonical_norm
        return canonical_norm(value)
    if attr == "eps":
        return float(value)
    return tuple(float(v) for v in value)


def strong_attacks(eps: float, norm: str = "linf", *, steps: int = 100, n_target_classes: int = 9,
                   restarts: int = 1, bounds: tuple[float, float] = (0.0, 1.0),
                   early_stop: bool = True, max_batch: int | None = None) -> dict[str, Any]:
    """The standard white-box strong evaluation: APGD-CE, then APGD-T with the targeted DLR loss
    (Croce & Hein 2020's first two AutoAttack members, at their budgets: 100 steps, 9 targets).

    A dict, so that later members extend it: ``{**strong_attacks(eps), "square": Square(...)}``.
    ``early_stop=True`` (evaluation mode) returns the same points as the fixed budget for less.
    ``max_batch`` lets APGD-T run several target classes at once, in batches of up to that many
    rows, when few points are left (:class:`~advlab.attacks.apgd.APGDT`): worth it on a GPU; on a
    CPU small batches are often faster per row (on the bench's small CNN, 1.8× slower at 500 rows
    than 9 runs of 61), so the default runs the targets one by one.
    """
    from advlab.attacks.apgd import APGD, APGDT

    return {
        "APGD-CE": APGD(eps=eps, norm=norm, steps=steps, loss="ce", restarts=restarts, bounds=bounds,
                        early_stop=early_stop),
        "APGD-T": APGDT(eps=eps, norm=norm, steps=steps, n_target_classes=n_target_classes,
                        restarts=restarts, bounds=bounds, early_stop=early_stop, max_batch=max_batch),
    }


def strong_evaluate(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
                    steps: int = 100, n_target_classes: int = 9, restarts: int = 1,
                    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256, seed: int = 0,
                    checkpoint_path: str | os.PathLike[str] | None = None,
                    progress: bool = True) -> CascadeResult:
    """Robust accuracy under the strong cascade :func:`strong_attacks` (APGD-CE → APGD-T).

    Robust accuracy is over all ``n`` points; the attacks run only on the clean-correct ones
    (``result.n_correct``); ``result.summary()`` states both.

    Example:
        >>> r = strong_evaluate(model, x, y, eps=8 / 255)
        >>> r.robust_accuracy, r.n_robust, r.n_correct, r.n
    """
    if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    cascade = Cascade(strong_attacks(eps, norm, steps=steps, n_target_classes=n_target_classes,
                                     restarts=restarts, bounds=bounds))
    return cascade.run(model, x, y, batch_size=batch_size,
                       generator=torch.Generator(device=x.device).manual_seed(seed),
                       checkpoint_path=checkpoint_path, progress=progress)
