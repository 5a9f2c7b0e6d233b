"""Misuse gets a clear error (or a warning where the attack can carry on correctly)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, IFGSM, MIFGSM, PGD


@pytest.fixture()
def xy(digits):
    return digits["x_test"][:8].clone(), digits["y_test"][:8].clone()


@pytest.mark.parametrize("make,match", [
    (lambda: PGD(eps=-0.1), "eps must be"),
    (lambda: FGSM(eps=float("inf")), "finite eps"),
    (lambda: PGD(eps=0.1, norm="l3"), "unknown norm"),
    (lambda: PGD(eps=0.1, steps=0), "steps must be"),
    (lambda: PGD(eps=0.1, step_size=-1.0), "step_size"),
    (lambda: PGD(eps=0.1, restarts=3, random_start=False), "random_start"),
    (lambda: PGD(eps=0.1, loss="hinge"), "unknown loss"),
    (lambda: MIFGSM(eps=0.1, decay=-1.0), "decay"),
    (lambda: IFGSM(eps=0.1, bounds=(1.0, 0.0)), "lo < hi"),
])
def test_bad_configurations(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_hyperparameters_are_keyword_only():
    with pytest.raises(TypeError):
        PGD(0.1)  # type: ignore[misc]


def test_configs_are_frozen():
    a = PGD(eps=0.1)
    with pytest.raises(AttributeError):
        a.eps = 0.2  # type: ignore[misc]


@pytest.mark.parametrize("mutate,match,exc", [
    (lambda x, y: (x[:, 0], y), "model failed on inputs of shape", ValueError),
    (lambda x, y: (x, y[:5]), "shape", ValueError),
    (lambda x, y: (x.clone().index_fill_(0, torch.tensor([2]), float("nan")), y), "NaN", ValueError),
    (lambda x, y: (x * 255, y), "outside the bounds", ValueError),
    (lambda x, y: (x, y + 10), "class", ValueError),
    (lambda x, y: (x, y - 20), "negative", ValueError),
    (lambda x, y: (x, y.float()), "integer", TypeError),
    (lambda x, y: (x[:0], y[:0]), "empty", ValueError),
    (lambda x, y: (x.numpy(), y), "torch.Tensor", TypeError),
    (lambda x, y: (x, y.tolist()), "torch.Tensor", TypeError),
    (lambda x, y: ((x * 255).to(torch.uint8), y), "floating-point", TypeError),
    (lambda x, y: (x.double(), y), "float64", TypeError),
    (lambda x, y: (x[0, 0, 0], y), "batch", ValueError),
])
def test_bad_inputs(cnn_model, xy, mutate, match, exc):
    x, y = mutate(*xy)
    with pytest.raises(exc, match=match):
        PGD(eps=0.1, steps=2)(cnn_model, x, y)


def test_target_equal_to_label_is_rejected(cnn_model, xy):
    x, y = xy
    with pytest.raises(ValueError, match="target equals the true label"):
        PGD(eps=0.1, steps=2)(cnn_model, x, y, target=y)


def test_model_returning_probabilities_is_rejected(cnn_model, xy):
    x, y = xy
    probs = nn.Sequential(cnn_model, nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="probabilities"):
        FGSM(eps=0.1)(probs, x, y)
    # log-probabilities are valid logits
    logp = nn.Sequential(cnn_model, nn.LogSoftmax(dim=1))
    assert FGSM(eps=0.1)(logp, x, y).x_adv.shape == x.shape


def test_model_with_a_single_output_is_rejected(xy):
    x, y = xy
    one = nn.Sequential(nn.Flatten(), nn.Linear(64, 1)).eval()
    with pytest.raises(ValueError, match="at least 2 classes"):
        FGSM(eps=0.1)(one, x, torch.zeros_like(y))


def test_model_returning_nan_is_rejected(xy):
    x, y = xy

    class Bad(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan")) + x.sum() * 0

    with pytest.raises(ValueError, match="NaN or Inf logits"):
        PGD(eps=0.1, steps=2)(Bad(), x, y)


def test_non_module_model_is_rejected(xy):
    x, y = xy
    with pytest.raises(TypeError, match="nn.Module"):
        FGSM(eps=0.1)(lambda t: t, x, y)  # type: ignore[arg-type]


def test_generator_must_be_a_generator(cnn_model, xy):
    x, y = xy
    with pytest.raises(TypeError, match="torch.Generator"):
        PGD(eps=0.1, steps=1)(cnn_model, x, y, generator=0)  # type: ignore[arg-type]


def test_wrong_rank_input_names_the_batch_dimension(cnn_model, xy):
    x, y = xy
    with pytest.raises(ValueError, match="batch dimension"):
        PGD(eps=0.1, steps=1)(cnn_model, x[0, 0, 0], y)


def test_low_precision_logits_that_round_to_a_sum_of_one_are_not_called_probabilities():
    """Reproducer (registry property test, PGD, bfloat16, one row, 4 classes): logits 0.4414, 0.1006,
    0.3613, 0.0962 sum to 0.9995, which bfloat16 rounds to 1.0; they were refused as probabilities."""
    from advlab._checks import check_logits

    row = torch.tensor([[0.4414, 0.1006, 0.3613, 0.0962]], dtype=torch.bfloat16)
    check_logits(row, torch.tensor([3]), None)  # no error
    probs = torch.softmax(torch.randn(8, 4), dim=1)
    with pytest.raises(ValueError, match="appears to return probabilities"):
        check_logits(probs, torch.zeros(8, dtype=torch.long), None)
    with pytest.raises(ValueError, match="appears to return probabilities"):
        check_logits(probs.to(torch.bfloat16), torch.zeros(8, dtype=torch.long), None)
