"""The Normalize wrapper in advlab.models.wrappers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.models import Normalize, build_seeded

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)


def test_equals_manual_standardisation() -> None:
    net = build_seeded("small-cnn", in_shape=(3, 32, 32), num_classes=10, seed=0).eval()
    model = Normalize(net, mean=MEAN, std=STD).eval()
    x = torch.rand(6, 3, 32, 32)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), net((x - mean) / std))
    assert model.model is net
    assert torch.equal(model.mean, torch.tensor(MEAN)) and torch.equal(model.std, torch.tensor(STD))
    assert set(model.state_dict()) >= {"mean", "std"}


def test_input_gradient_is_inner_gradient_over_std() -> None:
    # d/dx f((x - m) / s) = f'((x - m) / s) / s, per channel.
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    model = Normalize(inner, mean=MEAN, std=STD)
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    model(x).sum().backward()
    w = inner[1].weight.detach().view(3, 4, 4)
    expected = (w / torch.tensor(STD).view(3, 1, 1)).expand(2, 3, 4, 4)
    torch.testing.assert_close(x.grad, expected)


def test_mode_and_dtype_follow_the_wrapper() -> None:
    net = build_seeded("small-resnet", in_shape=(1, 8, 8), num_classes=10, seed=0)
    model = Normalize(net, mean=0.5, std=0.25)
    model.eval()
    assert not net.training
    model.train()
    assert net.training
    model.double().eval()
    out = model(torch.rand(2, 1, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and model.std.dtype == torch.float64


@pytest.mark.parametrize("std", [0.0, -0.1, (0.2, 0.0, 0.2), (0.2, -1.0, 0.2)])
def test_rejects_non_positive_std(std: float | tuple[float, ...]) -> None:
    net = build_seeded("mlp", in_shape=(3, 8, 8), num_classes=10, seed=0)
    mean = MEAN if isinstance(std, tuple) else 0.5
    inner = net if isinstance(std, tuple) else nn.Identity()
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalize(inner, mean=mean, std=std)


@pytest.mark.parametrize(
    ("mean", "std", "message"),
    [
        ((0.5, 0.5), STD, "mean has 2 channels but std has 3"),
        ((0.5,), (0.2,), "expects 3 input channels"),
        ((float("nan"), 0.5, 0.5), STD, "finite"),
        ((), (), "empty"),
    ],
)
def test_rejects_inconsistent_channels(mean: tuple, std: tuple, message: str) -> None:
    net = build_seeded("mlp", in_shape=(3, 8, 8), num_classes=10, seed=0)
    with pytest.raises(ValueError, match=message):
        Normalize(net, mean=mean, std=std)


def test_rejects_wrong_input_channels_at_call() -> None:
    model = Normalize(nn.Identity(), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, \.\.\.\)"):
        model(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, \.\.\.\)"):
        model(torch.rand(3))  # no batch axis


def test_standardises_tables_per_feature_and_signals_per_channel() -> None:
    """Issue #14 item 3: Normalize took (B, C, H, W) only; a table is standardised per feature
    (axis 1) and a signal per channel, broadcast over time."""
    table = Normalize(nn.Identity(), mean=(1.0, 2.0), std=(2.0, 4.0))
    assert torch.equal(table(torch.tensor([[3.0, 6.0]])), torch.tensor([[1.0, 1.0]]))
    signal = Normalize(nn.Identity(), mean=MEAN, std=STD)
    x = torch.rand(2, 3, 7)
    expect = (x - torch.tensor(MEAN)[None, :, None]) / torch.tensor(STD)[None, :, None]
    assert torch.allclose(signal(x), expect)
    with pytest.raises(TypeError, match="nn.Module"):
        Normalize(lambda x: x, mean=MEAN, std=STD)  # type: ignore[arg-type]
