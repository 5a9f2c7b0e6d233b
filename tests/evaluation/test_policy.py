"""Attacks on policies (Huang et al. 2017) on CartPole: a trained policy, FGSM/PGD on every
observation against noise of the same norm, purity, determinism, and the messages."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from advlab._checks import AdvlabWarning
from advlab.attacks import FGSM, PGD
from advlab.evaluation import (OBS_BOUNDS, ObservationNoise, PolicyCurve, attack_policy, cartpole_controller,
                               policy_return_vs_eps, train_policy)

pytest.importorskip("gymnasium")


@pytest.fixture(scope="module")
def policy() -> nn.Module:
    return train_policy(seed=0)


def test_the_trained_policy_balances_the_pole_for_the_whole_episode(policy):
    clean = attack_policy(policy, None, episodes=4, seed=0)
    assert clean.returns == (500.0,) * 4  # CartPole-v1's cap, on initial states it never trained on
    assert clean.flip_rate == 0.0 and clean.steps == 2000 and clean.method == "clean"


def test_fgsm_l2_lowers_the_return_far_more_than_noise_of_the_same_norm(policy):
    attack = attack_policy(policy, FGSM(eps=0.5, norm="l2", bounds=OBS_BOUNDS), episodes=4, seed=0)
    noise = attack_policy(policy, ObservationNoise(eps=0.5, norm="l2"), episodes=4, seed=0)
    # measured: FGSM 9-10 in every episode (the pole falls at once), noise 69-200 (mean 103.5)
    assert max(attack.returns) < 20.0 and min(noise.returns) > 2 * max(attack.returns)
    assert noise.mean > 5 * attack.mean
    assert attack.flip_rate > noise.flip_rate and attack.unmoved == 0.0
    assert attack.method == "FGSM" and attack.norm == "l2" and attack.eps == 0.5


def test_pgd_beats_noise_where_noise_does_nothing(policy):
    pgd = attack_policy(policy, PGD(eps=0.25, norm="l2", steps=5, bounds=OBS_BOUNDS), episodes=3, seed=0)
    noise = attack_policy(policy, ObservationNoise(eps=0.25, norm="l2"), episodes=3, seed=0)
    assert noise.mean == 500.0 and pgd.mean < 250.0


def test_noise_has_exactly_the_norm_it_is_given():
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    before = x.clone()
    linf = ObservationNoise(eps=0.3, norm="inf")(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose((linf - x).abs(), torch.full_like(x, 0.3), atol=1e-6)  # every coordinate, full ε
    l2 = ObservationNoise(eps=0.3, norm="l2")(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.vector_norm(l2 - x, dim=1), torch.full((64,), 0.3), atol=1e-6)
    again = ObservationNoise(eps=0.3, norm="l2")(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(l2, again) and torch.equal(x, before)
    assert ObservationNoise(eps=0.3, norm=2).norm == "l2"


def test_the_run_changes_nothing_it_was_given_and_repeats_exactly(policy):
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    flags = [p.requires_grad for p in policy.parameters()]
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    attack = PGD(eps=0.1, norm="linf", steps=3, bounds=OBS_BOUNDS)
    first = attack_policy(policy, attack, episodes=2, seed=3)
    second = attack_policy(policy, attack, episodes=2, seed=3)
    assert first == second  # same returns, flips and steps: seeds and threads fixed inside the run
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in state.items())
    assert [p.requires_grad for p in policy.parameters()] == flags
    assert all(p.grad is None for p in policy.parameters()) and not policy.training
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    rng = torch.get_rng_state()
    a = train_policy(seed=5, rounds=1, episodes_per_round=1, epochs=2)
    b = train_policy(seed=5, rounds=1, episodes_per_round=1, epochs=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_saturated_policy_is_warned_about_and_the_margin_loss_still_moves(policy):
    # logits x1e4: the softmax saturates, cross-entropy's input gradient is exactly 0 in float32
    loud = nn.Sequential(policy, _Scale(1e4)).eval()
    with pytest.warns(AdvlabWarning, match="unchanged.*loss='cw'"):
        ce = attack_policy(loud, FGSM(eps=0.5, norm="l2", bounds=OBS_BOUNDS), episodes=1, seed=0)
    assert ce.unmoved > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", AdvlabWarning)
        cw = attack_policy(loud, FGSM(eps=0.5, norm="l2", loss="cw", bounds=OBS_BOUNDS), episodes=1, seed=0)
    assert cw.unmoved == 0.0 and cw.mean < ce.mean


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.factor


def test_the_curve_has_every_cell_and_a_table(policy):
    curve = policy_return_vs_eps(policy, eps={"linf": [0.2], "L2": [0.5]}, methods=("fgsm", "noise"),
                                 episodes=2, seed=0)
    assert isinstance(curve, PolicyCurve) and curve.rows[0].method == "clean"
    assert [(r.method, r.norm, r.eps) for r in curve.rows[1:]] == [
        ("FGSM", "linf", 0.2), ("noise", "linf", 0.2), ("FGSM", "l2", 0.5), ("noise", "l2", 0.5)]
    assert curve.row("FGSM", "l2", 0.5).mean < curve.row("noise", "l2", 0.5).mean
    assert all(r.episodes == 2 for r in curve.rows)
    table = curve.table()
    assert "| l2 | 0.5 |" in table and "clean return 500.0" in table
    assert curve.provenance["seed"] == 0 and "gymnasium" in curve.provenance and "torch" in curve.provenance
    assert curve.to_dict()["rows"][0]["returns"] == [500.0, 500.0]
    std = curve.row("noise", "l2", 0.5).std
    returns = curve.row("noise", "l2", 0.5).returns
    assert math.isclose(std, float(torch.tensor(returns).std()), rel_tol=1e-6)  # ddof = 1


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eps={"l2": [-0.5]}), ValueError, "finite number > 0"),
    (dict(eps={"l2": [0.0]}), ValueError, "finite number > 0"),
    (dict(eps={"l3": [0.5]}), ValueError, "unknown norm"),
    (dict(eps={"l1": [0.5]}), ValueError, "linf and l2"),
    (dict(eps=[0.5]), TypeError, "must map a norm"),
    (dict(eps={"l2": 0.5}), TypeError, "non-empty list"),
    (dict(eps={"l2": [0.5]}, methods=("fgsm", "deepfool")), ValueError, "unknown methods"),
    (dict(eps={"l2": [0.5]}, episodes=0), ValueError, "episodes"),
    (dict(eps={"l2": [0.5]}, loss="dlr"), ValueError, "'ce' or 'cw'"),
])
def test_bad_arguments_fail_before_any_episode(policy, kwargs, error, match):
    with pytest.raises(error, match=match):
        policy_return_vs_eps(policy, **kwargs)


def test_bad_perturbations_policies_and_environments(policy):
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        ObservationNoise(eps=-0.1, norm="l2")
    with pytest.raises(ValueError, match="unknown norm"):
        ObservationNoise(eps=0.1, norm="l7")
    with pytest.raises(ValueError, match="linf or l2"):
        ObservationNoise(eps=0.1, norm="l1")
    with pytest.raises(TypeError, match="perturbation must be None"):
        attack_policy(policy, "fgsm")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        attack_policy(lambda x: x, None)
    with pytest.raises(ValueError, match="cannot make 'NoSuchEnv-v0'"):
        attack_policy(policy, None, env_id="NoSuchEnv-v0")
    with pytest.raises(ValueError, match="outside the box"):
        attack_policy(policy, ObservationNoise(eps=0.1, bounds=(-0.01, 0.01)), episodes=1)
    with pytest.raises(ValueError, match="shape \\(B, 4\\)"):
        cartpole_controller(torch.zeros(3).numpy())
    wrong = nn.Linear(4, 3).eval()
    with pytest.raises(ValueError, match="logits of shape"):
        attack_policy(wrong, None, episodes=1)


def test_missing_gymnasium_names_the_extra(policy, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'advlab\[rl\]'"):
        attack_policy(policy, None, episodes=1)
    with pytest.raises(ImportError, match=r"advlab\[rl\]"):
        train_policy(rounds=1)


def test_importing_advlab_does_not_import_gymnasium():
    code = ("import sys\nimport advlab, advlab.evaluation, advlab.evaluation.policy, advlab.reports\n"
            "print('gymnasium' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
