"""The geometry around an input: decision-boundary cross-sections, the dimension of the adversarial
subspace, and how straight an iterative attack's path is.

* :func:`decision_map`: the 2-D cross-section of CS231n lecture 16 (Goodfellow 2017; Warde-Farley &
  Goodfellow 2016, "Adversarial perturbations of deep neural networks"): the plane through one input
  ``x`` spanned by the FGSM direction ``u`` and a random direction ``v ⟂ u`` of the same L2 norm,
  with the predicted class (and its confidence) at every cell of a grid.
* :func:`adversarial_subspace_dim`: the Gradient-Aligned Adversarial Subspace (GAAS) estimate of
  Tramèr, Papernot, Goodfellow, Boneh & McDaniel (2017), "The Space of Transferable Adversarial
  Examples" (arXiv:1704.03453): how many *orthogonal* L2 perturbations of norm ε, all equally
  aligned with the gradient, are adversarial at once. :func:`gaas_directions` builds them.
* :func:`record_trajectory` and :func:`perturbation_cosine_similarity`: the iterates of I-FGSM /
  MI-FGSM and the cosine similarity of successive updates ``x_{t+1} - x_t``, the quantity Dong et
  al. (CVPR 2018, "Boosting Adversarial Attacks with Momentum") use to argue that
  momentum stabilises the update direction.

Nothing here changes the model (weights, modes, ``requires_grad``, ``.grad``), the inputs or the
global RNG; randomness comes from an explicit ``torch.Generator``.

Example:
    >>> dmap = decision_map(model, x[:1], y[:1], extent=0.3, generator=torch.Generator().manual_seed(0))
    >>> dmap.classes.shape, dmap.classes[dmap.origin] == dmap.clean_class
    >>> dims = adversarial_subspace_dim(model, x, y, eps=2.0, max_directions=64)
    >>> dims.distribution(), dims.summary()["mean_dim"]
    >>> cos = perturbation_cosine_similarity(model, x, y)   # I-FGSM vs MI-FGSM, ε = 0.1, 10 steps
    >>> cos.mean("I-FGSM"), cos.mean("MI-FGSM")

The package, one module per study: :mod:`.maps` (decision maps), :mod:`.subspace` (GAAS) and
:mod:`.cosines` (trajectories and their cosines); :mod:`._common` holds what they share.
"""

from __future__ import annotations

from advlab.evaluation.geometry.cosines import (CosineSimilarity, Trajectory, default_cosine_attacks,
                                                perturbation_cosine_similarity, record_trajectory,
                                                successive_cosine)
from advlab.evaluation.geometry.maps import DecisionMap, decision_map
from advlab.evaluation.geometry.subspace import SubspaceDims, adversarial_subspace_dim, gaas_directions

__all__ = ["CosineSimilarity", "DecisionMap", "SubspaceDims", "Trajectory", "adversarial_subspace_dim",
           "decision_map", "default_cosine_attacks", "gaas_directions", "perturbation_cosine_similarity",
           "record_trajectory", "successive_cosine"]
