"""The public names users rely on are curated: pin them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import advlab.attacks as attacks
import advlab.evaluation as evaluation
import advlab.runs as runs


def test_attacks_api_is_pinned():
    assert set(attacks.__all__) == {"BPDA", "EOT", "TreeAttack", "JSMA", "LBFGS", "PGDL0", "APGD", "APGDT", "ATTACKS", "AttackResult", "BIM", "CarliniWagnerL2", "DeepFool", "FAB", "FABT", "FGM",
                                    "FGSM", "FMN", "IFGSM", "MIFGM", "MIFGSM", "PGD", "list_attacks",
                                    "make_attack", "perturb", "SubstituteResult", "TransferAttack", "TransferResult", "jacobian_augmentation", "train_substitute", "random_targets", "NES", "SimBA", "SquareAttack", "BoundaryAttack", "HopSkipJump", "AdversarialPatch", "PatchResult", "UniversalPerturbation", "UniversalResult", "fooling_rate", "patch_success", "success_vs_size", "RegressionPGD", "RegressionResult", "noise_gain",
                                    "Attack", "ConfidenceBelow", "Criterion", "Misclassified", "NotRejected",
                                    "SourceTarget", "TargetClass", "TargetConfidence", "execute", "trace"}
    for name in attacks.__all__:
        assert getattr(attacks, name) is not None


def test_evaluation_and_runs_api_are_pinned():
    assert set(evaluation.__all__) == {
        "AuditReport", "Check", "CosineSimilarity", "DecisionMap", "EvalRow", "Evaluation", "SubspaceDims",
        "Trajectory", "adversarial_subspace_dim", "audit", "clean_predictions", "decision_map", "evaluate",
        "gaas_directions", "perturbation_cosine_similarity", "provenance", "record_trajectory",
        "MinimalNorms", "measure_minimal_norms", "quantiles", "robust_accuracy_curve",
        "BoundsTable", "GenerativeRobustness", "LipschitzEstimate", "bounds_table", "fawzi_bound",
        "fawzi_bound_classwise", "lipschitz_estimate", "measure_robustness", "median_upper_bound",
        "Cascade", "CascadeResult", "strong_attacks", "strong_evaluate", "TransferCell",
        "FoolingResult", "NoiseConfidence", "fooling_images", "noise_confidence", "TransferMatrix", "WhiteBox", "transfer_matrix",
        "LEARNERS", "Learner", "VoteEnsemble", "fit_learners", "technique_matrix",
        "OBS_BOUNDS", "ObservationNoise", "PolicyCurve", "PolicyRow", "attack_policy", "cartpole_controller",
        "policy_return_vs_eps", "train_policy"}
    assert set(runs.__all__) == {"DEMO_EPS", "attack_job", "audit_job", "bounds_job", "demo_job", "evaluate_job",
                                "geometry_job", "measure_job", "train_job"}


@pytest.mark.parametrize("cls", [attacks.FGSM, attacks.FGM, attacks.IFGSM, attacks.PGD, attacks.MIFGSM,
                                 attacks.MIFGM])
def test_attacks_are_frozen_keyword_only_dataclasses_with_docstrings(cls):
    params = dataclasses.fields(cls)
    assert all(f.kw_only for f in params)
    assert cls.__dataclass_params__.frozen
    doc = cls.__doc__ or ""
    assert "Example" in doc and any(year in doc for year in ("2015", "2017", "2018"))


def test_make_attack_by_name():
    a = attacks.make_attack("mifgm", eps=1.0, steps=5)
    assert isinstance(a, attacks.MIFGM) and a.norm == "l2" and a.steps == 5
    assert attacks.make_attack("bim", eps=0.1) == attacks.IFGSM(eps=0.1)
    with pytest.raises(ValueError, match="does not take"):
        attacks.make_attack("fgsm", eps=0.1, steps=3)
    assert attacks.make_attack("fgsm", eps=0.1, steps=3, strict=False) == attacks.FGSM(eps=0.1)
    with pytest.raises(ValueError, match="does not take norm"):
        attacks.make_attack("fgm", eps=0.1, norm="linf")  # FGM is the L2 method
    with pytest.raises(ValueError, match="fixes basis"):
        attacks.make_attack("simbadct", eps=0.1, basis="pixel")
    with pytest.raises(ValueError, match="did you mean pgd"):
        attacks.make_attack("pdg", eps=0.1)
    with pytest.raises(ValueError, match="unknown attack"):
        attacks.make_attack("zoo", eps=0.1)


def test_fgm_and_mifgm_are_classes_giving_the_l2_forms_bit_for_bit(cnn_model, digits):
    x, y = digits["x_test"][:16], digits["y_test"][:16]
    assert isinstance(attacks.FGM, type) and isinstance(attacks.MIFGM, type)
    assert torch.equal(attacks.FGM(eps=1.0)(cnn_model, x, y).x_adv,
                       attacks.FGSM(eps=1.0, norm="l2")(cnn_model, x, y).x_adv)
    assert torch.equal(attacks.MIFGM(eps=1.0, steps=4)(cnn_model, x, y).x_adv,
                       attacks.MIFGSM(eps=1.0, steps=4, norm="l2")(cnn_model, x, y).x_adv)
