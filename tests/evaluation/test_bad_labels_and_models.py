"""#11 reproducers: evaluations fed labels they cannot have or a model that answers NaN reported
"clean accuracy 0.0%" (or raised from inside torch, depending on the data); labels of dtype
int32/int16 raised torch's "expected target dtype to be Long". Each entry point now refuses the
first two with a clear message and takes any integer dtype."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks import PGD, DeepFool, UniversalPerturbation
from advlab.evaluation import Cascade, audit, evaluate, measure_minimal_norms, strong_evaluate


class _NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


ENTRY_POINTS = {
    "evaluate": lambda m, x, y: evaluate(m, x, y, attacks=[PGD(eps=0.1, steps=2)], eps=[0.1],
                                         progress=False).rows[0].robust_accuracy,
    "strong_evaluate": lambda m, x, y: strong_evaluate(m, x, y, eps=0.1, steps=2, n_target_classes=2,
                                                       progress=False).robust_accuracy,
    "Cascade": lambda m, x, y: Cascade([PGD(eps=0.1, steps=2)]).run(m, x, y, progress=False).robust_accuracy,
    "measure_minimal_norms": lambda m, x, y: float(measure_minimal_norms(
        m, x, y, norm="l2", attacks={"DF": DeepFool(steps=3)}, progress=False).distances.sum()),
    "UniversalPerturbation": lambda m, x, y: UniversalPerturbation(eps=0.1, max_epochs=1, method="sgd")(
        m, x, y).fooling_rate,
    "audit": lambda m, x, y: audit(m, x, y, eps=0.1, steps=2).passed,
}


@pytest.fixture(scope="module")
def points(digits):
    return digits["x_test"][:24], digits["y_test"][:24]


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_labels_outside_the_classes_are_refused(name, cnn_model, points):
    x, y = points
    with pytest.raises(ValueError, match="y contains class 1[0-9] but the model has 10 classes"):
        ENTRY_POINTS[name](cnn_model, x, y + 10)


@pytest.mark.parametrize("name", [k for k in ENTRY_POINTS if k not in ("UniversalPerturbation",)])
def test_a_model_answering_nan_is_refused_not_scored_zero(name, points):
    x, y = points
    with pytest.raises(ValueError, match="NaN or Inf logits"):
        ENTRY_POINTS[name](_NaNModel().eval(), x, y)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8], ids=str)
@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_any_integer_label_dtype_gives_the_int64_answer(name, dtype, cnn_model, points):
    x, y = points
    assert ENTRY_POINTS[name](cnn_model, x, y.to(dtype)) == ENTRY_POINTS[name](cnn_model, x, y)


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: evaluate(m, x, y, attacks=[PGD(eps=0.1)], eps=[0.1], batch_size=0, progress=False),
     "batch_size must be an integer >= 1"),
    (lambda m, x, y: evaluate(m, x, y, attacks=[PGD(eps=0.1)], eps=["0.1"], progress=False),
     "eps must be a list of numbers"),
    (lambda m, x, y: audit(m, x, y, eps=0.1, max_points=0), "max_points must be an integer >= 1"),
    (lambda m, x, y: audit(m, x, y, eps=0.1, batch_size=0), "batch_size must be an integer >= 1"),
])
def test_bad_sizes_are_named(call, match, cnn_model, points):
    """#11: ``batch_size=0`` said "range() arg 3 must not be zero", ``audit(max_points=0)`` raised
    from torch.cat, ``eps=["0.1"]`` was read as a number."""
    x, y = points
    with pytest.raises((ValueError, TypeError), match=match):
        call(cnn_model, x, y)
