"""The tabular MLP (B, D) and the 1-D CNN (B, C, T); architecture options that checkpoints keep."""

from __future__ import annotations

import pytest
import torch

from advlab.models import CNN1d, TabularMLP, architecture_options, build, build_seeded, load, save


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "in_shape"), [("tabular-mlp", (30,)), ("tabular-mlp", (1,)),
                                                ("cnn1d", (6, 100)), ("cnn1d", (1, 4)), ("cnn1d", (3, 27))])
def test_logits_gradients_and_batch_independence(name: str, in_shape: tuple[int, ...]) -> None:
    model = build_seeded(name, in_shape=in_shape, num_classes=4, seed=0).eval()
    assert model.in_shape == in_shape
    x = torch.rand(5, *in_shape, requires_grad=True)
    logits = model(x)
    assert logits.shape == (5, 4) and torch.isfinite(logits).all()
    logits[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([model(x[i:i + 1]) for i in range(5)]), logits.detach())


def test_parameter_counts_in_closed_form() -> None:
    assert n_params(TabularMLP(in_shape=(30,), num_classes=2)) == 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    assert n_params(TabularMLP(in_shape=(13,), num_classes=3, hidden=())) == 13 * 3 + 3  # logistic regression
    # conv(6->16, k5) + conv(16->32, k5) + linear(32 * 25 -> 4)
    assert n_params(CNN1d(in_shape=(6, 100), num_classes=4)) == (6 * 16 * 5 + 16) + (16 * 32 * 5 + 32) + (
        32 * 25 * 4 + 4)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("tabular-mlp", {"in_shape": (1, 8, 8)}, r"in_shape must be one integer \(D,\).*for images use 'mlp'"),
        ("cnn1d", {"in_shape": (30,)}, r"two integers \(C, T\).*for tables use 'tabular-mlp'"),
        ("mlp", {"in_shape": (6, 100)}, r"three integers \(C, H, W\).*for signals \(C, T\) 'cnn1d'"),
        ("cnn1d", {"in_shape": (6, 3)}, "at least 4 time steps"),
        ("tabular-mlp", {"in_shape": (0,)}, "features must be >= 1"),
        ("cnn1d", {"in_shape": (6, 100), "kernel": 4}, "odd positive int"),
        ("cnn1d", {"in_shape": (6, 100), "widths": (8,)}, "two positive ints"),
        ("tabular-mlp", {"in_shape": (30,), "widths": (8, 8)}, r"unknown option\(s\) \['widths'\]; it takes only hidden"),
        ("small-cnn", {"in_shape": (1, 8, 8), "hidden": (8,)}, "takes no options"),
    ],
)
def test_bad_shapes_and_options_are_refused_with_the_fix(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(name, num_classes=3, **kwargs)


def test_architecture_options_read_back_what_was_built() -> None:
    assert architecture_options(build("mlp", in_shape=(1, 8, 8), num_classes=10, hidden=(64,))) == {"hidden": [64]}
    assert architecture_options(build("rbf", in_shape=(1, 8, 8), num_classes=10, hidden=())) == {
        "hidden": [], "precision_init": 1.0}
    assert architecture_options(build("cnn1d", in_shape=(2, 8), num_classes=2, widths=(4, 8), kernel=3)) == {
        "widths": [4, 8], "kernel": 3}
    assert architecture_options(build("small-cnn", in_shape=(1, 8, 8), num_classes=10)) == {}


@pytest.mark.parametrize(
    ("name", "in_shape", "options"),
    [
        # the reproducer of the bug: only the default width was rebuilt, so these failed to load
        ("mlp", (1, 8, 8), {"hidden": (64,)}),
        ("rbf", (1, 8, 8), {"hidden": (64,)}),
        ("rbf", (1, 8, 8), {"hidden": (), "precision_init": 4.0}),
        ("tabular-mlp", (30,), {}),
        ("tabular-mlp", (13,), {"hidden": (16, 8, 4)}),
        ("cnn1d", (6, 100), {}),
        ("cnn1d", (1, 24), {"widths": (4, 8), "kernel": 3}),
    ],
)
def test_checkpoints_round_trip_non_default_options(tmp_path, name: str, in_shape: tuple[int, ...],
                                                    options: dict) -> None:
    model = build_seeded(name, in_shape=in_shape, num_classes=3, seed=0, **options).eval()
    save(model, tmp_path / "ckpt", card={"dataset": "toy"})
    loaded = load(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.advlab_card.in_shape == in_shape
    assert loaded.advlab_card.options == architecture_options(model)
    x = torch.rand(4, *in_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_card_with_hostile_options_is_refused_without_allocating(tmp_path) -> None:
    import json

    model = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=3, seed=0, hidden=(8,))
    path = save(model, tmp_path / "ckpt", card={})
    card = json.loads((path / "card.json").read_text())
    for options, message in (({"hidden": [10**12]}, "shape mismatches"),  # built on meta: no 4 TB allocated
                             ({"hidden": [8], "evil": "os.system"}, r"cannot rebuild 'mlp'.*unknown option"),
                             ({"hidden": "8"}, "hidden must be a sequence of positive ints")):
        (path / "card.json").write_text(json.dumps({**card, "options": options}))
        with pytest.raises(ValueError, match=message):
            load(path)
    # a card written before options existed rebuilds the defaults
    default = build_seeded("mlp", in_shape=(1, 8, 8), num_classes=3, seed=0)
    old = save(default, tmp_path / "old", card={})
    old_card = json.loads((old / "card.json").read_text())
    del old_card["options"]
    (old / "card.json").write_text(json.dumps(old_card))
    assert load(old).hidden == (256, 128)
