"""Clean and robust accuracy over a dataset, for several attacks and a list of ε in one call.

Conventions (STYLE principle 6): attacks run only on the points the model classifies correctly
(the others are already "broken" and cost nothing); robust accuracy is over all ``n`` points;
the attack success rate is over the ``n_correct`` correctly classified points, and every row
states both denominators. ``worst-case`` counts a point as broken when *any* attack broke it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

import advlab
from advlab.attacks.contract import AttackLike, at_radius, radius_of
from advlab.attacks._base import config_repr
from advlab._checks import check_inputs, check_int, check_model
from advlab.evaluation._attack import broken as hit
from advlab.evaluation._attack import check_bounded, clean_predictions, victim
from advlab.evaluation._json import dump_json
from advlab.threat import ThreatModel

log = logging.getLogger(__name__)

WORST_CASE = "worst-case"


@dataclass(frozen=True)
class EvalRow:
    """One (attack, ε) cell of an evaluation."""

    attack: str
    eps: float
    norm: str
    n: int
    n_correct: int
    n_robust: int
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float  # over n_correct
    median_norm: float  # of successful perturbations (nan if none)
    mean_norm: float
    grads: int  # forward+backward passes spent
    seconds: float
    config: str = ""


@dataclass
class Evaluation:
    """The rows of an evaluation and where they came from."""

    rows: list[EvalRow]
    provenance: dict[str, Any] = field(default_factory=dict)
    per_point: dict[str, Tensor] = field(default_factory=dict, repr=False)
    #: per point and ``"<attack>@<ε>"``: the returned perturbation's norm (NaN where the attack did
    #: not run) and the model queries a black-box attack spent (-1 for white-box attacks)
    point_norms: dict[str, Tensor] = field(default_factory=dict, repr=False)
    point_queries: dict[str, Tensor] = field(default_factory=dict, repr=False)
    #: with ``evaluate(..., examples=k)``: per ``"<attack>@<ε>"``, the indices of the first ``k``
    #: attacked points and the attack's outputs there (for galleries), on the CPU
    examples: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def robust_accuracy(self, attack: str, eps: float) -> float:
        for r in self.rows:
            if r.attack == attack and math.isclose(r.eps, eps, rel_tol=1e-9, abs_tol=1e-12):
                return r.robust_accuracy
        raise KeyError(f"no row for attack {attack!r} at eps={eps}")

    @property
    def attacks(self) -> list[str]:
        return list(dict.fromkeys(r.attack for r in self.rows))

    @property
    def eps(self) -> list[float]:
        return sorted({r.eps for r in self.rows})

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [dataclasses.asdict(r) for r in self.rows], "provenance": self.provenance}

    def to_json(self, path: str | None = None) -> str:
        return dump_json(self.to_dict(), path, default=float)

    def table(self) -> str:
        """Markdown table: robust accuracy per attack (rows) and ε (columns), denominators stated."""
        eps_list = self.eps
        if not self.rows:
            return "(no rows)"
        head = f"Robust accuracy (%) {denominators(self.rows)}\n\n"
        cols = "| attack | " + " | ".join(f"ε={e:g}" for e in eps_list) + " |"
        sep = "|---|" + "---:|" * len(eps_list)
        lines = [cols, sep]
        for name in self.attacks:
            cells = []
            for e in eps_list:
                try:
                    cells.append(f"{100 * self.robust_accuracy(name, e):.1f}")
                except KeyError:
                    cells.append("–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return head + "\n".join(lines) + "\n"


def clean_groups(rows: Sequence[EvalRow]) -> list[tuple[str, EvalRow]]:
    """The distinct clean denominators among ``rows``, each with a label and one of its rows.

    Rows of one model share ``(n, n_correct)``; a table that compares models (``defend``'s, whose
    attack names read ``"<model> · <attack>"``) has one group per model, labelled with the model
    (the common prefix before `` · ``), else with the group's attack names."""
    groups: dict[tuple[int, int], list[EvalRow]] = {}
    for r in rows:
        groups.setdefault((r.n, r.n_correct), []).append(r)
    out = []
    for members in groups.values():
        prefixes = {r.attack.split(" · ")[0] for r in members if " · " in r.attack}
        if len(prefixes) == 1 and all(" · " in r.attack for r in members):
            label = prefixes.pop()
        else:
            label = ", ".join(dict.fromkeys(r.attack for r in members))
        out.append((label, members[0]))
    return out


def denominators(rows: Sequence[EvalRow]) -> str:
    """The sentence that states a table's denominators: "over n = N points; clean accuracy ...;
    attacks run on ...; norm ...". When the rows' clean accuracies differ (several models), each
    is named with its own, rather than the first row's standing for all."""
    first = rows[0]
    norms = ", ".join(dict.fromkeys(r.norm for r in rows))
    groups = clean_groups(rows)
    ns = sorted({r.n for r in rows})
    over = f"over n = {first.n} points" if len(ns) == 1 else "over n = " + " or ".join(map(str, ns)) + " points"
    if len(groups) == 1:
        return (f"{over}; clean accuracy {100 * first.clean_accuracy:.1f}% ({first.n_correct}/{first.n}); "
                f"attacks run on the {first.n_correct} correctly classified points; norm {norms}.")
    each = ", ".join(f"{label} {100 * r.clean_accuracy:.1f}% ({r.n_correct}/{r.n})" for label, r in groups)
    return (f"{over}; clean accuracy differs between rows: {each}; attacks run on each row's correctly "
            f"classified points; norm {norms}.")


def provenance(**extra: Any) -> dict[str, Any]:
    """Library versions, code revision and time, for every stored result."""
    try:
        from advlab.models.checkpoint import code_revision
        rev = code_revision()
    except Exception:  # provenance must never break a run
        rev = "unknown"
    info = {"advlab": advlab.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "code_revision": rev, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info.update(extra)
    return info


def _name(attack: AttackLike) -> str:
    return type(attack).__name__


def evaluate(model: nn.Module, x: Tensor | Any, y: Tensor | None = None, *,
             attacks: Sequence[AttackLike] | Mapping[str, AttackLike], eps: Sequence[float],
             batch_size: int = 256, seed: int = 0, progress: bool = True, examples: int = 0) -> Evaluation:
    """Clean accuracy, robust accuracy, success rate and norms for each attack at each ε.

    Args:
        model: an ``nn.Module`` returning logits.
        x, y: the whole evaluation set, ``(N, *)`` and ``(N,)``; or, as ``x`` alone, a
            ``torch.utils.data.DataLoader`` or ``Dataset`` yielding ``(x, y)`` (an advlab
            :class:`~advlab.data.Dataset` too). A loader is streamed batch by batch (each batch
            moved to the model's device): memory holds one batch and the per-point records, not
            the data, so 60,000 points cost what 1,000 do. Rows equal the in-memory call's for
            attacks whose result per point does not depend on its batch-mates (no random start).
        attacks: attack configurations (any ε; each is re-run at every ε of ``eps`` with
            ``dataclasses.replace(attack, eps=e)``), as a list or a ``{name: attack}`` mapping.
            Use ``early_stop=True`` on iterative attacks to pay only for still-robust points.
        eps: the radii, increasing.
        batch_size: points per attack call.
        seed: seeds one ``torch.Generator`` per (attack, ε, call of ``batch_size`` points) from
            (seed, call index) (:func:`block_seed`), so rows depend neither on the order of the
            attacks nor on how calls are spread over processes (:func:`evaluate_sharded` under
            torchrun gives the same rows).
        examples: keep the adversarial inputs of the first ``examples`` attacked points of each
            (attack, ε) in :attr:`Evaluation.examples` (a gallery's worth; the rest are dropped).

    Returns:
        An :class:`Evaluation` whose rows include, with more than one attack, a ``worst-case`` row
        per ε (a point counts as broken if any attack broke it).

    Example:
        >>> ev = evaluate(model, x, y, attacks=[FGSM(eps=0), PGD(eps=0, early_stop=True)],
        ...               eps=[0.05, 0.1])
        >>> print(ev.table())
    """
    check_model(model)
    named = _named_attacks(attacks, eps)
    check_int("batch_size", batch_size)
    check_int("examples", examples, minimum=0)
    eps = _check_eps_list(eps)
    bounds = next(iter(named.values())).bounds
    from advlab.data import Dataset as AdvlabDataset

    if isinstance(x, AdvlabDataset) and y is None:
        x, y = x.x, x.y
    streamed = _as_stream(x, y)
    if streamed is not None:
        if examples:
            raise ValueError("evaluate: examples= is kept by in-memory evaluations (x, y), not by a streamed "
                             "loader; evaluate a slice in memory for a gallery")
        return _evaluate_stream(model, streamed, named, eps, batch_size=batch_size, seed=seed,
                                progress=progress)
    if y is None:
        raise TypeError("evaluate(model, x, y): y is missing (or pass a DataLoader / Dataset as x)")
    check_inputs(model, x, y, bounds=bounds)
    pred = clean_predictions(model, x, y=y, batch_size=max(batch_size, 512))
    correct = pred == y
    idx = correct.nonzero().squeeze(1)
    n_correct = int(idx.numel())
    jobs = [(name, e) for e in eps for name in named]
    bar = tqdm(jobs, desc="evaluate", disable=not progress, leave=False)
    records: dict[tuple[str, float], PointRecord] = {}
    blocks = range(num_blocks(n_correct, batch_size))
    for name, e in bar:
        bar.set_postfix_str(f"{name} eps={e:g}")
        records[(name, e)] = attack_blocks(model, x, y, idx, named[name], e, batch_size=batch_size,
                                           seed=seed, blocks=blocks, keep=examples)
    prov = provenance(seed=seed, batch_size=batch_size, norm=str(next(iter(named.values())).norm),
                      attacks={k: _at_every_eps(v, eps) for k, v in named.items()})
    return assemble(named, eps, correct, records, prov)


@dataclass
class PointRecord:
    """What one (attack, ε) found per point: broken flags, norms (NaN where it did not run),
    queries (-1 for white-box attacks or where it did not run), passes spent and seconds."""

    broken: Tensor
    norms: Tensor
    queries: Tensor
    grads: int
    seconds: float
    #: the first ``keep`` attacked points (indices) and their adversarial inputs, from call 0
    examples: tuple[Tensor, Tensor] | None = None


def num_blocks(n_correct: int, batch_size: int) -> int:
    """How many attack calls of ``batch_size`` points cover ``n_correct`` points."""
    return -(-n_correct // batch_size)


def block_seed(seed: int, block: int) -> int:
    """The generator seed of attack call ``block``: ``seed`` itself for the first, then a fixed
    odd stride apart (mod 2⁶⁴), so each call's randomness depends only on (seed, block) and not on
    which process or in which order the calls ran (what sharding across ranks needs)."""
    return seed if block == 0 else (seed + block * 0x9E3779B97F4A7C15) % (1 << 64)


def attack_blocks(model: nn.Module, x: Tensor, y: Tensor, idx: Tensor, attack: AttackLike, e: float, *,
                  batch_size: int, seed: int, blocks: Iterable[int], keep: int = 0) -> PointRecord:
    """Run ``attack`` at radius ``e`` on the calls ``blocks`` of the correctly classified points
    ``idx`` (call ``j`` takes ``idx[j*batch_size:(j+1)*batch_size]`` with a generator seeded by
    :func:`block_seed`); points of other calls keep their "did not run" values. With ``keep``,
    call 0 (if among ``blocks``) also keeps its first ``keep`` adversarial inputs."""
    n = x.shape[0]
    attack = at_radius(attack, e)
    target = victim(attack, model)
    ball = ThreatModel(norm=attack.norm, eps=e, bounds=getattr(attack, "bounds", (0.0, 1.0)))
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    norms = torch.full((n,), float("nan"), device=x.device)
    queries = torch.full((n,), -1, dtype=torch.int64, device=x.device)
    grads = 0
    kept = None
    t0 = time.perf_counter()
    for j in blocks:
        b = idx[j * batch_size:(j + 1) * batch_size]
        if b.numel() == 0:
            continue
        gen = torch.Generator(device=x.device).manual_seed(block_seed(seed, j))
        res = attack(target, x[b], y[b], generator=gen)
        if keep and j == 0:
            kept = (b[:keep].cpu(), res.x_adv[:keep].detach().cpu())
        broken[b] = hit(attack, res, model, x[b], y[b], ball)
        norms[b] = res.norms.to(norms.dtype)
        if res.queries is not None:
            queries[b] = res.queries.to(torch.int64)
        grads += int(res.num_grads.sum())
    return PointRecord(broken=broken, norms=norms, queries=queries, grads=grads,
                       seconds=time.perf_counter() - t0, examples=kept)


def assemble(named: Mapping[str, AttackLike], eps: Sequence[float], correct: Tensor,
             records: Mapping[tuple[str, float], PointRecord], prov: dict[str, Any]) -> Evaluation:
    """The :class:`Evaluation` of per-point records: a row per (attack, ε) in the order of ``eps``
    then ``named``, and with more than one attack a ``worst-case`` row per ε."""
    n, n_correct = int(correct.numel()), int(correct.sum())
    clean_acc = n_correct / n
    rows: list[EvalRow] = []
    per_point: dict[str, Tensor] = {}
    point_norms: dict[str, Tensor] = {}
    point_queries: dict[str, Tensor] = {}
    examples: dict[str, tuple[Tensor, Tensor]] = {}
    broken_any = {e: torch.zeros(n, dtype=torch.bool, device=correct.device) for e in eps}
    grads_any = {e: 0 for e in eps}
    secs_any = {e: 0.0 for e in eps}
    for e in eps:
        for name in named:
            r = records[(name, e)]
            rows.append(_row(name, at_radius(named[name], e), e, n, n_correct, r.broken, r.norms, r.grads,
                             r.seconds, clean_acc))
            key = f"{name}@{e:g}"
            per_point[key] = r.broken.clone()
            point_norms[key] = r.norms
            point_queries[key] = r.queries
            if r.examples is not None:
                examples[key] = r.examples
            broken_any[e] |= r.broken.to(correct.device)
            grads_any[e] += r.grads
            secs_any[e] += r.seconds
    if len(named) > 1:
        any_attack = next(iter(named.values()))
        for e in eps:
            rows.append(_row(WORST_CASE, at_radius(any_attack, e), e, n, n_correct,
                             broken_any[e], torch.full((n,), float("nan")), grads_any[e], secs_any[e],
                             clean_acc, config="any of: " + ", ".join(named)))
    per_point["correct"] = correct
    return Evaluation(rows=rows, provenance=prov, per_point=per_point, point_norms=point_norms,
                      point_queries=point_queries, examples=examples)


def _check_eps_list(eps: Sequence[float]) -> list[float]:
    if isinstance(eps, (str, bytes)) or any(isinstance(e, (bool, str, bytes)) for e in eps):
        raise TypeError(f"eps must be a list of numbers, got {eps!r}")  # ("0.1" was read as 0.1)
    out = [float(e) for e in eps]
    if not out:
        raise ValueError("evaluate needs at least one eps")
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"eps must be strictly increasing, got {out}")
    if any(e < 0 or not math.isfinite(e) for e in out):
        raise ValueError(f"eps must be finite and >= 0, got {out}")
    return out


def _as_stream(x: Any, y: Any) -> Any:
    """The DataLoader to stream, or None for in-memory tensors (an advlab Dataset is in memory:
    its tensors are taken as they are)."""
    from torch.utils.data import DataLoader, Dataset as TorchDataset

    from advlab.data import Dataset as AdvlabDataset

    if isinstance(x, AdvlabDataset):
        return None
    if isinstance(x, (DataLoader, TorchDataset)):
        if y is not None:
            raise TypeError("evaluate(model, loader): a DataLoader or Dataset carries its labels; drop y")
        return x
    return None


def _stream_batches(data: Any, batch_size: int, device: torch.device) -> Any:
    """``(x, y)`` batches of a DataLoader or map-style Dataset, on ``device``."""
    from torch.utils.data import DataLoader

    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    for k, batch in enumerate(loader):
        if isinstance(batch, Mapping):
            batch = (batch.get("x", batch.get("input")), batch.get("y", batch.get("label")))
        if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not all(
                isinstance(t, Tensor) for t in batch):
            raise TypeError(f"evaluate: the loader's batch {k} is not an (x, y) pair of tensors "
                            f"(got {type(batch).__name__})")
        yield batch[0].to(device), batch[1].to(device)


def _evaluate_stream(model: nn.Module, data: Any, named: dict[str, Any], eps: list[float], *,
                     batch_size: int, seed: int, progress: bool) -> Evaluation:
    """:func:`evaluate` over a loader, batch by batch: per batch the clean predictions, then every
    (attack, ε) on the batch's correctly classified points, each with its own generator carried
    across batches. Only per-point records (flags, norms) are kept."""
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    jobs = [(name, e) for e in eps for name in named]
    attacks = {(name, e): at_radius(named[name], e) for name, e in jobs}
    balls = {k: ThreatModel(norm=a.norm, eps=k[1], bounds=getattr(a, "bounds", (0.0, 1.0)))
             for k, a in attacks.items()}
    gens = {k: torch.Generator(device=device).manual_seed(seed) for k in jobs}
    broken: dict[tuple[str, float], list[Tensor]] = {k: [] for k in jobs}
    norms: dict[tuple[str, float], list[Tensor]] = {k: [] for k in jobs}
    queries: dict[tuple[str, float], list[Tensor]] = {k: [] for k in jobs}
    grads = {k: 0 for k in jobs}
    secs = {k: 0.0 for k in jobs}
    correct_parts: list[Tensor] = []
    bounds = next(iter(named.values())).bounds
    bar = tqdm(desc="evaluate (streaming)", unit="pt", disable=not progress, leave=False)
    for xb, yb in _stream_batches(data, batch_size, device):
        check_inputs(model, xb, yb, bounds=bounds)
        correct = clean_predictions(model, xb, y=yb, batch_size=max(batch_size, 512)) == yb
        correct_parts.append(correct.cpu())
        idx = correct.nonzero().squeeze(1)
        for k in jobs:
            attack = attacks[k]
            b_broken = torch.zeros(xb.shape[0], dtype=torch.bool, device=device)
            b_norms = torch.full((xb.shape[0],), float("nan"), device=device)
            b_queries = torch.full((xb.shape[0],), -1, dtype=torch.int64, device=device)
            t0 = time.perf_counter()
            for i in range(0, int(idx.numel()), batch_size):
                b = idx[i:i + batch_size]
                res = attack(victim(attack, model), xb[b], yb[b], generator=gens[k])
                b_broken[b] = hit(attack, res, model, xb[b], yb[b], balls[k])
                b_norms[b] = res.norms.to(b_norms.dtype)
                if res.queries is not None:
                    b_queries[b] = res.queries.to(torch.int64)
                grads[k] += int(res.num_grads.sum())
            secs[k] += time.perf_counter() - t0
            broken[k].append(b_broken.cpu())
            norms[k].append(b_norms.cpu())
            queries[k].append(b_queries.cpu())
        bar.update(int(xb.shape[0]))
    bar.close()
    if not correct_parts:
        raise ValueError("evaluate: the loader yielded no batches")
    correct = torch.cat(correct_parts)
    n, n_correct = int(correct.numel()), int(correct.sum())
    clean_acc = n_correct / n
    rows: list[EvalRow] = []
    per_point: dict[str, Tensor] = {}
    point_norms = {f"{name}@{e:g}": torch.cat(norms[(name, e)]) for name, e in jobs}
    point_queries = {f"{name}@{e:g}": torch.cat(queries[(name, e)]) for name, e in jobs}
    broken_any = {e: torch.zeros(n, dtype=torch.bool) for e in eps}
    for name, e in jobs:
        k = (name, e)
        flags = torch.cat(broken[k])
        rows.append(_row(name, attacks[k], e, n, n_correct, flags, torch.cat(norms[k]), grads[k], secs[k],
                         clean_acc))
        per_point[f"{name}@{e:g}"] = flags
        broken_any[e] |= flags
    if len(named) > 1:
        any_attack = next(iter(named.values()))
        for e in eps:
            at_e = [(name, e) for name in named]
            rows.append(_row(WORST_CASE, at_radius(any_attack, e), e, n, n_correct, broken_any[e],
                             torch.full((n,), float("nan")), sum(grads[k] for k in at_e),
                             sum(secs[k] for k in at_e), clean_acc, config="any of: " + ", ".join(named)))
    prov = provenance(seed=seed, batch_size=batch_size, norm=rows[0].norm, streamed=True,
                      attacks={k: _at_every_eps(v, eps) for k, v in named.items()})
    per_point["correct"] = correct
    return Evaluation(rows=rows, provenance=prov, per_point=per_point, point_norms=point_norms,
                      point_queries=point_queries)


def _named_attacks(attacks: Sequence[AttackLike] | Mapping[str, AttackLike], eps: Sequence[float]) -> dict[str, Any]:
    """``{name: attack}`` from a mapping or a sequence of attacks or registry names
    (``"pgd"``); each checked to be an ε-bounded attack that ``dataclasses.replace`` can re-run
    at every ε."""
    from advlab.attacks.registry import display_name, make_attack

    if isinstance(attacks, (str, bytes)) or not isinstance(attacks, (Mapping, Sequence)):
        raise TypeError(f"evaluate: attacks must be a list of attacks or a {{name: attack}} mapping, got "
                        f"{type(attacks).__name__}")
    items = list(attacks.items()) if isinstance(attacks, Mapping) else [(None, a) for a in attacks]
    named: dict[str, Any] = {}
    for name, a in items:
        if isinstance(a, str):
            # built at the largest ε (some attacks refuse 0), re-run below at every ε
            top = max([float(e) for e in eps] + [0.0]) or 1.0
            name, a = name or display_name(a), make_attack(a, eps=top, strict=False)
        check_bounded(a, repr(name) if name is not None else type(a).__name__, "evaluate")
        if not (dataclasses.is_dataclass(a) and radius_of(a) is not None):
            raise TypeError(f"evaluate re-runs each attack at every ε with dataclasses.replace(attack, "
                            f"eps=e); {type(a).__name__} is not an attack configuration with an eps")
        key = str(name) if name is not None else _name(a)
        while key in named:
            key += "'"
        named[key] = a
    if not named:
        raise ValueError("evaluate needs at least one attack")
    return named


def _at_every_eps(attack: AttackLike, eps: Sequence[float]) -> str:
    """The configuration as it ran: its radius field reads "each ε of the list", not the ε it was
    built with (provenance said ``eps=0.0`` for attacks built at 0 and re-run at every ε)."""
    text = config_repr(at_radius(attack, eps[0]))
    field = getattr(type(attack), "radius", "eps")
    return text.replace(f"{field}={float(eps[0])!r}", f"{field}=each of {list(eps)}", 1)


def _row(name: str, attack: AttackLike, e: float, n: int, n_correct: int, broken: Tensor, norms: Tensor,
         grads: int, secs: float, clean_acc: float, config: str | None = None) -> EvalRow:
    n_broken = int(broken.sum())
    ok = norms[broken & torch.isfinite(norms)]
    return EvalRow(attack=name, eps=e, norm=str(attack.norm), n=n, n_correct=n_correct,
                   n_robust=n_correct - n_broken, clean_accuracy=clean_acc,
                   robust_accuracy=(n_correct - n_broken) / n,
                   success_rate=n_broken / n_correct if n_correct else float("nan"),
                   median_norm=float(ok.median()) if ok.numel() else float("nan"),
                   mean_norm=float(ok.mean()) if ok.numel() else float("nan"),
                   grads=grads, seconds=secs,
                   config=config if config is not None else config_repr(attack))
