"""End to end on tables (N, D) and signals (N, C, T): load, train, checkpoint, evaluate FGSM/PGD."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from advlab.attacks import FGSM, PGD
from advlab.data import load_dataset
from advlab.evaluation import evaluate
from advlab.models import accuracy, build_seeded, fit, load, save

HAVE_SIGNALS = any(importlib.util.find_spec(p) is not None for p in ("sktime", "aeon"))

CASES = [
    # (dataset, architecture, epochs, lr, the clean test accuracy it must reach)
    pytest.param("breast-cancer", "tabular-mlp", 15, 1e-2, 0.9, id="table-breast-cancer"),
    pytest.param("wine", "tabular-mlp", 30, 1e-2, 0.9, id="table-wine"),
    pytest.param("basic-motions", "cnn1d", 25, 3e-3, 0.8, id="signal-basic-motions",
                 marks=pytest.mark.skipif(not HAVE_SIGNALS, reason="needs advlab[signals] (sktime or aeon)")),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models on a shared machine: one thread is 4x faster than two fighting for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained():
    cache: dict[str, tuple] = {}

    def get(dataset: str, arch: str, epochs: int, lr: float):
        if dataset not in cache:
            train, test = load_dataset(dataset, split="train"), load_dataset(dataset, split="test")
            model = build_seeded(arch, in_shape=train.input_shape, num_classes=train.num_classes, seed=0)
            history = fit(model, train.x, train.y, epochs=epochs, batch_size=32, lr=lr, seed=0, progress=False,
                          x_val=test.x, y_val=test.y)
            cache[dataset] = (model, train, test, history)
        return cache[dataset]

    return get


@pytest.mark.parametrize(("dataset", "arch", "epochs", "lr", "floor"), CASES)
def test_train_checkpoint_and_evaluate(trained, tmp_path, dataset: str, arch: str, epochs: int, lr: float,
                                       floor: float) -> None:
    model, train, test, history = trained(dataset, arch, epochs, lr)
    assert train.kind in ("table", "signal") and test.input_shape == train.input_shape
    clean = accuracy(model, test.x, test.y)
    assert clean == history.val_accuracy[-1] and clean >= floor

    # the checkpoint rebuilds the same function
    path = save(model, tmp_path / "ckpt", card={"dataset": dataset, "class_names": train.class_names,
                                               "clean_accuracy": clean, "seed": 0})
    loaded = load(path)
    assert loaded.advlab_card.in_shape == train.input_shape
    with torch.no_grad():
        assert torch.equal(loaded(test.x), model(test.x))

    eps = [0.0, 0.02, 0.1, 0.3]
    ev = evaluate(loaded, test.x, test.y, attacks=[FGSM(eps=0.0), PGD(eps=0.0, steps=10)], eps=eps,
                  progress=False, examples=4)
    rows = {(r.attack, r.eps): r for r in ev.rows}
    for r in ev.rows:
        assert r.n == len(test) and r.clean_accuracy == pytest.approx(clean)
    for attack in ("FGSM", "PGD", "worst-case"):
        curve = [rows[(attack, e)].robust_accuracy for e in eps]
        assert curve[0] == pytest.approx(clean)  # nothing moves at ε = 0
        assert all(a >= b for a, b in zip(curve, curve[1:])), (attack, curve)  # more budget, no more robust
    for e in eps:
        assert rows[("worst-case", e)].robust_accuracy <= min(rows[("FGSM", e)].robust_accuracy,
                                                              rows[("PGD", e)].robust_accuracy)
    assert rows[("PGD", 0.3)].robust_accuracy < 0.5 * clean  # the attack really moves these models
    # the adversarial inputs keep the data's shape, the box [0, 1] and the ε-ball
    idx, x_adv = ev.examples["PGD@0.1"]
    assert x_adv.shape == (idx.numel(), *train.input_shape)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - test.x[idx]).abs().max()) <= 0.1 + 1e-6


def test_an_advlab_dataset_is_evaluated_whole(trained) -> None:
    model, _, test, _ = trained("breast-cancer", "tabular-mlp", 15, 1e-2)
    by_tensors = evaluate(model, test.x, test.y, attacks=[FGSM(eps=0.0)], eps=[0.05], progress=False)
    by_dataset = evaluate(model, test, attacks=[FGSM(eps=0.0)], eps=[0.05], progress=False)
    assert by_dataset.rows[0].robust_accuracy == by_tensors.rows[0].robust_accuracy
