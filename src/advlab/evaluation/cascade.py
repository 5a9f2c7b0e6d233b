"""Worst-case evaluation with a cascade of attacks, resumable from a per-point record.

A :class:`Cascade` runs its attacks in turn, each on the points still robust after the ones before
it (as AutoAttack does): a point counts as broken by the *first* attack that breaks it, whose
adversarial input is kept. The clean pass decides which points are attacked at all (the correctly
classified ones); robust accuracy is over all ``n`` points, every summary states both denominators.

A point is broken when the attack says so: every advlab attack goes through the attack contract,
which recomputes success on the returned point and checks it lies in the threat model. A foreign
callable's claims are re-checked (one forward pass per batch). Black-box members (Square) are
called with an :class:`~advlab.oracle.Oracle` around the model.

With ``checkpoint_path`` the per-point record is written after every (attack, batch), as
``record.safetensors`` (tensors) plus ``record.json`` (metadata), each atomically (a temporary file
then :func:`os.replace`). Running again with the same path, model, data and attacks resumes after
the last finished batch; anything else refuses to resume rather than mixing two evaluations.
Every batch's random generator is seeded from (run seed, attack, batch), so a resumed evaluation
equals an uninterrupted one.

Example:
    >>> result = Cascade(strong_attacks(eps=8 / 255)).run(model, x, y, checkpoint_path="eval/")
    >>> print(result.table())
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from advlab.attacks.contract import AttackLike, radius_of
from advlab.attacks._base import config_repr
from advlab._checks import check_int, check_inputs, check_model, check_number
from advlab._io import atomic_write, atomic_write_text, clean_orphans
from advlab.evaluation._attack import CleanCounts, broken, check_bounded, clean_predictions, victim
from advlab.evaluation.robustness import WORST_CASE, EvalRow, Evaluation, provenance
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

RECORD_TENSORS = "record.safetensors"
RECORD_JSON = "record.json"
FORMAT = "advlab-cascade-record/1"
NOT_BROKEN = -1


def _default_name(attack: AttackLike) -> str:
    name = type(attack).__name__
    loss = getattr(attack, "loss", None)
    return f"{name}-{loss.upper()}" if name == "APGD" and isinstance(loss, str) else name


@dataclass(frozen=True)
class CascadeResult(CleanCounts):
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

    def summary(self) -> dict[str, Any]:
        """Scalars for logs and results (as every ``summary()`` in advlab); :meth:`table` is the
        Markdown."""
        out = self.to_dict()
        out.pop("provenance")
        return out

    def table(self) -> str:
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


@dataclass
class CascadeRecord:
    """The per-point state of a cascade, as kept on disk between sessions.

    ``stage``/``batch`` say where the run stands: the next (attack, batch) to run. ``identity``
    pins what the record belongs to (attacks, data and model fingerprints, seed, batch size).
    On disk: ``record.safetensors`` (tensors, with all the metadata in its header) and
    ``record.json`` (the same metadata, for people), each written atomically; tensors first, so
    a crash between the two leaves a record that still loads.
    """

    identity: dict[str, Any]
    correct: Tensor  # (n,) bool
    broken_by: Tensor  # (n,) int64, NOT_BROKEN or the stage that broke the point
    x_adv: Tensor  # (n, *)
    num_grads: Tensor  # (n,) int64
    stage: int = 0
    batch: int = 0
    stage_seconds: list[float] = field(default_factory=list)
    clean_seconds: float = 0.0
    saves: int = 0

    @classmethod
    def fresh(cls, identity: dict[str, Any], correct: Tensor, x: Tensor, stages: int,
              clean_seconds: float) -> "CascadeRecord":
        return cls(identity=identity, correct=correct,
                   broken_by=torch.full_like(correct, NOT_BROKEN, dtype=torch.long),
                   x_adv=x.clone(), num_grads=torch.zeros_like(correct, dtype=torch.long),
                   stage_seconds=[0.0] * stages, clean_seconds=clean_seconds)

    @property
    def n_robust(self) -> int:
        return int((self.correct & (self.broken_by < 0)).sum())

    def _meta(self) -> dict[str, Any]:
        return {"identity": self.identity, "stage": self.stage, "batch": self.batch, "saves": self.saves,
                "stage_seconds": self.stage_seconds, "clean_seconds": self.clean_seconds,
                "names": self.identity.get("attacks", []), "n_correct": int(self.correct.sum()),
                "n_robust": self.n_robust}

    def save(self, directory: Path) -> None:
        """Tensors first, then the JSON (see the class docstring)."""
        from safetensors.torch import save_file

        self.saves += 1
        text = json.dumps(self._meta(), indent=1, allow_nan=False)
        tensors = {"correct": self.correct, "broken_by": self.broken_by, "x_adv": self.x_adv,
                   "num_grads": self.num_grads}
        cpu = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        atomic_write(directory / RECORD_TENSORS, lambda p: save_file(cpu, p, metadata={"record": text}))
        atomic_write_text(directory / RECORD_JSON, text + "\n")

    @classmethod
    def load(cls, directory: Path, device: torch.device, dtype: torch.dtype) -> "CascadeRecord | None":
        loaded = _load_record(directory, device)
        if loaded is None:
            return None
        tensors, meta = loaded
        problem = _meta_problem(meta) or _tensors_problem(tensors)
        if problem:
            raise _corrupt(directory, problem)
        return cls(identity=meta.get("identity", {}), correct=tensors["correct"],
                   broken_by=tensors["broken_by"], x_adv=tensors["x_adv"].to(dtype),
                   num_grads=tensors["num_grads"], stage=meta["stage"], batch=meta["batch"],
                   stage_seconds=list(meta["stage_seconds"]), clean_seconds=meta["clean_seconds"],
                   saves=meta["saves"])


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
    if not isinstance(meta, dict):
        raise _corrupt(directory, f"its metadata is a {type(meta).__name__}, not an object")
    json_path = directory / RECORD_JSON
    try:  # only for people: whatever it holds, the metadata in the tensors file is used
        json_meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # (ValueError: bad JSON, bad UTF-8)
        log.warning("%s is missing or unreadable; using the metadata in %s", json_path, tensors_path)
    else:
        if not isinstance(json_meta, dict) or json_meta.get("saves") != meta.get("saves"):
            log.warning("%s is behind %s (interrupted between the two writes?); using the "
                        "latter", json_path, tensors_path)
    return tensors, meta


def _corrupt(directory: Path, problem: str) -> ValueError:
    return ValueError(f"the cascade record in {directory} is corrupt: {problem}; delete {directory} "
                      "to start the evaluation afresh")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a record's metadata, or ``None``."""
    if not isinstance(meta.get("identity", {}), dict):
        return "its identity is not an object"
    for key in ("stage", "batch", "saves"):
        if not _count(meta.get(key)):
            return f"{key} must be a whole number >= 0, got {meta.get(key)!r}"
    if not isinstance(meta.get("stage_seconds"), list) or not all(map(_seconds, meta["stage_seconds"])):
        return f"stage_seconds must be a list of seconds, got {meta.get('stage_seconds')!r}"
    if not _seconds(meta.get("clean_seconds")):
        return f"clean_seconds must be seconds, got {meta.get('clean_seconds')!r}"
    return None


_RECORD_DTYPES = {"correct": torch.bool, "broken_by": torch.int64, "num_grads": torch.int64}


def _tensors_problem(tensors: dict[str, Tensor]) -> str | None:
    """What is wrong with a record's tensors taken alone, or ``None``."""
    if set(tensors) != {*_RECORD_DTYPES, "x_adv"}:
        return f"it holds tensors {sorted(tensors)}, expected {sorted({*_RECORD_DTYPES, 'x_adv'})}"
    for name, dtype in _RECORD_DTYPES.items():
        if tensors[name].dtype != dtype or tensors[name].dim() != 1:
            return f"{name} must be a vector of {dtype}, got {tensors[name].dtype} {tuple(tensors[name].shape)}"
    if not tensors["x_adv"].is_floating_point():
        return f"x_adv must be floating point, got {tensors['x_adv'].dtype}"
    return None


def _check_record(record: CascadeRecord, x: Tensor, threat: ThreatModel | None, stages: int,
                  directory: Path) -> None:
    """Refuse a record (of this evaluation, by its identity) whose per-point state cannot be one a
    cascade over ``x`` wrote: shapes, the stage, which attack broke a point and with what input."""
    n = x.shape[0]
    shapes = {name: tuple(t.shape) for name, t in (("correct", record.correct), ("broken_by", record.broken_by),
                                                   ("num_grads", record.num_grads))}
    if any(shape != (n,) for shape in shapes.values()) or record.x_adv.shape != x.shape:
        raise _corrupt(directory, f"its tensors have shapes {shapes} and x_adv {tuple(record.x_adv.shape)} "
                                  f"for {n} points of shape {tuple(x.shape[1:])}")
    if record.stage > stages or len(record.stage_seconds) != stages:
        raise _corrupt(directory, f"it is at attack {record.stage} with {len(record.stage_seconds)} timings "
                                  f"for a cascade of {stages}")
    broken = record.broken_by >= 0
    if bool(((record.broken_by < NOT_BROKEN) | (record.broken_by > min(record.stage, stages - 1))).any()):
        raise _corrupt(directory, f"broken_by names attacks that have not run (attack {record.stage} is next)")
    if bool((broken & ~record.correct).any()) or bool((record.num_grads < 0).any()):
        raise _corrupt(directory, "it counts misclassified points as broken, or negative gradient counts")
    if not torch.equal(record.x_adv[~broken], x[~broken]):
        raise _corrupt(directory, "the inputs it keeps for unbroken points are not their clean inputs")
    if threat is not None and not bool(threat.contains(record.x_adv[broken], x[broken]).all()):
        raise _corrupt(directory, f"an input it keeps for a broken point lies outside the threat model ({threat})")


def _batch_seed(base: int, stage: int, batch: int) -> int:
    digest = hashlib.sha256(f"{base}:{stage}:{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


# -- the cascade ------------------------------------------------------------------------------


def _threat_field(attack: Any, attr: str) -> Any:
    """``eps`` (the ball's radius, see :func:`advlab.attacks.contract.radius_of`), ``norm`` or
    ``bounds`` of a member, ``None`` where it has none."""
    return radius_of(attack) if attr == "eps" else getattr(attack, attr, None)


@dataclass(frozen=True)
class Cascade:
    """Attacks run in turn on the points still robust; worst case per point.

    Args:
        attacks: a ``{name: attack}`` mapping or a sequence of attacks (named after their class,
            ``APGD-CE``/``APGD-DLR`` for APGD). Any ε-bounded attack of :mod:`advlab.attacks`:
            white-box ones get the model, black-box ones (``access`` "scores" or "labels", e.g.
            :class:`~advlab.attacks.SquareAttack`) an :class:`~advlab.oracle.Oracle` around it;
            their successes are trusted because the attack contract re-checks them. Any other
            callable ``attack(model, x, y, *, generator) -> AttackResult`` is called with the model
            and its successes are re-checked (one forward pass per batch). Attacks that declare
            ``eps``/``norm``/``bounds`` must agree on them.

    Example:
        >>> cascade = Cascade({"apgd-ce": APGD(eps=0.1), "apgd-t": APGDT(eps=0.1)})
        >>> result = cascade.run(model, x, y, batch_size=500, checkpoint_path="runs/strong")
        >>> result.robust_accuracy, result.stage_robust_accuracy, result.broken_by_name[:5]
    """

    attacks: Mapping[str, AttackLike] | Sequence[AttackLike]

    def __post_init__(self) -> None:
        items = (list(self.attacks.items()) if isinstance(self.attacks, Mapping)
                 else [(None, a) for a in self.attacks])
        if not items:
            raise ValueError("a Cascade needs at least one attack")
        named: list[tuple[str, Any]] = []
        for name, attack in items:
            check_bounded(attack, f"cascade member {name or len(named)}", "Cascade")
            key = str(name) if name is not None else _default_name(attack)
            base, i = key, 2
            while key in {k for k, _ in named}:
                key, i = f"{base}#{i}", i + 1
            named.append((key, attack))
        for attr in ("eps", "norm", "bounds"):
            values = {repr(_canonical(attr, _threat_field(a, attr))) for _, a in named
                      if _threat_field(a, attr) is not None}
            if len(values) > 1:
                raise ValueError(f"the cascade's attacks disagree on {attr}: {sorted(values)}; a worst "
                                 "case per point needs one threat model")
        object.__setattr__(self, "attacks", tuple(named))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.attacks)  # type: ignore[misc]

    def threat(self) -> ThreatModel | None:
        for _, a in self.attacks:  # type: ignore[misc]
            if radius_of(a) is not None and hasattr(a, "norm"):
                return ThreatModel(norm=a.norm, eps=radius_of(a), bounds=getattr(a, "bounds", (0.0, 1.0)))
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
        check_int("batch_size", batch_size)
        threat = self.threat()
        check_inputs(model, x, y, bounds=threat.bounds if threat is not None else (0.0, 1.0),
                     generator=generator)
        x, y = x.detach(), y.detach()
        base_seed = 0 if generator is None else int(
            torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        configs = tuple(config_repr(a) for _, a in self.attacks)  # type: ignore[misc]
        identity = {"format": FORMAT, "attacks": list(self.names), "configs": list(configs),
                    "n": int(x.shape[0]), "input_shape": list(x.shape[1:]), "batch_size": batch_size,
                    "seed": base_seed, **_fingerprint(model, x, y)}
        directory = _record_dir(checkpoint_path)
        t_start = time.perf_counter()
        record = CascadeRecord.load(directory, x.device, x.dtype) if directory is not None else None
        resumed = record is not None
        if record is not None:
            _check_identity(record, identity, directory)
            _check_record(record, x, threat, len(self.names), directory)
            log.info("resuming the cascade from %s at attack %d/%d, batch %d", directory,
                     min(record.stage + 1, len(self.names)), len(self.names), record.batch)
        else:
            pred = clean_predictions(model, x, y=y, batch_size=batch_size)
            record = CascadeRecord.fresh(identity, pred == y, x, len(self.names),
                                         time.perf_counter() - t_start)
            if directory is not None:
                record.save(directory)
        claimed_wrong = 0
        while record.stage < len(self.names):
            claimed_wrong += self._run_stage(record, model, x, y, threat=threat, batch_size=batch_size,
                                             base_seed=base_seed, directory=directory, progress=progress,
                                             callback=callback)
        if claimed_wrong:
            log.warning("%d successes claimed by the attacks did not hold up when re-evaluated (outside "
                        "the threat model or classified correctly); they count as robust", claimed_wrong)
        prov = provenance(seed=base_seed, batch_size=batch_size, attacks=dict(zip(self.names, configs)),
                          resumed=resumed)
        return CascadeResult(names=self.names, configs=configs, correct=record.correct.clone(),
                             broken_by=record.broken_by.clone(), x_adv=record.x_adv.clone(),
                             num_grads=record.num_grads.clone(), stage_seconds=tuple(record.stage_seconds),
                             seconds=record.clean_seconds + sum(record.stage_seconds), threat=threat,
                             provenance=prov)

    def _run_stage(self, record: CascadeRecord, model: nn.Module, x: Tensor, y: Tensor, *,
                   threat: ThreatModel | None, batch_size: int, base_seed: int, directory: Path | None,
                   progress: bool, callback: Callable[[dict[str, Any]], None] | None) -> int:
        """Run the current attack on its remaining batches; returns the successes it claimed
        that did not hold up (only a foreign callable's claims are re-checked)."""
        s = record.stage
        name, attack = self.attacks[s]  # type: ignore[index]
        earlier = (record.broken_by >= 0) & (record.broken_by < s)
        todo = (record.correct & ~earlier).nonzero().squeeze(1)  # robust at this attack's start
        batches = [todo[i:i + batch_size] for i in range(0, todo.numel(), batch_size)]
        if record.batch > 0 and record.batch >= len(batches) and directory is not None:  # (it would never end)
            raise _corrupt(directory, f"it is at batch {record.batch} of attack {s + 1}, which has {len(batches)}")
        target = victim(attack, model)
        claimed_wrong = 0
        with tqdm(total=len(batches), initial=record.batch, desc=f"{name} ({s + 1}/{len(self.names)})",
                  disable=not progress, leave=False) as bar:
            for j in range(record.batch, len(batches)):
                t0 = time.perf_counter()
                b = batches[j]
                gen = torch.Generator(device=x.device).manual_seed(_batch_seed(base_seed, s, j))
                res = attack(target, x[b], y[b], generator=gen)
                hit = broken(attack, res, model, x[b], y[b], threat)
                claimed = getattr(res, "success", None)
                if claimed is not None and getattr(res, "target", None) is None:
                    claimed_wrong += int((claimed.to(hit.device) & ~hit).sum())
                record.broken_by[b[hit]] = s
                record.x_adv[b[hit]] = res.x_adv[hit].detach().to(record.x_adv.dtype)
                if getattr(res, "num_grads", None) is not None:
                    record.num_grads[b] += res.num_grads.to(record.num_grads.device)
                record.stage, record.batch = (s + 1, 0) if j == len(batches) - 1 else (s, j + 1)
                record.stage_seconds[s] += time.perf_counter() - t0
                t0 = time.perf_counter()
                if directory is not None:
                    record.save(directory)
                record.stage_seconds[s] += time.perf_counter() - t0  # (on disk with the next save)
                bar.update(1)
                bar.set_postfix_str(f"robust {record.n_robust}/{x.shape[0]}")
                if callback is not None:
                    callback({"stage": s, "name": name, "batch": j, "num_batches": len(batches),
                              "n_robust": record.n_robust})
        if not batches:  # nothing left to attack: the stage is done at once
            record.stage, record.batch = s + 1, 0
            if directory is not None:
                record.save(directory)
        log.info("after %s: robust %d/%d", name, record.n_robust, x.shape[0])
        return claimed_wrong


def _record_dir(checkpoint_path: str | os.PathLike[str] | None) -> Path | None:
    if checkpoint_path is None:
        return None
    directory = Path(checkpoint_path)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"checkpoint_path {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    clean_orphans(directory)
    return directory


def _check_identity(record: CascadeRecord, identity: dict[str, Any], directory: Path | None) -> None:
    differ = sorted(k for k in identity if record.identity.get(k) != identity[k])
    if differ:
        raise ValueError(f"the record in {directory} belongs to another evaluation (it differs "
                         f"in: {', '.join(differ)}); use another checkpoint_path or delete it")


def _canonical(attr: str, value: Any) -> Any:
    if attr == "norm":
        from advlab.threat import canonical_norm
        return canonical_norm(value)
    if attr == "eps":
        return float(value)
    return tuple(float(v) for v in value)


def strong_attacks(eps: float, norm: str = "linf", *, steps: int = 100, n_target_classes: int = 9,
                   restarts: int = 1, bounds: tuple[float, float] = (0.0, 1.0),
                   early_stop: bool = True, max_batch: int | None = None, square: bool = False,
                   square_budget: int = 5000, square_queries: int | None = None,
                   version: str = "fast") -> dict[str, Any]:
    """The standard white-box strong evaluation: APGD-CE, then APGD-T with the targeted DLR loss
    (Croce & Hein 2020's first two AutoAttack members, at their budgets: 100 steps, 9 targets);

    ``version="standard"`` is AutoAttack's whole "standard" list (Croce & Hein 2020): APGD-CE,
    APGD-T (9 targets), FAB-T (9 targets, ``steps`` iterations) and Square (``square_budget``
    queries, through an oracle; not under L1, where advlab has no Square), in that order, each on
    the points still robust; ``"fast"`` (the
    default) the first two, which on the bench's models already break every point the four do
    (bench/STRONG.md).
    with ``square=True`` the black-box Square attack (Andriushchenko et al. 2020; AutoAttack's
    fourth member, ``square_budget`` queries per point, 5,000 in AutoAttack; ``square_queries``
    is its deprecated name) runs last on the
    points still robust, through an oracle, so a model that masks its gradients cannot hide there.
    With ``norm="l1"`` both APGD members are L1-APGD (Croce & Hein 2021), as in AutoAttack's L1
    version (Square has no L1 form here: ``square=True`` refuses L1).

    A dict, so that more members can be added: ``{**strong_attacks(eps), "NES": NES(eps=eps)}``.
    ``early_stop=True`` (evaluation mode) returns the same points as the fixed budget for less.
    ``max_batch`` lets APGD-T run several target classes at once, in batches of up to that many
    rows, when few points are left (:class:`~advlab.attacks.apgd.APGDT`): worth it on a GPU; on a
    CPU small batches are often faster per row (on the bench's small CNN, 1.8× slower at 500 rows
    than 9 runs of 61), so the default runs the targets one by one.
    """
    from advlab.attacks.apgd import APGD, APGDT

    out: dict[str, Any] = {
        "APGD-CE": APGD(eps=eps, norm=norm, steps=steps, loss="ce", restarts=restarts, bounds=bounds,
                        early_stop=early_stop),
        "APGD-T": APGDT(eps=eps, norm=norm, steps=steps, n_target_classes=n_target_classes,
                        restarts=restarts, bounds=bounds, early_stop=early_stop, max_batch=max_batch),
    }
    if square_queries is not None:
        from advlab.attacks._blackbox import deprecated

        deprecated("strong_attacks(square_queries=...) is deprecated: use square_budget= (the same number)")
        square_budget = square_queries
    if version not in ("fast", "standard"):
        raise ValueError(f"unknown strong-evaluation version {version!r}: use 'fast' (APGD-CE, APGD-T) or "
                         "'standard' (AutoAttack's APGD-CE, APGD-T, FAB-T, Square)")
    if version == "standard":
        from advlab.attacks.registry import make_attack
        from advlab.threat import canonical_norm

        out["FAB-T"] = make_attack("fabt", eps=eps, norm=norm, steps=steps, n_target_classes=n_target_classes,
                                   bounds=bounds)
        # (advlab's Square has L∞ and L2 forms only: under L1 the standard list is the first three)
        square = canonical_norm(norm) != "l1"
    if square:
        from advlab.attacks.score import SquareAttack

        out["Square"] = SquareAttack(eps=eps, norm=norm, budget=square_budget, bounds=bounds)
    return out


def strong_evaluate(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str = "linf",
                    steps: int = 100, n_target_classes: int = 9, restarts: int = 1,
                    bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256, seed: int = 0,
                    checkpoint_path: str | os.PathLike[str] | None = None,
                    progress: bool = True, version: str = "fast", square_budget: int = 5000) -> CascadeResult:
    """Robust accuracy under the strong cascade :func:`strong_attacks` (APGD-CE → APGD-T; with
    ``version="standard"``, AutoAttack's APGD-CE → APGD-T → FAB-T → Square).

    Robust accuracy is over all ``n`` points; the attacks run only on the clean-correct ones
    (``result.n_correct``); ``result.table()`` states both.

    Example:
        >>> r = strong_evaluate(model, x, y, eps=8 / 255)
        >>> r.robust_accuracy, r.n_robust, r.n_correct, r.n
    """
    check_number("eps", eps, low=0.0, low_open=False)
    cascade = Cascade(strong_attacks(eps, norm, steps=steps, n_target_classes=n_target_classes,
                                     restarts=restarts, bounds=bounds, version=version,
                                     square_budget=square_budget))
    return cascade.run(model, x, y, batch_size=batch_size,
                       generator=torch.Generator(device=x.device).manual_seed(seed),
                       checkpoint_path=checkpoint_path, progress=progress)
