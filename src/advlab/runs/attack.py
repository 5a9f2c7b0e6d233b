"""``advlab attack``: one attack on a saved model; adversarial examples, metrics and a gallery."""

from __future__ import annotations

import json
import math
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors.torch import save_file

from advlab._io import atomic_write, atomic_write_text
from advlab.attacks import AttackResult, make_attack, random_targets
from advlab.attacks.registry import DISPLAY_NAMES, attack_key
from advlab.evaluation import provenance
from advlab.models import load

from advlab.runs._common import (ModelSource, budget_alias_arg, command_steps, describe, model_bounds, write_examples,
                                 open_model, say)

log = logging.getLogger(__name__)


@dataclass
class AttackOutput:
    result: AttackResult
    metrics: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def attack_job(*, checkpoint: ModelSource, attack: str, eps: float | None, out: str | Path,
               norm: str | None = None, steps: int | None = None, step_size: float | None = None,
               targeted: bool = False, n: int = 100, batch_size: int = 250, seed: int = 0,
               budget: int | None = None, source: str | Path | None = None,
               data: str | None = None, data_dir: str | None = None, download: bool = False,
               gallery_size: int = 6, quiet: bool = False, progress: bool = True,
               queries: int | None = None, device: str = "cpu") -> AttackOutput:
    """Attack a saved model on ``n`` test images; save the adversarial examples, metrics, gallery.

    White-box attacks get the model. Black-box attacks (``square``, ``simba``, ``nes``, ...) get
    only ``Oracle(model, output=..., budget=budget)``: ``budget`` is the per-point query budget
    (``queries`` its deprecated name), and the metrics record the queries each point used and how
    many ran out of budget. With
    ``source`` (a checkpoint), the white-box ``attack`` is crafted on that model and transferred:
    the target is asked one label per point. Minimal-perturbation attacks take no ``eps``.
    """
    from advlab.attacks.registry import BLACKBOX, entry
    from advlab.oracle import Oracle

    key = attack_key(attack)
    try:
        spec = entry(attack)
    except ValueError as err:  # `advlab attack` also runs the universal attacks
        raise ValueError(f"{err}; universal (advlab attack only): uap, patch") from None
    if spec.kind == "universal":
        raise ValueError(f"{attack} fits one perturbation for all inputs: run it with --attack uap|patch")
    if not spec.takes_eps and eps is not None:
        raise ValueError(f"{attack} looks for the smallest perturbation: it takes no --eps")
    if spec.takes_eps and eps is None:
        raise ValueError(f"{attack} needs --eps (the perturbation budget)")
    budget = budget_alias_arg(budget, queries, "attack_job")
    if budget is not None and not spec.black_box:
        raise ValueError(f"--budget is for black-box attacks ({', '.join(BLACKBOX)}); {attack} is white-box")
    if source is not None and spec.black_box:
        raise ValueError("--source crafts a white-box attack on a substitute; use a white-box attack with it")
    model, card, ds = open_model(checkpoint, data=data, data_dir=data_dir, download=download, n=n,
                                 device=device)
    options: dict[str, Any] = {"eps": eps, "norm": norm, "steps": command_steps(key, steps),
                               "step_size": step_size, "bounds": model_bounds(card)}
    if spec.black_box and budget is not None:
        options["budget"] = budget
    config = make_attack(key, strict=True, **options)
    victim: Any = model
    bar = None
    if spec.black_box:
        # a query attack on 50 points can run for minutes: show the queries as they are answered
        from tqdm.auto import tqdm

        per_point = budget if budget is not None else getattr(config, "budget", None)
        bar = tqdm(total=per_point * len(ds) if per_point else None, desc=f"{key} queries", unit="q",
                   disable=not progress, leave=False, mininterval=0.5)
        victim = Oracle(_Counted(model, bar).eval(), output=spec.oracle_output, budget=budget)  # type: ignore[arg-type]
    elif source is not None:
        from advlab.attacks import TransferAttack
        config = TransferAttack(attack=config, source=load(source, device=ds.x.device))
        victim = Oracle(model, output="label")
    gen = torch.Generator(device=ds.x.device).manual_seed(seed)
    target = random_targets(ds.y, ds.num_classes, generator=gen) if targeted else None
    t0 = time.perf_counter()
    parts, source_parts = [], []
    for i in range(0, len(ds), batch_size):
        sl = slice(i, i + batch_size)
        res = config(victim, ds.x[sl], ds.y[sl], generator=gen,
                     target=None if target is None else target[sl])
        if source is not None:
            source_parts.append(res.source)
            res = res.target
        parts.append(res)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    result = AttackResult.concat(parts)
    with torch.no_grad():
        clean_logits = torch.cat([model(ds.x[i:i + 1000]) for i in range(0, len(ds), 1000)])
    clean_conf, clean_pred = torch.softmax(clean_logits, 1).max(1)
    correct = clean_pred == ds.y
    n_correct = int(correct.sum())
    broken = result.success & correct
    metrics = {
        "attack": result.attack, "checkpoint": describe(checkpoint), "device": str(ds.x.device),
        "dataset": ds.name, "n": len(ds),
        "targeted": targeted, "norm": result.threat.norm,
        "eps": result.threat.eps if math.isfinite(result.threat.eps) else None,
        "clean_accuracy": n_correct / len(ds),
        "robust_accuracy": float((correct & ~result.success).float().mean()) if not targeted else None,
        "success_rate_over_correct": int(broken.sum()) / n_correct if n_correct else None,
        "denominator": f"{n_correct} correctly classified of {len(ds)}",
        "median_norm_of_successes": float(result.norms[broken].median()) if broken.any() else None,
        "grads": int(result.num_grads.sum()), "seconds": seconds,
        "provenance": provenance(seed=seed),
    }
    if result.queries is not None:
        q = result.queries[correct].float()
        metrics.update({
            "access": "black-box: " + ("labels only" if isinstance(victim, Oracle) and victim.output == "label"
                                       else "scores"),
            "query_budget_per_point": budget,
            "queries_mean": float(q.mean()) if q.numel() else None,
            "queries_median": float(q.median()) if q.numel() else None,
            "queries_mean_per_success": float(result.queries[broken].float().mean()) if broken.any() else None,
            "budget_exhausted": int((result.budget_exhausted & correct).sum())
            if result.budget_exhausted is not None else 0,
        })
    if source_parts:
        src = AttackResult.concat(source_parts)
        metrics["transfer"] = {"source": str(source),
                               "source_white_box_success": float(src.success[correct].float().mean())
                               if n_correct else None}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"adversarial": out / "adversarial.safetensors", "metrics": out / "metrics.json"}
    tensors = {"x": ds.x, "x_adv": result.x_adv, "y": ds.y, "pred_adv": result.pred,
               "success": result.success.to(torch.uint8), "clean_pred": clean_pred}
    if target is not None:
        tensors["target"] = target
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(files["adversarial"], lambda tmp: save_file(
        cpu, tmp, metadata={"attack": result.attack, "class_names": json.dumps(list(ds.class_names))}))
    atomic_write_text(files["metrics"], json.dumps(metrics, indent=2) + "\n")
    shown, _ = write_examples(ds, ds.x, result, clean_pred=clean_pred, clean_conf=clean_conf, y=ds.y, out=out,
                              n=gallery_size)
    files.update(shown)
    rate = metrics["success_rate_over_correct"]
    radius = f"ε={eps:g}" if eps is not None else "minimal perturbation"
    say(f"{DISPLAY_NAMES.get(key, attack)} {radius}: success {100 * (rate or 0):.1f}% of the "
         f"{n_correct} correctly classified of {len(ds)} {'images' if ds.kind == 'image' else 'inputs'}; files in {out}", quiet)
    return AttackOutput(result=result, metrics=metrics, files=files)


class _Counted(nn.Module):
    """The model behind a job's oracle, advancing a progress bar by the rows it answers."""

    def __init__(self, model: nn.Module, bar: Any) -> None:
        super().__init__()
        self.model = model
        self.bar = bar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.bar.update(int(x.shape[0]))
        return out
