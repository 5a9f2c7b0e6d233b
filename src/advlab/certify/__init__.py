"""Certified robustness: guarantees that no attack can break, where attacks only give upper bounds.

* :class:`SmoothedClassifier` (Cohen, Rosenfeld & Kolter 2019): randomized smoothing, a certified
  L2 radius per point with probability 1 - α.
* :func:`interval_bounds`, :func:`verified_radius` (Gowal et al. 2018): interval bound propagation,
  a verified L∞ radius for the zoo's MLP and small CNNs.
"""

from __future__ import annotations

from advlab.certify.ibp import SUPPORTED_LAYERS, interval_bounds, verified_accuracy, verified_margin, verified_radius
from advlab.certify.smoothing import Certificate, SmoothedClassifier

__all__ = ["Certificate", "SmoothedClassifier", "SUPPORTED_LAYERS", "interval_bounds", "verified_accuracy",
           "verified_margin", "verified_radius"]
