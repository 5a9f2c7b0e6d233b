"""Attacks. Each is a frozen configuration; calling it returns an :class:`AttackResult`.

>>> from advlab.attacks import PGD
>>> result = PGD(eps=0.1, norm="linf", steps=20, step_size=0.01, random_start=False)(model, x, y)
>>> result.x_adv, result.success, result.pred, result.norms, result.num_grads
"""

from __future__ import annotations

from advlab.attacks._base import AttackResult, random_targets
from advlab.attacks.adaptive import BPDA, EOT
from advlab.attacks.contract import Attack, execute, perturb, trace
from advlab.attacks.criteria import (ConfidenceBelow, Criterion, Misclassified, NotRejected, SourceTarget,
                                     TargetClass, TargetConfidence)
from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.decision import BoundaryAttack, HopSkipJump
from advlab.attacks.fab import FAB, FABT
from advlab.attacks.gradient import BIM, FGM, FGSM, IFGSM, MIFGM, MIFGSM, PGD
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.minimal import FMN, CarliniWagnerL2, DeepFool
from advlab.attacks.regression import RegressionPGD, RegressionResult, noise_gain
from advlab.attacks.registry import ATTACKS, list_attacks, make_attack
from advlab.attacks.patch import AdversarialPatch, PatchResult, patch_success, success_vs_size
from advlab.attacks.score import NES, SimBA, SquareAttack
from advlab.attacks.sparse import JSMA, PGDL0
from advlab.attacks.tree import TreeAttack
from advlab.attacks.universal import UniversalPerturbation, UniversalResult, fooling_rate
from advlab.attacks.transfer import (SubstituteResult, TransferAttack, TransferResult, jacobian_augmentation,
                                     train_substitute)

__all__ = ["BPDA", "EOT", "JSMA", "LBFGS", "PGDL0", "TreeAttack", "Attack", "ConfidenceBelow", "Criterion", "Misclassified", "NotRejected", "SourceTarget",
           "TargetClass", "TargetConfidence", "execute", "trace", "APGD", "APGDT", "ATTACKS", "AttackResult", "BIM", "CarliniWagnerL2", "DeepFool", "FAB", "FABT", "FGM", "FGSM", "FMN", "IFGSM",
           "MIFGM", "MIFGSM", "PGD", "list_attacks", "make_attack", "perturb", "random_targets", "NES", "SimBA", "SquareAttack", "BoundaryAttack", "HopSkipJump",
           "AdversarialPatch", "PatchResult", "UniversalPerturbation", "UniversalResult", "fooling_rate",
           "patch_success", "success_vs_size", "RegressionPGD", "RegressionResult", "noise_gain",
           "SubstituteResult", "TransferAttack", "TransferResult", "jacobian_augmentation", "train_substitute"]
