"""Certified robustness: guarantees that no attack can break, where attacks only give upper bounds.

* :class:`SmoothedClassifier` (Cohen, Rosenfeld & Kolter 2019): randomized smoothing, a certified
  L2 radius per point with probability 1 - α.
"""

from __future__ import annotations

from advlab.certify.smoothing import Certificate, SmoothedClassifier

__all__ = ["Certificate", "SmoothedClassifier"]
