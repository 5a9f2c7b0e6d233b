"""Attacks by name, for the CLI and experiment specs (the registry is data, not code)."""

from __future__ import annotations

import dataclasses
from typing import Any

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.decision import BoundaryAttack, HopSkipJump
from advlab.attacks.gradient import FGSM, IFGSM, MIFGSM, PGD
from advlab.attacks.minimal import FMN, CarliniWagnerL2, DeepFool
from advlab.attacks.score import NES, SimBA, SquareAttack

# name -> (config class, options fixed by the name)
ATTACKS: dict[str, tuple[type, dict[str, Any]]] = {
    "fgsm": (FGSM, {}),
    "fgm": (FGSM, {"norm": "l2"}),
    "ifgsm": (IFGSM, {}),
    "bim": (IFGSM, {}),
    "pgd": (PGD, {}),
    "mifgsm": (MIFGSM, {}),
    "mifgm": (MIFGSM, {"norm": "l2"}),
    "apgdce": (APGD, {"loss": "ce"}),
    "apgddlr": (APGD, {"loss": "dlr"}),
    "apgdt": (APGDT, {}),
    # minimal-perturbation attacks (no eps; see advlab.evaluation.measure_minimal_norms)
    "deepfool": (DeepFool, {}),
    "cw": (CarliniWagnerL2, {}),
    "cwl2": (CarliniWagnerL2, {}),
    "fmn": (FMN, {}),
    # black-box, score-based: they take an advlab.oracle.Oracle(output="scores")
    "square": (SquareAttack, {}),
    "simba": (SimBA, {}),
    "simbadct": (SimBA, {"basis": "dct"}),
    "simbapixel": (SimBA, {"basis": "pixel"}),
    "nes": (NES, {}),
    # black-box, decision-based (labels only; minimal perturbation, no eps)
    "hsj": (HopSkipJump, {}),
    "hopskipjump": (HopSkipJump, {}),
    "boundary": (BoundaryAttack, {}),
}

#: black-box attacks and the oracle output they need ("scores" or "label")
BLACKBOX: dict[str, str] = {"square": "scores", "simba": "scores", "simbadct": "scores",
                            "simbapixel": "scores", "nes": "scores",
                            "hsj": "label", "hopskipjump": "label", "boundary": "label"}

#: attacks that look for the smallest perturbation instead of working within an eps
MINIMAL = frozenset({"deepfool", "cw", "cwl2", "fmn"})

DISPLAY_NAMES = {"fgsm": "FGSM", "fgm": "FGM", "ifgsm": "I-FGSM", "bim": "BIM", "pgd": "PGD",
                 "mifgsm": "MI-FGSM", "mifgm": "MI-FGM",
                 "apgdce": "APGD-CE", "apgddlr": "APGD-DLR", "apgdt": "APGD-T",
                 "deepfool": "DeepFool", "cw": "C&W L2", "cwl2": "C&W L2", "fmn": "FMN",
                 "square": "Square", "simba": "SimBA", "simbadct": "SimBA-DCT", "simbapixel": "SimBA-pixel",
                 "nes": "NES", "hsj": "HopSkipJump", "hopskipjump": "HopSkipJump", "boundary": "Boundary"}


def list_attacks() -> list[str]:
    return list(ATTACKS)


def attack_key(name: str) -> str:
    """The registry key for a user's spelling (``"APGD-CE"`` -> ``"apgdce"``)."""
    return name.strip().lower().replace("-", "").replace("_", "")


def make_attack(name: str, *, strict: bool = True, **options: Any) -> Any:
    """Build an attack configuration by name, e.g. ``make_attack("pgd", eps=0.1, steps=20)``.

    Options set to ``None`` are left at the attack's default. With ``strict=False``, options the
    attack does not take (``steps`` for FGSM, say) are dropped, so one option set can configure
    several attacks; with ``strict=True`` they are an error.
    """
    key = attack_key(name)
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}: use one of {', '.join(ATTACKS)}")
    cls, fixed = ATTACKS[key]
    accepted = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown and strict:
        raise ValueError(f"{key} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    for k, v in fixed.items():
        if k in given and given[k] != v:
            raise ValueError(f"{key} fixes {k}={v!r}; got {k}={given[k]!r}")
    kwargs = {k: v for k, v in given.items() if k in accepted}
    kwargs.update(fixed)
    return cls(**kwargs)
