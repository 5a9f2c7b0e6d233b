"""advlab.defenses: a pinned public API."""

from __future__ import annotations

import advlab.defenses as defenses


def test_defenses_api_is_pinned():
    assert set(defenses.__all__) == {"GaussianNoise", "Quantize", "RandomNoise",
        "Recipe", "Standard", "recipe_card", "train", "TrainResult", "read_training_state",
        "FGSMMix", "BatchMix", "PGDTraining", "FastFGSM", "TRADES", "EnsembleAdversarial",
        "Distillation", "DistillationResult", "distill", "VAT", "virtual_adversarial_perturbation",
        "SafetyNet", "ActivationDetector", "FittedDetector", "GuardedClassifier", "AdaptivePGD",
        "detection_roc_auc", "guarded_success", "reject_aware_margin", "find_layer", "IBPTraining",
        "OneVsRest"}
    assert len(defenses.__all__) == len(set(defenses.__all__))
    for name in defenses.__all__:
        assert getattr(defenses, name).__doc__, name
