"""The public API of advlab.models is curated: pin it."""

from __future__ import annotations

import advlab.models as models

EXPECTED = {
    "SklearnScores", "from_sklearn", "EstimatorModule", "SoftKNN", "as_model", "load_sklearn", "save_sklearn",
    "MLP", "BatchNormMLP", "LeNet5", "SmallCNN", "SmallResNet", "RBFNet", "TabularMLP", "CNN1d", "ARCHITECTURES",
    "architecture_options", "build", "build_seeded",
    "list_architectures", "Normalize", "ModelCard", "save", "load", "load_card", "code_revision",
    "fit", "accuracy", "TrainHistory", "Ensemble", "VAE", "VAEHistory", "fit_vae", "load_vae", "save_vae",
}


def test_all_is_pinned_and_resolvable() -> None:
    assert set(models.__all__) == EXPECTED
    assert len(models.__all__) == len(EXPECTED)  # no duplicates
    for name in models.__all__:
        assert getattr(models, name) is not None, name


def test_public_callables_have_docstrings() -> None:
    for name in models.__all__:
        obj = getattr(models, name)
        if callable(obj):
            assert obj.__doc__ and obj.__doc__.strip(), name
