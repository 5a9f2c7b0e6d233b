"""fit and accuracy in advlab.models.training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.models import TrainHistory, accuracy, build_seeded, fit

Digits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def digits_model(name: str = "small-cnn", seed: int = 0) -> nn.Module:
    return build_seeded(name, in_shape=(1, 8, 8), num_classes=10, seed=seed)


def test_small_cnn_learns_digits_deterministically(digits_split: Digits) -> None:
    x, y, x_test, y_test = digits_split
    torch.manual_seed(2024)
    rng_before = torch.get_rng_state()

    runs = []
    for _ in range(2):
        model = digits_model()
        history = fit(model, x, y, epochs=4, batch_size=64, seed=1, progress=False,
                      x_val=x_test, y_val=y_test)
        runs.append((model, history))
    assert torch.equal(torch.get_rng_state(), rng_before)

    (m1, h1), (m2, h2) = runs
    assert isinstance(h1, TrainHistory) and h1.epochs == 4
    assert len(h1.train_accuracy) == len(h1.val_accuracy) == len(h1.seconds) == 4
    assert h1.loss[-1] < h1.loss[0]
    assert h1.settings["seed"] == 1 and h1.settings["epochs"] == 4
    test_acc = accuracy(m1, x_test, y_test)
    assert test_acc > 0.9
    assert h1.val_accuracy[-1] == test_acc
    assert not m1.training
    # Same seed, same initial weights: identical weights and losses.
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1.loss == h2.loss and h1.train_accuracy == h2.train_accuracy

    # A different shuffling seed gives different weights.
    m3 = digits_model()
    fit(m3, x, y, epochs=1, batch_size=64, seed=2, progress=False)
    m4 = digits_model()
    fit(m4, x, y, epochs=1, batch_size=64, seed=1, progress=False)
    assert not torch.equal(m3.state_dict()["features.0.weight"], m4.state_dict()["features.0.weight"])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("name", ["mlp", "small-resnet"])
def test_other_optimizers_and_architectures_reduce_the_loss(digits_split: Digits, optimizer: str, name: str) -> None:
    x, y, x_test, y_test = digits_split
    model = digits_model(name)
    before = accuracy(model, x_test, y_test)
    history = fit(model, x, y, epochs=2, lr=0.05 if optimizer == "sgd" else 1e-3,
                  optimizer=optimizer, weight_decay=1e-4, progress=False)
    assert history.loss[1] < history.loss[0]
    assert accuracy(model, x_test, y_test) > max(before, 0.5)


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_in_model_randomness_is_seeded_and_global_rng_untouched(digits_split: Digits) -> None:
    x, y, _, _ = digits_split
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = DropoutNet()
        torch.manual_seed(99)  # a different global state each run must not matter
        torch.rand(int(torch.randint(1, 5, ())))
        before = torch.get_rng_state()
        fit(model, x[:256], y[:256], epochs=1, batch_size=32, seed=4, progress=False)
        assert torch.equal(torch.get_rng_state(), before)
        weights.append(model.net[1].weight.clone())
    assert torch.equal(weights[0], weights[1])


def test_progress_bar_shows_epoch_loss_and_accuracy(digits_split: Digits, capsys: pytest.CaptureFixture[str]) -> None:
    x, y, _, _ = digits_split
    fit(digits_model("mlp"), x[:256], y[:256], epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err and "acc=" in err
    fit(digits_model("mlp"), x[:256], y[:256], epochs=1, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


class FixedPredictions(nn.Module):
    """Predicts a fixed class per sample, read from the first pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = (x[:, 0, 0, 0] * 10).round().long()
        return nn.functional.one_hot(labels, 10).float() * self.scale


def test_accuracy_closed_form_and_mode_restored() -> None:
    predicted = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    x = torch.zeros(8, 1, 2, 2)
    x[:, 0, 0, 0] = predicted / 10
    y = torch.tensor([0, 1, 2, 3, 4, 9, 9, 9])  # 5 of 8 right
    model = nn.Sequential(FixedPredictions(), nn.Identity())
    model.train()
    model[1].eval()  # mixed modes must survive
    for batch_size in (1, 3, 1000):
        assert accuracy(model, x, y, batch_size=batch_size) == 5 / 8
    assert model.training and model[0].training and not model[1].training
    assert model[0].scale.grad is None


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda x, y: (x * 2, y), ValueError, r"must lie in \[0, 1\]"),
        (lambda x, y: (x - 0.5, y), ValueError, r"must lie in \[0, 1\]"),
        (lambda x, y: (x[:, 0, 0, 0], y), ValueError, r"shape \(N, \*\): \(N, D\) for a table"),
        (lambda x, y: ((x * 16).long(), y), TypeError, "floating point"),
        (lambda x, y: (x, y.int()), ValueError, "int64"),
        (lambda x, y: (x, y[:-1]), ValueError, "samples"),
        (lambda x, y: (x, y + 10), ValueError, "only 10 outputs"),
        (lambda x, y: (x, y - 1), ValueError, ">= 0"),
        (lambda x, y: (x.numpy(), y), TypeError, "torch tensors"),
        (lambda x, y: (x[:0], y[:0]), ValueError, "empty"),
    ],
)
def test_bad_data_is_rejected(digits_split: Digits, change, error: type[Exception], message: str) -> None:
    x, y = change(digits_split[0][:64], digits_split[1][:64])
    model = digits_model("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        fit(model, x, y, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(error, match=message):
        accuracy(model, x, y)


class FailsOnThirdCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return self.linear(x.flatten(1))


def test_model_is_left_in_eval_mode_even_when_training_fails(digits_split: Digits) -> None:
    model = FailsOnThirdCall().train()
    with pytest.raises(RuntimeError, match="boom"):
        fit(model, digits_split[0][:256], digits_split[1][:256], batch_size=32, progress=False)
    assert not model.training and model.calls == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; valid names: adam, adamw, sgd"),
        ({"x_val": torch.zeros(4, 1, 8, 8)}, "both x_val and y_val"),
        ({"x_val": torch.zeros(4, 1, 4, 4), "y_val": torch.zeros(4, dtype=torch.int64)}, "x_val samples"),
    ],
)
def test_bad_settings_are_rejected(digits_split: Digits, kwargs: dict, message: str) -> None:
    model = digits_model("mlp")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fit(model, digits_split[0][:64], digits_split[1][:64], progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
