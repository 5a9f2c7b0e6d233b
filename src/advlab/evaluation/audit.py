"""Gradient-masking audit: the sanity checks of Carlini et al. (2019, "On Evaluating Adversarial
Robustness", Sec. 5-7) and Athalye, Carlini & Wagner (2018, "Obfuscated Gradients Give a False
Sense of Security"), run as one call after (or instead of) an evaluation.

A robustness number means little when the attacks behind it could not follow the model's
gradient. Each check below is a symptom of that, and each failure comes with what it suggests:

* ``logits``: the model returns logits, not probabilities (softmax outputs saturate gradients);
* ``deterministic``: two forward passes agree (a randomised model needs EOT);
* ``gradients``: input gradients of the loss are finite and non-zero on almost every point
  (vanishing / shattered gradients: distillation, non-differentiable layers);
* ``iterative_beats_single_step``: PGD succeeds at least as often as FGSM;
* ``success_rises_with_eps``: PGD's success does not fall as ε grows;
* ``unbounded_succeeds``: with ε covering the whole input box PGD fools (almost) every point;
* ``white_box_beats_transfer``: attacking the model itself beats transferring from a surrogate
  trained on the model's own labels;
* ``white_box_beats_noise``: PGD beats a query-only baseline, random points of the ε-ball.

Example:
    >>> report = audit(model, x, y, norm="linf", eps=0.1)
    >>> report.passed, [c.name for c in report.failed_checks]
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from advlab.attacks.contract import AttackLike, needs_autograd
from advlab._checks import as_labels, check_inputs, check_int, check_model, eval_mode
from advlab.attacks import FGSM, PGD
from advlab.evaluation._attack import access_of, check_bounded
from advlab.evaluation.robustness import provenance
from advlab.threat import ThreatModel, canonical_norm

log = logging.getLogger(__name__)

REQUIRED_ATTACKS = ("single_step", "iterative")


@dataclass(frozen=True)
class Check:
    """One audit check: its outcome, the numbers behind it, and what a failure suggests."""

    name: str
    passed: bool
    detail: str
    advice: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReport:
    """All checks of an audit; ``passed`` only if every check passed."""

    checks: tuple[Check, ...]
    norm: str
    eps: float
    n: int
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {', '.join(c.name for c in self.checks)}")

    def summary(self) -> dict[str, Any]:
        """Scalars for logs and results (as every ``summary()`` in advlab); :meth:`table` is the text."""
        return {"passed": self.passed, "norm": self.norm, "eps": self.eps, "n": self.n,
                "failed_checks": [c.name for c in self.failed_checks]}

    def table(self) -> str:
        """The audit as text for people: one line per check, with advice on the failed ones."""
        lines = [f"Gradient-masking audit ({self.norm}, ε={self.eps:g}, n={self.n}): "
                 f"{'PASSED' if self.passed else 'FAILED ' + str(len(self.failed_checks)) + ' check(s)'}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
            if not c.passed and c.advice:
                lines.append(f"         -> {c.advice}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "norm": self.norm, "eps": self.eps, "n": self.n,
                "checks": [asdict(c) for c in self.checks], "provenance": dict(self.provenance)}


def _success(attack: AttackLike, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int,
             seed: int) -> Tensor:
    gen = torch.Generator(device=x.device).manual_seed(seed)
    parts = [attack(model, x[i:i + batch_size], y[i:i + batch_size], generator=gen).success
             for i in range(0, x.shape[0], batch_size)]
    return torch.cat(parts)


def _judged(attack: AttackLike, model: nn.Module, judge: nn.Module, x: Tensor, y: Tensor, *, batch_size: int,
            seed: int) -> Tensor:
    """Whether ``attack`` crafted on ``model`` fools ``judge`` (``(B,)`` bool)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    parts = []
    for i in range(0, x.shape[0], batch_size):
        adv = attack(model, x[i:i + batch_size], y[i:i + batch_size], generator=gen).x_adv
        with torch.no_grad(), eval_mode(judge):
            parts.append(judge(adv).argmax(1) != y[i:i + batch_size])
    return torch.cat(parts)


def _rate(success: Tensor) -> float:
    """The fraction of ``True`` in a ``(B,)`` bool tensor."""
    return success.float().mean().item()


def _not_beaten(name: str, white_box: tuple[str, float], other: tuple[str, float], tolerance: float,
                detail: str, advice: str) -> Check:
    """The check that the gradient attack's success rate ``white_box`` is at least ``other``'s (less
    ``tolerance``); ``values`` holds both rates under their names."""
    (w_name, w_rate), (o_name, o_rate) = white_box, other
    return Check(name, w_rate + tolerance >= o_rate, detail, advice, {w_name: w_rate, o_name: o_rate})


def _train_surrogate(model: nn.Module, x: Tensor, *, num_classes: int, seed: int,
                     epochs: int = 20) -> nn.Module:
    """A small MLP fitted to the model's own predictions on ``x`` (labels only, no gradients)."""
    with torch.no_grad(), eval_mode(model):
        labels = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, x.shape[0], 512)])
    d = x[0].numel()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sur = nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, num_classes)).to(x.device)
    opt = torch.optim.Adam(sur.parameters(), lr=1e-3)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen, device=x.device)
        for i in range(0, x.shape[0], 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(sur(x[b]), labels[b]).backward()
            opt.step()
    return sur.eval()


def _noise_success(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, *, samples: int,
                   seed: int, batch_size: int) -> Tensor:
    """Query-only baseline: a point counts as broken if any of ``samples`` random points of the
    ε-ball around it is misclassified."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.no_grad(), eval_mode(model):
        for _ in range(samples):
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                if threat.norm == "linf":  # corners of the box are the strongest random points
                    sign = torch.empty_like(xb).bernoulli_(0.5, generator=gen) * 2 - 1
                    xr = threat.project(xb + threat.eps * sign, xb)
                else:
                    xr = threat.random_start(xb, generator=gen)
                broken[i:i + batch_size] |= model(xr).argmax(1) != y[i:i + batch_size]
    return broken


@needs_autograd
def audit(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "linf", eps: float,
          bounds: tuple[float, float] = (0.0, 1.0), attacks: Mapping[str, AttackLike] | None = None,
          surrogate: nn.Module | None = None, steps: int = 20, noise_samples: int = 20,
          max_points: int = 500, batch_size: int = 250, seed: int = 0,
          tolerance: float = 0.02, zero_grad_fraction: float = 0.1, adaptive: bool = True,
          eot_samples: int = 10) -> AuditReport:
    """Run the gradient-masking checks on ``model`` over (at most ``max_points`` of) ``x, y``.

    Args:
        model: an ``nn.Module`` returning logits (a probability model is reported, not rejected).
        x, y: inputs inside ``bounds`` and their labels.
        norm, eps, bounds: the threat model of the evaluation being audited.
        attacks: optional ``{"single_step": ..., "iterative": ...}`` attack configurations to use
            instead of FGSM and PGD (each must accept ``eps`` via ``dataclasses.replace``).
        surrogate: a model to transfer from; by default an MLP fitted to ``model``'s labels.
        steps: PGD steps for the iterative checks.
        noise_samples: random points per input for the query-only baseline.
        tolerance: slack for comparisons between success rates.
        zero_grad_fraction: the share of points with zero or non-finite gradients that fails the
            ``gradients`` check.
        adaptive: when the ``gradients`` or ``deterministic`` check fails, re-attack with the
            adaptive attacks of Athalye et al. (2018): BPDA through the layer of an
            ``nn.Sequential`` that blocks the gradient (identity approximation), EOT over
            ``eot_samples`` forward passes for a randomised model; the ``adaptive_attack`` check
            fails when they succeed clearly more often than the plain iterative attack (the
            masking hid real vulnerability), and reports both success rates.

    Returns:
        An :class:`AuditReport` (``.passed``, ``.failed_checks`` with advice, ``.table()``).
    """
    import dataclasses

    check_model(model)
    norm = canonical_norm(norm)
    threat = ThreatModel(norm=norm, eps=eps, bounds=bounds)
    if not math.isfinite(threat.eps) or threat.eps <= 0:
        raise ValueError(f"audit needs a finite eps > 0, got {eps!r}")
    check_inputs(model, x, y, bounds=threat.bounds)
    y = as_labels(y)  # any integer dtype
    if attacks is not None:
        missing = [k for k in REQUIRED_ATTACKS if k not in attacks]
        if missing:
            raise ValueError(f"audit needs attacks for {', '.join(REQUIRED_ATTACKS)}; missing: "
                             f"{', '.join(missing)} (or pass attacks=None for FGSM and PGD)")
        single, iterative = attacks["single_step"], attacks["iterative"]
        for role, a in (("single_step", single), ("iterative", iterative)):
            check_bounded(a, role, "audit")
            if access_of(a) != "gradients":
                raise ValueError(f"audit: the {role} attack must be a white-box gradient attack (it "
                                 f"checks the model's gradients), got {type(a).__name__} with "
                                 f"access={access_of(a)!r}; black-box attacks are the audit's baseline")
    else:
        single = FGSM(eps=eps, norm=norm, bounds=threat.bounds)
        iterative = PGD(eps=eps, norm=norm, steps=steps, bounds=threat.bounds)
    check_int("max_points", max_points)
    check_int("batch_size", batch_size)
    x, y = x[:max_points].detach(), y[:max_points]
    n = x.shape[0]
    checks: list[Check] = []

    with eval_mode(model), torch.no_grad():
        out1 = torch.cat([model(x[i:i + batch_size]) for i in range(0, n, batch_size)])
        out2 = torch.cat([model(x[i:i + batch_size]) for i in range(0, n, batch_size)])
    num_classes = out1.shape[1]
    if not bool(torch.isfinite(out1).all()):
        raise ValueError("the model returned NaN or Inf logits on the audit points; check the model and "
                         "its input range (the audit diagnoses gradients, not non-finite outputs)")
    if int(y.max()) >= num_classes:
        raise ValueError(f"y contains class {int(y.max())} but the model has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    probs_like = bool((out1 >= 0).all()) and bool(torch.allclose(out1.sum(1), torch.ones(n, device=x.device), atol=1e-4))
    checks.append(Check(
        "logits", not probs_like,
        "outputs are probabilities (non-negative rows summing to 1)" if probs_like else "outputs are logits",
        "remove the final softmax; attack the logits (a softmax output saturates and hides gradients)",
        {"probabilities": probs_like}))
    max_diff = float((out1 - out2).abs().max())
    checks.append(Check(
        "deterministic", max_diff == 0.0, f"two forward passes differ by at most {max_diff:.3g}",
        "the model is randomised: evaluate with expectation over transformation (average gradients over "
        "several samples, e.g. APGD(eot_iter=20)) and report the randomness", {"max_abs_diff": max_diff}))
    if probs_like:  # every attack below needs logits: report what was found and stop here
        prov = provenance(seed=seed)
        return AuditReport(checks=tuple(checks), norm=norm, eps=float(eps), n=n, provenance=prov)
    correct = out1.argmax(1) == y
    if not bool(correct.any()):
        raise ValueError("the model classifies none of the audit points correctly; audit a trained model")
    xc, yc = x[correct], y[correct]
    nc = xc.shape[0]

    # -- gradients ------------------------------------------------------------------------
    zero = bad = 0
    with eval_mode(model), torch.enable_grad():
        for i in range(0, nc, batch_size):
            xb = xc[i:i + batch_size].clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xb), yc[i:i + batch_size], reduction="sum")
            g, = torch.autograd.grad(loss, xb, allow_unused=True)
            if g is None:
                zero += xb.shape[0]
                continue
            flat = g.flatten(1)
            finite = torch.isfinite(flat).all(1)
            bad += int((~finite).sum())
            zero += int(((flat == 0).all(1) & finite).sum())
    frac = (zero + bad) / nc
    checks.append(Check(
        "gradients", frac <= zero_grad_fraction,
        f"{zero} of {nc} correctly classified points have an exactly zero loss gradient, {bad} a non-finite one",
        "vanishing or shattered gradients (saturated softmax as in defensive distillation, or a "
        "non-differentiable layer): attack the logits with the C&W margin or DLR loss, and replace "
        "non-differentiable layers by a differentiable approximation (BPDA)",
        {"zero": zero, "nonfinite": bad, "points": nc}))

    # -- single step vs iterative ---------------------------------------------------------
    s_single = _rate(_success(single, model, xc, yc, batch_size=batch_size, seed=seed))
    s_iter = _rate(_success(iterative, model, xc, yc, batch_size=batch_size, seed=seed))
    checks.append(_not_beaten(
        "iterative_beats_single_step", ("iterative", s_iter), ("single_step", s_single), tolerance,
        f"success {100 * s_iter:.1f}% (iterative) vs {100 * s_single:.1f}% (single step) of {nc} points",
        "a single step beats the iterative attack: the loss surface is masked locally; try more steps, "
        "random restarts, a different loss, or attack a smoothed surrogate"))

    # -- monotone in eps, unbounded reaches 100% ------------------------------------------
    grid = [eps / 4, eps / 2, eps, 2 * eps, 4 * eps]
    rates = [_rate(_success(dataclasses.replace(iterative, eps=e), model, xc, yc, batch_size=batch_size,
                            seed=seed)) for e in grid]
    drops = [(a, b) for a, b in zip(rates, rates[1:]) if b + tolerance < a]
    checks.append(Check(
        "success_rises_with_eps", not drops,
        "success at ε × (1/4, 1/2, 1, 2, 4): " + ", ".join(f"{100 * r:.1f}%" for r in rates),
        "success falls as ε grows: the attack is not converging; increase steps or restarts",
        {"eps": grid, "success": rates}))
    lo, hi = threat.box(xc[:1])  # per-feature bounds too: the radius that covers the whole box
    widths = (hi - lo).expand_as(xc[:1]).flatten().double() if isinstance(hi, torch.Tensor) else None
    if widths is None:
        d = xc[0].numel()
        full = {"linf": hi - lo, "l2": (hi - lo) * math.sqrt(d), "l1": (hi - lo) * d}[norm]
    else:
        full = float({"linf": widths.max(), "l2": widths.square().sum().sqrt(), "l1": widths.sum()}[norm])
    unbounded = dataclasses.replace(iterative, eps=full)
    if hasattr(unbounded, "steps"):
        unbounded = dataclasses.replace(unbounded, steps=max(2 * steps, 20))
    s_unb = _rate(_success(unbounded, model, xc, yc, batch_size=batch_size, seed=seed))
    checks.append(Check(
        "unbounded_succeeds", s_unb >= 0.99,
        f"with ε = {full:.3g} (the whole input box) the iterative attack fools {100 * s_unb:.1f}% of points",
        "an unbounded attack must reach 100%; below it the attack is failing, not the model "
        "resisting: gradients are masked (see the gradients check) or the attack is misconfigured",
        {"eps": full, "success": s_unb}))

    # -- white box vs transfer and vs query-only noise -----------------------------------
    sur = surrogate if surrogate is not None else _train_surrogate(model, x, num_classes=num_classes, seed=seed)
    s_transfer = 0.0
    gen = torch.Generator(device=x.device).manual_seed(seed)
    fooled = []
    for i in range(0, nc, batch_size):
        adv = iterative(sur, xc[i:i + batch_size], yc[i:i + batch_size], generator=gen).x_adv
        with torch.no_grad(), eval_mode(model):
            fooled.append(model(adv).argmax(1) != yc[i:i + batch_size])
    s_transfer = _rate(torch.cat(fooled))
    checks.append(_not_beaten(
        "white_box_beats_transfer", ("white_box", s_iter), ("transfer", s_transfer), tolerance,
        f"white-box success {100 * s_iter:.1f}% vs {100 * s_transfer:.1f}% transferred from a surrogate",
        "examples crafted on another model fool this one more often than its own gradients do: "
        "its gradients are masked; report the transfer attack and use BPDA or a surrogate"))
    s_noise = _rate(_noise_success(model, xc, yc, threat, samples=noise_samples, seed=seed,
                                   batch_size=batch_size))
    checks.append(_not_beaten(
        "white_box_beats_noise", ("white_box", s_iter), ("noise", s_noise), tolerance,
        f"white-box success {100 * s_iter:.1f}% vs {100 * s_noise:.1f}% for {noise_samples} random points "
        "of the ε-ball (query-only)",
        "random perturbations beat the gradient attack: gradients are masked; use gradient-free "
        "(score- or decision-based) attacks as well"))
    # -- adaptive attacks where the gradient checks failed (Athalye et al. 2018) ----------------
    masked = frac > zero_grad_fraction
    randomised = max_diff != 0.0
    if adaptive and (masked or randomised):
        check_int("eot_samples", eot_samples)
        adapted, how = _adapt(model, xc, yc, masked=masked, randomised=randomised, samples=eot_samples,
                              batch_size=batch_size, zero_grad_fraction=zero_grad_fraction)
        if adapted is None:
            log.info("audit: gradients are masked but no adaptive attack applies (%s)", how)
            checks.append(Check(
                "adaptive_attack", False, f"no adaptive attack could be built: {how}",
                "wrap the model yourself: advlab.attacks.BPDA(preprocess, rest) around a non-differentiable "
                "preprocessing, advlab.attacks.EOT(model, samples=k) around a randomised one, and attack that",
                {"method": None}))
        else:
            s_adapted = _rate(_success(iterative, adapted, xc, yc, batch_size=batch_size, seed=seed))
            # both attacks judged alike: by the adapted model's answer (for a randomised model the
            # expected prediction; one noisy forward pass would count lucky draws as successes)
            s_plain = _rate(_judged(iterative, model, adapted, xc, yc, batch_size=batch_size, seed=seed))
            checks.append(Check(
                "adaptive_attack", s_adapted <= s_plain + tolerance,
                f"{how}: the iterative attack succeeds on {100 * s_adapted:.1f}% of {nc} points vs "
                f"{100 * s_plain:.1f}% without it",
                "the masking hid real vulnerability: report robust accuracy under the adaptive attack "
                f"({how}), not under the plain one",
                {"method": how, "success": s_adapted, "plain_success": s_plain}))
    prov = provenance(seed=seed, attacks={"single_step": repr(single), "iterative": repr(iterative)})
    report = AuditReport(checks=tuple(checks), norm=norm, eps=float(eps), n=n, provenance=prov)
    log.info("%s", report.table())
    return report


def _blocking_layer(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int,
                    zero_grad_fraction: float) -> int | None:
    """The first child of an ``nn.Sequential`` that keeps its input's shape and passes back a zero
    (or non-finite) gradient for more than ``zero_grad_fraction`` of the points while the layers
    after it do not: the layer BPDA should go around."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        return None
    xb, yb = x[:batch_size], y[:batch_size]
    with eval_mode(model), torch.enable_grad():
        h = xb
        for i in range(len(model) - 1):
            h_in = h.detach().requires_grad_(True)
            out = model[i](h_in)
            if out.shape == h_in.shape:
                loss = nn.functional.cross_entropy(model[i + 1:](out), yb, reduction="sum")
                g_in, = torch.autograd.grad(loss, h_in, allow_unused=True)
                flat = None if g_in is None else g_in.flatten(1)
                blocked = (xb.shape[0] if flat is None
                           else int((~torch.isfinite(flat).all(1) | (flat == 0).all(1)).sum()))
                if blocked > zero_grad_fraction * xb.shape[0]:
                    return i
            h = out.detach()
    return None


def _adapt(model: nn.Module, x: Tensor, y: Tensor, *, masked: bool, randomised: bool, samples: int,
           batch_size: int, zero_grad_fraction: float) -> tuple[nn.Module | None, str]:
    """The adaptive model to attack, and how it was built (or why none could be)."""
    from advlab.attacks.adaptive import BPDA, EOT

    target: nn.Module | None = model
    parts = []
    if masked:
        i = _blocking_layer(model, x, y, batch_size=batch_size, zero_grad_fraction=zero_grad_fraction)
        if i is None:
            if not randomised:
                return None, ("the model is not an nn.Sequential with a shape-preserving layer that blocks the "
                              "gradient")
        else:
            layer = model[i]
            target = BPDA(model[:i + 1], model[i + 1:], approx=model[:i] if i > 0 else None)
            parts.append(f"BPDA (identity) through layer {i} ({type(layer).__name__})")
    if randomised:
        target = EOT(target, samples=samples)
        parts.append(f"EOT over {samples} samples")
    target.train(model.training)   # (slices of a Sequential are new modules, in training mode)
    return target, " + ".join(parts)
