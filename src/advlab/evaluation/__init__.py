"""Measuring robustness: clean/robust accuracy over ε for several attacks, worst case per point."""

from __future__ import annotations

from advlab.evaluation.audit import AuditReport, Check, audit
from advlab.evaluation.geometry import (CosineSimilarity, DecisionMap, SubspaceDims, Trajectory,
                                        adversarial_subspace_dim, decision_map, gaas_directions,
                                        perturbation_cosine_similarity, record_trajectory)
from advlab.evaluation.robustness import EvalRow, Evaluation, clean_predictions, evaluate, provenance

__all__ = ["AuditReport", "Check", "CosineSimilarity", "DecisionMap", "EvalRow", "Evaluation", "SubspaceDims",
           "Trajectory", "adversarial_subspace_dim", "audit", "clean_predictions", "decision_map", "evaluate",
           "gaas_directions", "perturbation_cosine_similarity", "provenance", "record_trajectory"]
