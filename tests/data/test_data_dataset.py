"""Dataset: validation, subset, batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from advlab.data import Dataset


def make(n: int = 10, *, c: int = 1, classes: int = 3, **overrides) -> Dataset:
    g = torch.Generator().manual_seed(0)
    fields = dict(
        name="toy",
        x=torch.rand(n, c, 4, 5, generator=g),
        y=torch.arange(n) % classes,
        class_names=tuple(f"c{k}" for k in range(classes)),
        source="unit test",
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_basic_properties() -> None:
    ds = make(10, c=3, classes=4)
    assert len(ds) == 10
    assert ds.num_classes == 4
    assert ds.input_shape == (3, 4, 5)
    text = repr(ds)
    assert "n=10" in text and "input_shape=(3, 4, 5)" in text and "tensor" not in text


def test_class_names_list_is_stored_as_tuple_and_dataset_is_frozen() -> None:
    ds = make(class_names=["a", "b", "c"])
    assert ds.class_names == ("a", "b", "c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"x": torch.rand(10)}, ValueError, r"\(N, D\) for a table, \(N, C, T\) for signals or \(N, C, H, W\)"),
        ({"x": torch.rand(10, 1, 4, 5, dtype=torch.float64)}, ValueError, "float32"),
        ({"x": (torch.rand(10, 1, 4, 5) * 255).to(torch.uint8)}, ValueError, "float32"),
        ({"y": torch.zeros(10, dtype=torch.int32)}, ValueError, "int64"),
        ({"y": torch.zeros(10, 1, dtype=torch.int64)}, ValueError, r"shape \(N,\)"),
        ({"y": torch.zeros(9, dtype=torch.int64)}, ValueError, "10 images but y has 9 labels"),
        ({"y": torch.full((10,), 3)}, ValueError, r"labels must lie in \[0, 2\].*\[3, 3\]"),
        ({"y": torch.full((10,), -1)}, ValueError, r"labels must lie in \[0, 2\]"),
        ({"x": torch.full((10, 1, 4, 5), 1.5)}, ValueError, r"\[0, 1\].*1.5"),
        ({"x": torch.full((10, 1, 4, 5), -0.1)}, ValueError, r"\[0, 1\]"),
        ({"x": torch.full((10, 1, 4, 5), float("inf"))}, ValueError, r"\[0, 1\]"),
        ({"x": torch.rand(10, 1, 4, 5).index_put_((torch.tensor([7]),), torch.tensor(float("nan")))},
         ValueError, "NaN"),
        ({"class_names": ()}, ValueError, "class_names is empty"),
        ({"class_names": ("a", "a", "b")}, ValueError, "not unique"),
        ({"class_names": "abc"}, TypeError, "sequence of strings"),
        ({"x": [[0.0]]}, TypeError, "torch.Tensor"),
        ({"name": ""}, ValueError, "non-empty"),
    ],
)
def test_validation_errors(overrides: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make(**overrides)


def test_empty_dataset_is_allowed() -> None:
    ds = make(0)
    assert len(ds) == 0 and list(ds.batches(4)) == []


def test_subset_first_n() -> None:
    ds = make(10)
    sub = ds.subset(4)
    assert len(sub) == 4
    assert torch.equal(sub.x, ds.x[:4]) and torch.equal(sub.y, ds.y[:4])
    assert sub.class_names == ds.class_names and "first 4" in sub.source
    assert len(ds.subset(0)) == 0 and len(ds.subset(10)) == 10


def test_subset_indices_keep_order_and_repeats() -> None:
    ds = make(10)
    for index in ([7, 2, 2, 9], torch.tensor([7, 2, 2, 9])):
        sub = ds.subset(index)
        assert torch.equal(sub.y, ds.y[torch.tensor([7, 2, 2, 9])])
        assert torch.equal(sub.x[0], ds.x[7])


def test_subset_boolean_mask() -> None:
    ds = make(10)
    mask = ds.y == 1
    sub = ds.subset(mask)
    assert len(sub) == int(mask.sum()) == 3
    assert bool((sub.y == 1).all())


@pytest.mark.parametrize(
    ("arg", "error", "message"),
    [
        (11, ValueError, r"\[0, 10\]"),
        (-1, ValueError, r"\[0, 10\]"),
        (True, TypeError, "bool"),
        ([0, 10], IndexError, r"\[0, 9\]"),
        ([-1], IndexError, r"\[0, 9\]"),
        (torch.tensor([0.5]), TypeError, "integers"),
        (torch.tensor([[0, 1]]), ValueError, "1-D"),
        (torch.ones(3, dtype=torch.bool), ValueError, "mask"),
    ],
)
def test_subset_errors(arg, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make(10).subset(arg)


def test_batches_cover_everything_in_order() -> None:
    ds = make(10)
    batches = list(ds.batches(4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert batches[0][0].shape == (4, 1, 4, 5)
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.x)
    assert torch.equal(torch.cat([y for _, y in batches]), ds.y)
    assert [len(y) for _, y in ds.batches(4, drop_last=True)] == [4, 4]


def test_shuffled_batches_are_a_reproducible_permutation() -> None:
    ds = make(10, classes=10)  # labels 0..9, unique

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in ds.batches(3, shuffle=True, generator=gen)]).tolist()

    assert sorted(order(0)) == list(range(10))
    assert order(0) == order(0)
    assert order(0) != list(range(10)) or order(1) != list(range(10))
    state = torch.random.get_rng_state()
    order(3)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "positive int"),
        ({"batch_size": 2.5}, "positive int"),
        ({"batch_size": 2, "shuffle": True}, "explicit generator"),
        ({"batch_size": 2, "generator": torch.Generator()}, "shuffle=False"),
    ],
)
def test_batches_errors_are_eager(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make().batches(**kwargs)
