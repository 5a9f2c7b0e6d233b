"""RBFNet: radial-basis output units (Goodfellow, Shlens & Szegedy 2015, Sec. 7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from advlab.data.digits import load_digits_dataset
from advlab.models import MLP, RBFNet, accuracy, build_seeded, fit, load, save


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("hidden", [(), (16,), (32, 16)])
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_shapes_logits_are_non_positive_and_units_in_unit_interval(hidden, in_shape) -> None:
    torch.manual_seed(0)
    model = RBFNet(in_shape=in_shape, num_classes=7, hidden=hidden).eval()
    x = torch.rand(5, *in_shape)
    logits = model(x)
    assert logits.shape == (5, 7) and logits.dtype == torch.float32
    assert (logits <= 0).all() and torch.isfinite(logits).all()
    units = model.unit_outputs(x)
    assert ((units >= 0) & (units <= 1)).all()  # exp(logit) underflows to 0 in float32 below ≈ -104:
    if in_shape == (1, 8, 8):                   # at init, logit ≈ -D/12 for uniform x and μ
        assert (units > 0).all()
    torch.testing.assert_close(units, logits.exp())
    width = hidden[-1] if hidden else math.prod(in_shape)
    assert model.centres.shape == model.log_precision.shape == (7, width)


def test_same_size_relu_network_differs_only_in_the_output_layer() -> None:
    # Same feature map; RBF head has K·D centres + K·D precisions, the linear head K·D + K.
    rbf = RBFNet(in_shape=(1, 28, 28), num_classes=10, hidden=(64,))
    mlp = MLP(in_shape=(1, 28, 28), num_classes=10, hidden=(64,))
    features = 784 * 64 + 64
    assert n_params(rbf) == features + 2 * 10 * 64
    assert n_params(mlp) == features + 10 * 64 + 10
    assert [tuple(p.shape) for p in rbf.features.parameters()] == [
        tuple(p.shape) for p in list(mlp.net.parameters())[:-2]]
    # the registry's defaults are MLP's widths
    assert build_seeded("rbf", in_shape=(1, 8, 8), num_classes=10, seed=0).hidden == MLP.HIDDEN == (256, 128)


def test_logits_equal_the_closed_form_on_a_hand_set_instance() -> None:
    model = RBFNet(in_shape=(1, 1, 2), num_classes=2, hidden=())
    with torch.no_grad():
        model.centres.copy_(torch.tensor([[0.0, 1.0], [2.0, -1.0]]))
        model.log_precision.copy_(torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), math.log(4.0)]]))
    x = torch.tensor([[[[1.0, 3.0]]], [[[0.0, 1.0]]]])  # (2, 1, 1, 2)
    # point (1, 3): class 0: -½(1·1² + 2·2²) = -4.5; class 1: -½(0.5·1² + 4·4²) = -32.25
    # point (0, 1): class 0 at its centre: 0;       class 1: -½(0.5·2² + 4·2²) = -9
    expected = torch.tensor([[-4.5, -32.25], [0.0, -9.0]])
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.precision, torch.tensor([[1.0, 2.0], [0.5, 4.0]]))
    torch.testing.assert_close(model.unit_outputs(x)[1, 0], torch.tensor(1.0))  # at μ_0: exp(0)


def test_cross_entropy_gradient_reaches_every_parameter_and_the_input() -> None:
    torch.manual_seed(0)
    model = RBFNet(in_shape=(1, 8, 8), num_classes=10, hidden=(32,))
    x = torch.rand(16, 1, 8, 8, requires_grad=True)
    F.cross_entropy(model(x), torch.arange(16) % 10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the precision's gradient is the chain rule through β = exp(ρ): ∂L/∂ρ = β ∂L/∂β
    model.zero_grad()
    beta = model.precision.detach().requires_grad_(True)
    h = model.features(x.detach())
    F.cross_entropy(-0.5 * ((h.unsqueeze(1) - model.centres) ** 2 * beta).sum(2),
                    torch.arange(16) % 10).backward()
    model.zero_grad()
    F.cross_entropy(model(x.detach()), torch.arange(16) % 10).backward()
    torch.testing.assert_close(model.log_precision.grad, beta.detach() * beta.grad)


def test_far_from_all_centres_units_vanish_but_softmax_confidence_does_not() -> None:
    # Along a ray x = t·v the logits fall like -t² (units → 0), while their differences grow, so
    # the softmax becomes certain: the paper's low confidence is the units', not the softmax's.
    torch.manual_seed(0)
    model = RBFNet(in_shape=(1, 1, 6), num_classes=4, hidden=()).eval()
    with torch.no_grad():
        model.log_precision.copy_(torch.randn(4, 6) * 0.5)
        v = torch.randn(20, 1, 1, 6)
        ts = [1.0, 3.0, 10.0, 30.0, 100.0]
        top_logit = torch.stack([model(t * v).max(1).values for t in ts])  # (5, 20)
        top_soft = torch.stack([torch.softmax(model(t * v), 1).max(1).values for t in ts])
    assert (top_logit[1:] < top_logit[:-1]).all()  # beyond |x| ≈ 2 > |μ|, every step out lowers it
    assert float(top_logit[2].exp().max()) < 1e-3 and float(top_logit[-1].max()) < -1000
    assert float(top_soft[-1].min()) > 0.999
    with torch.no_grad():  # and inside the unit box, a point is most confident at a centre
        at_centre = model.unit_outputs(model.centres.view(4, 1, 1, 6))
    torch.testing.assert_close(at_centre.diagonal(), torch.ones(4))


def test_trains_on_digits_with_fit_and_round_trips_a_checkpoint(tmp_path) -> None:
    # Measured (one CPU thread): the default (256, 128) RBF net 0.951 test accuracy after 10 epochs
    # (0.3 s), the shallow one (hidden=()) 0.956 after 20 (0.2 s).
    train, test = load_digits_dataset(split="train"), load_digits_dataset(split="test")
    model = build_seeded("rbf", in_shape=(1, 8, 8), num_classes=10, seed=0)
    history = fit(model, train.x, train.y, epochs=10, lr=1e-2, batch_size=64, seed=0, progress=False,
                  x_val=test.x, y_val=test.y)
    assert history.loss[-1] < 0.4 * history.loss[0]  # measured 0.90 → 0.24
    assert history.val_accuracy[-1] >= 0.93
    shallow = RBFNet(in_shape=(1, 8, 8), num_classes=10, hidden=())
    fit(shallow, train.x, train.y, epochs=20, lr=1e-2, batch_size=64, seed=0, progress=False)
    assert accuracy(shallow, test.x, test.y) >= 0.92
    save(model, tmp_path / "rbf", card={"dataset": "digits"})
    again = load(tmp_path / "rbf")
    assert type(again) is RBFNet
    torch.testing.assert_close(again(test.x), model(test.x))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"hidden": (0,)}, "hidden"), ({"hidden": "64"}, "hidden"), ({"hidden": (8.0,)}, "hidden"),
    ({"precision_init": 0.0}, "precision_init"), ({"precision_init": float("inf")}, "precision_init"),
])
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        RBFNet(in_shape=(1, 8, 8), num_classes=10, **kwargs)
    if "hidden" in kwargs:
        with pytest.raises(ValueError, match=message):
            MLP(in_shape=(1, 8, 8), num_classes=10, **kwargs)


def test_one_vs_rest_recipe_is_the_units_binary_likelihood_and_refuses_positive_logits() -> None:
    """The recipe reads exp(logit_k) as p(y = k | x): −Σ_k [1{y=k} log p_k + 1{y≠k} log(1 − p_k)]."""
    from advlab.defenses import OneVsRest, train
    from advlab.runs.defend import build_recipe

    model = RBFNet(in_shape=(1, 8, 8), num_classes=3, hidden=()).train()
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, logs = OneVsRest().batch_loss(model, x, y, generator=torch.Generator())
    p = model(x).exp().detach()
    onehot = F.one_hot(y, 3).bool()
    expected = -(torch.where(onehot, p.log(), (1 - p).log())).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    assert set(logs) == {"loss", "acc"} and isinstance(build_recipe("ovr", eps=0.0), OneVsRest)
    with pytest.raises(ValueError, match="reads each logit as log p_k <= 0 .* use the rbf architecture"):
        OneVsRest().batch_loss(MLP(in_shape=(1, 8, 8), num_classes=3, hidden=()).train(), x, y,
                               generator=torch.Generator())
    # it trains: the units rise on their own class
    ds = load_digits_dataset(split="train")
    net = build_seeded("rbf", in_shape=(1, 8, 8), num_classes=10, seed=0, hidden=())
    with torch.no_grad():
        before = net.eval().unit_outputs(ds.x[:200]).gather(1, ds.y[:200, None]).mean()
    train(net, OneVsRest(), ds.x, ds.y, epochs=3, batch_size=64, lr=1e-2, seed=0, progress=False)
    with torch.no_grad():
        after = net.eval().unit_outputs(ds.x[:200]).gather(1, ds.y[:200, None]).mean()
    assert float(after) > float(before) + 0.1 and accuracy(net, ds.x[:200], ds.y[:200]) > 0.8
