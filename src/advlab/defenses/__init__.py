"""Defenses: adversarial training recipes, IBP training, distillation, detectors, virtual adversarial training."""

from __future__ import annotations

from advlab.attacks.adaptive import Quantize, RandomNoise
from advlab.defenses.detectors import ActivationDetector, FittedDetector, SafetyNet, detection_roc_auc, find_layer
from advlab.defenses.guarded import AdaptivePGD, GuardedClassifier, guarded_success, reject_aware_margin
from advlab.defenses.adversarial import TRADES, BatchMix, EnsembleAdversarial, FastFGSM, FGSMMix, PGDTraining
from advlab.defenses.distillation import Distillation, DistillationResult, distill
from advlab.defenses.recipe import GaussianNoise, OneVsRest, Recipe, Standard, recipe_card
from advlab.defenses.ibp import IBPTraining
from advlab.defenses.vat import VAT, virtual_adversarial_perturbation
from advlab.defenses.training import TrainResult, read_training_state, train

__all__ = ["GaussianNoise", "OneVsRest", "Quantize", "RandomNoise", "Recipe", "Standard", "recipe_card", "SafetyNet", "ActivationDetector", "FittedDetector",
           "GuardedClassifier", "AdaptivePGD", "detection_roc_auc", "guarded_success",
           "reject_aware_margin", "find_layer",
           "train", "TrainResult", "read_training_state", "FGSMMix", "BatchMix", "PGDTraining",
           "FastFGSM", "TRADES", "EnsembleAdversarial",
           "Distillation", "DistillationResult", "distill", "VAT", "virtual_adversarial_perturbation",
           "IBPTraining"]
