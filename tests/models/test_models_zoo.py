"""Architectures and the registry in advlab.models.zoo."""

from __future__ import annotations

import pytest
import torch

import advlab.models as models
from advlab.models import ARCHITECTURES, build, build_seeded, list_architectures

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
NAMES = ["mlp", "mlp-bn", "lenet5", "small-cnn", "small-resnet", "rbf"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_is_the_six_image_architectures_and_one_each_for_tables_and_signals() -> None:
    assert list_architectures() == sorted([*NAMES, "tabular-mlp", "cnn1d"])
    assert ARCHITECTURES == {
        "tabular-mlp": models.TabularMLP,
        "cnn1d": models.CNN1d,
        "mlp": models.MLP,
        "mlp-bn": models.BatchNormMLP,
        "lenet5": models.LeNet5,
        "small-cnn": models.SmallCNN,
        "small-resnet": models.SmallResNet,
        "rbf": models.RBFNet,
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("in_shape", SHAPES)
@pytest.mark.parametrize("num_classes", [10, 3])
def test_logits_shape(name: str, in_shape: tuple[int, int, int], num_classes: int) -> None:
    model = build_seeded(name, in_shape=in_shape, num_classes=num_classes, seed=0).eval()
    assert type(model) is ARCHITECTURES[name]
    assert model.in_shape == in_shape and model.num_classes == num_classes
    with torch.no_grad():
        logits = model(torch.rand(5, *in_shape))
    assert logits.shape == (5, num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_input_gradient_exists_and_samples_are_independent_in_eval(name: str) -> None:
    # Attacks need d(logits)/d(x); in eval mode a sample's logits must not depend on its batch.
    model = build_seeded(name, in_shape=(1, 28, 28), num_classes=10, seed=1).eval()
    x = torch.rand(4, 1, 28, 28, requires_grad=True)
    logits = model(x)
    logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(single, logits.detach(), rtol=1e-5, atol=1e-5)


def test_parameter_counts_differ() -> None:
    for in_shape in SHAPES:
        counts = {name: n_params(build(name, in_shape=in_shape, num_classes=10)) for name in NAMES}
        assert len(set(counts.values())) == len(NAMES), counts
    # Closed forms for (1, 28, 28), 10 classes.
    assert n_params(build("mlp", in_shape=(1, 28, 28), num_classes=10)) == (
        784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    )
    widths = [784, 1200, 600, 300, 150]  # Miyato et al.'s VAT MLP: Linear + BatchNorm (γ, β) per layer
    assert n_params(build("mlp-bn", in_shape=(1, 28, 28), num_classes=10)) == (
        sum(a * b + b + 2 * b for a, b in zip(widths, widths[1:])) + 150 * 10 + 10
    )
    assert n_params(build("small-cnn", in_shape=(1, 28, 28), num_classes=10)) == (
        (9 * 32 + 32) + (32 * 9 * 64 + 64) + (64 * 7 * 7 * 128 + 128) + (128 * 10 + 10)
    )
    assert n_params(build("lenet5", in_shape=(1, 28, 28), num_classes=10)) == (
        (25 * 6 + 6) + (6 * 25 * 16 + 16) + (16 * 7 * 7 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    )


def test_small_resnet_has_residual_blocks_and_batchnorm() -> None:
    model = build("small-resnet", in_shape=(3, 32, 32), num_classes=10)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) >= 6
    assert sum(type(m).__name__ == "_BasicBlock" for m in model.modules()) >= 3


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'") as info:
        build("resnet50", in_shape=(1, 28, 28), num_classes=10)
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="valid names"):
        build_seeded("vit", in_shape=(1, 28, 28), num_classes=10, seed=0)


@pytest.mark.parametrize(
    ("in_shape", "num_classes", "message"),
    [
        ((28, 28), 10, "three integers"),
        ((1, 28, 28.0), 10, "three integers"),
        ((0, 28, 28), 10, "channels"),
        ((1, 28, 28), 1, "num_classes"),
        ((1, 2, 2), 10, "at least 4x4"),
    ],
)
def test_bad_constructor_arguments(in_shape: tuple, num_classes: int, message: str) -> None:
    name = "lenet5"
    with pytest.raises(ValueError, match=message):
        build(name, in_shape=in_shape, num_classes=num_classes)


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        models.SmallCNN((1, 28, 28), 10)  # type: ignore[misc]


def test_build_seeded_is_reproducible_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=7)
    b = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=7)
    c = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=8)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["stem.0.weight"], sc["stem.0.weight"])
    with pytest.raises(TypeError, match="seed"):
        build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=1.5)  # type: ignore[arg-type]
