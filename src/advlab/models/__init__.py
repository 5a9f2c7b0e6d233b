"""Models: architectures and their registry, the normalisation wrapper, checkpoints, training.

- :mod:`advlab.models.zoo`: ``MLP``, ``BatchNormMLP``, ``LeNet5``, ``SmallCNN``, ``SmallResNet``, ``RBFNet``, ``TabularMLP``
  (tables), ``CNN1d`` (signals) and the ``ARCHITECTURES`` registry with :func:`build` / :func:`build_seeded`.
- :mod:`advlab.models.wrappers`: :class:`Normalize`, so attacks work in input space [0, 1].
- :mod:`advlab.models.checkpoint`: safetensors weights plus a JSON :class:`ModelCard`.
- :mod:`advlab.models.ensemble`: :class:`Ensemble`, fused in logits, predictions or loss.
- :mod:`advlab.models.training`: :func:`fit` and :func:`accuracy` on in-memory tensors.
"""

from __future__ import annotations

from advlab.models.checkpoint import ModelCard, code_revision, load, load_card, save
from advlab.models.training import TrainHistory, accuracy, fit
from advlab.models.wrappers import Normalize
from advlab.models.zoo import (
    ARCHITECTURES,
    MLP,
    BatchNormMLP,
    RBFNet,
    CNN1d,
    TabularMLP,
    LeNet5,
    SmallCNN,
    SmallResNet,
    architecture_options,
    build,
    build_seeded,
    list_architectures,
)

from advlab.models import zoo
from advlab.models.ensemble import Ensemble
from advlab.models.generative import VAE, VAEHistory, fit_vae, load_vae, save_vae
from advlab.models.sklearn import (EstimatorModule, SklearnScores, SoftKNN, as_model, from_sklearn, load_sklearn,
                                    save_sklearn)

__all__ = [*zoo.__all__, "EstimatorModule", "SklearnScores", "SoftKNN", "as_model", "from_sklearn", "load_sklearn",
           "save_sklearn", "Normalize", "ModelCard", "save", "load", "load_card",
           "code_revision", "fit", "accuracy", "TrainHistory", "Ensemble", "VAE", "VAEHistory", "fit_vae",
           "load_vae", "save_vae"]
