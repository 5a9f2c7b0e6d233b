"""The attack contract, driven over every attack in the registry (as Foolbox's AttackTestTarget).

Each registry key gets a cheap setting in CASES (a key without one fails the first test, so a new
attack cannot join the registry untested). For every attack the same invariants must hold:
outputs inside the threat model (ball and box), nothing it was given mutated, the same result
under the same generator, ``success`` meaning exactly the criterion on the returned points
(default, targeted, a probability criterion and a composed one), and result fields that agree
with the model's own answers at ``x_adv``.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from _helpers import assert_unchanged, snapshot
from advlab.attacks import ATTACKS, make_attack, random_targets
from advlab.attacks.contract import ACCESS, KINDS, Attack
from advlab.attacks.criteria import ConfidenceBelow, Misclassified, NotRejected, TargetClass
from advlab.oracle import Oracle

# cheap settings per registry key; black-box attacks spend at most BUDGET queries per point
CASES: dict[str, dict] = {
    "fgsm": {"eps": 0.1}, "fgm": {"eps": 1.0},
    "ifgsm": {"eps": 0.1, "steps": 3}, "bim": {"eps": 0.1, "steps": 3},
    "pgd": {"eps": 0.1, "steps": 3}, "mifgsm": {"eps": 0.1, "steps": 3}, "mifgm": {"eps": 1.0, "steps": 3},
    "apgdce": {"eps": 0.1, "steps": 4}, "apgddlr": {"eps": 0.1, "steps": 4},
    "apgdt": {"eps": 0.1, "steps": 3, "n_target_classes": 2},
    "deepfool": {"steps": 5}, "cw": {"steps": 10, "binary_search_steps": 2}, "lbfgs": {"steps": 5, "binary_search_steps": 2},
    "cwl2": {"steps": 10, "binary_search_steps": 2}, "fmn": {"steps": 10},
    "fab": {"eps": 0.1, "steps": 3}, "fabt": {"eps": 0.1, "steps": 3, "n_target_classes": 2},
    "square": {"eps": 0.1}, "simba": {"eps": 0.2}, "simbadct": {"eps": 0.2}, "simbapixel": {"eps": 0.2},
    "nes": {"eps": 0.1}, "hsj": {}, "hopskipjump": {}, "boundary": {},
    "jsma": {"gamma": 0.1}, "pgdl0": {"eps": 4, "steps": 3}, "tree": {},
}
BUDGET = {"scores": 60, "labels": 150}
# structural attacks read a model's structure, not its gradients (TreeAttack: a decision tree);
# they cannot run on the CNN below and are held to the same invariants in tests/attacks/test_tree.py
STRUCTURAL = {k for k in CASES if getattr(ATTACKS[k].cls, "structural", False)}
KEYS = sorted(set(CASES) - STRUCTURAL)


def _victim(key: str, model: torch.nn.Module):
    e = ATTACKS[key]
    if e.oracle_output is None:
        return model
    return Oracle(model, output=e.oracle_output, budget=BUDGET[e.access])  # type: ignore[arg-type]


def _call(key, model, x, y, **kw):
    return make_attack(key, **CASES[key])(_victim(key, model), x, y, **kw)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch(digits, cnn_model):
    x, y = digits["x_test"][:6], digits["y_test"][:6].clone()
    y[0] = (cnn_model(x[:1]).argmax(1) + 1) % 10  # one point misclassified before any attack
    return x, y


def test_every_registry_attack_has_a_case_and_declares_its_contract():
    assert set(CASES) == set(ATTACKS), "add a CASES entry for every registry key"
    for key, e in ATTACKS.items():
        assert issubclass(e.cls, Attack), key
        assert e.access in ACCESS and e.kind in KINDS, key
        assert isinstance(make_attack(key, **CASES[key]), Attack)


@pytest.mark.parametrize("key", KEYS)
def test_outputs_inside_the_threat_model_and_fields_agree_with_the_model(key, cnn_model, batch):
    x, y = batch
    r = _call(key, cnn_model, x, y, generator=_gen())
    b = x.shape[0]
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype and torch.isfinite(r.x_adv).all()
    assert r.threat.contains(r.x_adv, x).all()
    lo, hi = r.threat.bounds
    assert r.x_adv.min() >= lo and r.x_adv.max() <= hi
    eps = CASES[key].get("eps")  # by name, eps is the ball's radius for every attack (SimBA too)
    assert r.threat.eps == (eps if eps is not None else math.inf)
    assert torch.equal(r.norms, r.threat.norm_of(r.x_adv - x))
    for t in (r.success, r.pred, r.confidence, r.norms, r.num_grads, r.num_forwards):
        assert t.shape == (b,)
    with torch.no_grad():
        logits = cnn_model(r.x_adv)
    assert torch.equal(r.pred, logits.argmax(1))
    assert torch.equal(r.success, r.pred != y)
    assert bool(r.success[0])  # already misclassified: a success at no cost to the criterion
    if ATTACKS[key].access == "labels":
        assert torch.isnan(r.confidence).all()
    else:
        assert torch.allclose(r.confidence, torch.softmax(logits, 1).amax(1), atol=1e-5)
    if ATTACKS[key].black_box:
        assert (r.num_grads == 0).all() and r.queries is not None and r.budget_exhausted is not None
        assert (r.queries <= BUDGET[ATTACKS[key].access]).all() and (r.queries >= 1).all()
        assert not bool((r.budget_exhausted & r.success).any())
    else:
        assert r.queries is None and (r.num_forwards >= 1).all()


@pytest.mark.parametrize("key", KEYS)
def test_nothing_given_is_changed_and_a_generator_makes_it_deterministic(key, cnn_model, batch):
    x, y = batch
    x0, y0, before, rng = x.clone(), y.clone(), snapshot(cnn_model), torch.get_rng_state()
    cnn_model.train()  # a model in training mode is attacked in eval mode and restored
    try:
        if ATTACKS[key].black_box:
            first = _call(key, cnn_model, x, y, generator=_gen(3))
        else:
            with pytest.warns(UserWarning, match="training mode"):
                first = _call(key, cnn_model, x, y, generator=_gen(3))
        assert all(m.training for m in cnn_model.modules())
    finally:
        cnn_model.eval()
    assert_unchanged(cnn_model, before)
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(torch.get_rng_state(), rng)
    again = _call(key, cnn_model, x, y, generator=_gen(3))
    assert torch.equal(first.x_adv, again.x_adv) and torch.equal(first.success, again.success)


@pytest.mark.parametrize("key", KEYS)
def test_targeted_success_means_the_target_was_hit(key, cnn_model, batch):
    x, y = batch
    t = random_targets(y, 10, generator=_gen(1))
    try:
        r = _call(key, cnn_model, x, y, target=t, generator=_gen())
    except ValueError as err:  # untargeted by design: refused with a message that says so
        assert "target" in str(err)
        return
    assert torch.equal(r.target, t) and r.threat.targeted
    with torch.no_grad():
        pred = cnn_model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == t)
    assert torch.equal(make_attack(key, **CASES[key])(_victim(key, cnn_model), x, y, target=t,
                                                      generator=_gen(), criterion=TargetClass()).x_adv,
                       r.x_adv)


@pytest.mark.parametrize("key", KEYS)
def test_success_is_recomputed_from_any_criterion(key, cnn_model, batch):
    x, y = batch
    composed = Misclassified() & NotRejected(reject_class=3)
    r = _call(key, cnn_model, x, y, generator=_gen(), criterion=composed)
    with torch.no_grad():
        probs = torch.softmax(cnn_model(r.x_adv), 1)
    pred = probs.argmax(1)
    assert torch.equal(r.success, (pred != y) & (pred != 3))
    if ATTACKS[key].access == "labels":
        with pytest.raises(ValueError, match="reads probabilities"):
            _call(key, cnn_model, x, y, criterion=ConfidenceBelow(0.5))
        return
    r = _call(key, cnn_model, x, y, generator=_gen(), criterion=ConfidenceBelow(0.5))
    with torch.no_grad():
        p_true = torch.softmax(cnn_model(r.x_adv), 1).gather(1, y[:, None]).squeeze(1)
    assert torch.equal(r.success, p_true < 0.5)


def test_criteria_refuse_misuse():
    with pytest.raises(ValueError, match="level"):
        ConfidenceBelow(1.5)
    with pytest.raises(TypeError, match="criteria combine"):
        Misclassified() & "misclassified"  # type: ignore[operator]
    with pytest.raises(TypeError, match="criterion must be"):
        make_attack("fgsm", eps=0.1)(torch.nn.Identity(), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long),
                                     criterion="misclassified")


def _early_stop_keys() -> list[str]:
    return [k for k in KEYS if "early_stop" in {f.name for f in dataclasses.fields(ATTACKS[k].cls)}]


def test_one_early_stop_rule_its_default_follows_the_access():
    """#10: one rule. ``early_stop`` defaults to False where the configuration is a fixed gradient
    budget (bit-identical with the peers' loops; evaluations turn it on) and to True for query
    attacks, whose budget is a ceiling (Andriushchenko et al.'s Square stops at success)."""
    keys = _early_stop_keys()
    assert {"ifgsm", "pgd", "mifgsm", "apgdce", "apgdt", "square"} <= set(keys)
    for k in keys:
        default = {f.name: f.default for f in dataclasses.fields(ATTACKS[k].cls)}["early_stop"]
        assert default is (ATTACKS[k].access != "gradients"), k


@pytest.mark.parametrize("key", [k for k in _early_stop_keys() if ATTACKS[k].access == "gradients"])
def test_early_stop_never_loses_a_success_and_never_costs_more(key, cnn_model, batch):
    """The same rule in every gradient family: a point stops at its first success and that point
    is returned, so with the same generator early stopping breaks every point the full budget
    breaks, for at most the same gradient passes."""
    x, y = batch
    case = {**CASES[key], "steps": 6}
    full = make_attack(key, **case, early_stop=False)(cnn_model, x, y, generator=_gen(2))
    early = make_attack(key, **case, early_stop=True)(cnn_model, x, y, generator=_gen(2))
    assert bool((early.success | ~full.success).all())
    assert bool((early.num_grads <= full.num_grads).all())
    assert int(early.num_grads.sum()) < int(full.num_grads.sum()) or not bool(full.success.any())


def test_results_of_batches_concatenate_into_the_result_of_the_whole(cnn_model, batch):
    """``AttackResult.concat`` (the CLI joins its batches with it): every per-point field of the
    joined batches equals the one-call result (floats to rounding: a convolution's numerics depend
    on the batch size); parts of different attacks are refused."""
    x, y = batch
    attack = make_attack("fgsm", eps=0.1)
    whole = attack(cnn_model, x, y)
    joined = type(whole).concat([attack(cnn_model, x[:2], y[:2]), attack(cnn_model, x[2:], y[2:])])
    for f in dataclasses.fields(whole):
        a, b = getattr(whole, f.name), getattr(joined, f.name)
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and (torch.allclose(a, b, atol=1e-6) if a.is_floating_point()
                                           else torch.equal(a, b)), f.name
        else:
            assert a == b, f.name
    other = make_attack("fgsm", eps=0.2)(cnn_model, x[:2], y[:2])
    with pytest.raises(ValueError, match="one attack"):
        type(whole).concat([whole, other])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("key", KEYS)
def test_outputs_lie_inside_the_threat_model_in_the_dtype_they_are_returned_in(key, dtype, cnn_model, batch):
    """#11 reproducer: bf16 L∞ PGD returned ‖δ‖∞ = 0.1016 > ε = 0.1 (x + δ rounded past the ball).
    Every attack, in float32, float64, bfloat16 and float16: x_adv keeps the input's dtype, lies in
    the box, and its distance to x, measured exactly (float64), is at most the ball's radius: to
    the last place for float32/64 (forming ``x + δ`` rounds once at the box's magnitude), exactly
    for the half types, where one rounding is already 2% of a typical ε."""
    import copy

    x, y = batch
    model = copy.deepcopy(cnn_model).to(dtype)
    xd = x.to(dtype)
    r = _call(key, model, xd, y, generator=_gen())
    assert r.x_adv.dtype == dtype and bool(torch.isfinite(r.x_adv.double()).all())
    lo, hi = r.threat.bounds
    assert float(r.x_adv.min()) >= lo and float(r.x_adv.max()) <= hi
    if math.isfinite(r.threat.eps):
        dist = r.threat.norm_of(r.x_adv.double() - xd.double())
        d = x[0].numel()
        per_norm = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d), "l0": 0.0}[r.threat.norm]
        slack = 0.0 if dtype in (torch.bfloat16, torch.float16) else 2 * torch.finfo(dtype).eps * max(
            abs(lo), abs(hi), r.threat.eps) * per_norm
        assert bool((dist <= r.threat.eps + slack).all()), (key, float(dist.max()), r.threat.eps)


@pytest.mark.parametrize("key", KEYS)
def test_labels_of_any_integer_dtype_give_the_int64_result(key, cnn_model, batch):
    """#11 reproducer: int32 labels passed the check, then torch's losses raised "expected target
    dtype to be Long". Every attack now takes any integer dtype, with the int64 result."""
    x, y = batch
    a = _call(key, cnn_model, x, y, generator=_gen())
    b = _call(key, cnn_model, x, y.to(torch.int32), generator=_gen())
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


class _NaNPastA(torch.nn.Module):
    """Finite logits (and gradients) on inputs below 0.95, NaN logits once any pixel passes it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        poison = torch.log(0.95 - x).flatten(1).sum(1, keepdim=True) * 0.0   # NaN where x > 0.95
        return self.inner(x) + poison


@pytest.mark.parametrize("key", KEYS)
def test_nan_logits_at_the_adversarial_point_are_never_a_success(key, cnn_model, batch):
    """#11 reproducer: with logits NaN at the adversarial point, FGSM, I-FGSM, MI-FGSM, APGD, APGD-T
    and PGD without random start reported success on every point (pred 0, confidence NaN), with
    no warning; PGD with random start raised, blaming the clean inputs, which were finite. Now an
    attack either returns, counting no point whose logits are not finite and saying so, or stops
    with an advlab error that names NaN and does not blame the clean inputs."""
    from advlab.oracle import OracleError

    x, y = batch
    x = x.clamp(0.0, 0.9)
    model = _NaNPastA(cnn_model).eval()
    with torch.no_grad():
        assert bool(torch.isfinite(model(x)).all())
    try:
        with _Record() as rec:
            r = _call(key, model, x, y, generator=_gen())
    except (ValueError, FloatingPointError, OracleError) as err:
        assert "NaN" in str(err) and "on the clean inputs" not in str(err), str(err)
        return
    with torch.no_grad():
        finite = torch.isfinite(model(r.x_adv)).all(dim=1)
    assert not bool((r.success & ~finite).any())
    if not bool(finite.all()):
        assert any("NaN/Inf" in str(w.message) for w in rec), [str(w.message) for w in rec]


class _Record:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self.log = self._cm.__enter__()
        warnings.simplefilter("always")
        return self.log

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


class _Thresholded(torch.nn.Module):
    """Not differentiable in x: the classifier sees a binarised image (zero gradient almost
    everywhere, and no autograd path to x at all)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x > 0.5).to(x.dtype))


class _Constant(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(-1, 1, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1) * 1.0


@pytest.mark.parametrize("make", [_Thresholded, _Constant], ids=["thresholded", "constant"])
@pytest.mark.parametrize("key", [k for k in KEYS if ATTACKS[k].access == "gradients"])
def test_a_model_without_input_gradients_is_attacked_with_a_warning_not_a_crash(key, make, cnn_model, batch):
    """#11 reproducer: ``(x > 0.5).float()`` and constant models crashed 13 attacks with torch's
    "appears to not have been used in the graph". The gradient is zero there: the attacks run,
    stay in their threat model, and warn that this is gradient masking wherever they took such a
    gradient (C&W's objective keeps a path to x through its distance term: it just cannot win)."""
    x, y = batch
    model = (make(cnn_model) if make is _Thresholded else make()).eval()
    with _Record() as rec:
        r = _call(key, model, x, y, generator=_gen())
    assert r.threat.contains(r.x_adv, x).all() and bool(torch.isfinite(r.x_adv).all())
    if bool((r.num_grads > 0).any()) and ATTACKS[key].cls.__name__ != "CarliniWagnerL2":
        assert any("gradient masking" in str(w.message) for w in rec)


class _Tuple(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor):
        return self.inner(x), "aux"


BAD_QUERIES = {
    "tuple output": (lambda m: _Tuple(m), lambda x: x, "returned a tuple, not a tensor of logits"),
    "float64 queries": (lambda m: m, lambda x: x.double(), "queries are torch.float64 but"),
    "float16 queries": (lambda m: m, lambda x: x.half(), "queries are torch.float16 but"),
    "wrong shape": (lambda m: m, lambda x: x[:, :, :4], r"failed on queries of shape \(6, 1, 4, 8\)"),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
@pytest.mark.parametrize("key", [k for k in KEYS if ATTACKS[k].black_box])
def test_black_box_attacks_validate_through_the_oracle(key, case, cnn_model, batch):
    """#11 reproducer: black-box attacks let torch's errors out ("'tuple' object has no attribute
    'detach'", "mat1 and mat2 must have the same dtype"): the oracle now says what is wrong."""
    wrap, bend, match = BAD_QUERIES[case]
    x, y = batch
    e = ATTACKS[key]
    oracle = Oracle(wrap(cnn_model), output=e.oracle_output, budget=BUDGET[e.access])  # type: ignore[arg-type]
    with pytest.raises((ValueError, TypeError), match=match):
        make_attack(key, **CASES[key])(oracle, bend(x), y, generator=_gen())


@pytest.mark.parametrize("key", KEYS)
def test_inside_inference_mode_an_attack_gives_its_normal_result(key, cnn_model, batch):
    """#11 reproducer: under ``torch.inference_mode()`` no gradient can be taken, so the gradient
    attacks raised autograd errors or silently returned their starting points (0% success)."""
    x, y = batch
    normal = _call(key, cnn_model, x, y, generator=_gen())
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        inside = _call(key, cnn_model, xi, yi, generator=_gen())
    assert torch.equal(inside.x_adv, normal.x_adv) and torch.equal(inside.success, normal.success)


def test_universal_attacks_and_the_audit_also_leave_inference_mode(cnn_model, digits):
    from advlab.attacks import AdversarialPatch, UniversalPerturbation
    from advlab.evaluation import audit

    x, y = digits["x_test"][:40], digits["y_test"][:40]
    runs = {
        "uap": lambda: UniversalPerturbation(eps=0.3, max_epochs=1, method="sgd")(
            cnn_model, x, y, generator=_gen()).fooling_rate,
        "patch": lambda: AdversarialPatch(target_class=0, steps=3, patch_size=0.2)(
            cnn_model, x, y, generator=_gen()).success_rate,
        "audit": lambda: [c.passed for c in audit(cnn_model, x, y, eps=0.1, steps=3).checks],
    }
    for name, run in runs.items():
        normal = run()
        with torch.inference_mode():
            assert run() == normal, name
