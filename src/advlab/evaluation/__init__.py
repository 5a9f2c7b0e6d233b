"""Measuring robustness: clean/robust accuracy over ε for several attacks, worst case per point;
episode return against ε for attacks on policies (:mod:`advlab.evaluation.policy`)."""

from __future__ import annotations

from advlab.evaluation.audit import AuditReport, Check, audit
from advlab.evaluation.cascade import Cascade, CascadeResult, strong_attacks, strong_evaluate
from advlab.evaluation.fooling import FoolingResult, NoiseConfidence, fooling_images, noise_confidence
from advlab.evaluation.geometry import (CosineSimilarity, DecisionMap, SubspaceDims, Trajectory,
                                        adversarial_subspace_dim, decision_map, gaas_directions,
                                        perturbation_cosine_similarity, record_trajectory)
from advlab.evaluation.minimal import MinimalNorms, quantiles, robust_accuracy_curve
from advlab.evaluation.minimal import measure as measure_minimal_norms
from advlab.evaluation.theory import (BoundsTable, GenerativeRobustness, LipschitzEstimate, bounds_table,
                                      fawzi_bound, fawzi_bound_classwise, lipschitz_estimate,
                                      measure_robustness, median_upper_bound)
from advlab.evaluation.policy import (OBS_BOUNDS, ObservationNoise, PolicyCurve, PolicyRow, attack_policy,
                                      cartpole_controller, policy_return_vs_eps, train_policy)
from advlab.evaluation.transfer import TransferCell, TransferMatrix, WhiteBox, transfer_matrix
from advlab.evaluation.techniques import LEARNERS, Learner, VoteEnsemble, fit_learners, technique_matrix
from advlab.evaluation.robustness import EvalRow, Evaluation, clean_predictions, evaluate, provenance

__all__ = ["AuditReport", "Check", "CosineSimilarity", "DecisionMap", "EvalRow", "Evaluation", "SubspaceDims",
           "Trajectory", "adversarial_subspace_dim", "audit", "clean_predictions", "decision_map", "evaluate",
           "gaas_directions", "perturbation_cosine_similarity", "provenance", "record_trajectory",
           "MinimalNorms", "measure_minimal_norms", "quantiles", "robust_accuracy_curve",
           "BoundsTable", "GenerativeRobustness", "LipschitzEstimate", "bounds_table", "fawzi_bound",
           "fawzi_bound_classwise", "lipschitz_estimate", "measure_robustness", "median_upper_bound",
           "Cascade", "CascadeResult", "strong_attacks", "strong_evaluate",
           "FoolingResult", "NoiseConfidence", "fooling_images", "noise_confidence",
           "TransferCell", "TransferMatrix", "WhiteBox", "transfer_matrix",
           "LEARNERS", "Learner", "VoteEnsemble", "fit_learners", "technique_matrix",
           "OBS_BOUNDS", "ObservationNoise", "PolicyCurve", "PolicyRow", "attack_policy", "cartpole_controller",
           "policy_return_vs_eps", "train_policy"]
