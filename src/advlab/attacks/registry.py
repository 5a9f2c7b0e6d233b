"""Attacks by name, for the CLI and experiment specs: one table, and everything else read from it.

Each entry is a configuration class, the options its name fixes, and a display name. What an
attack needs (a model or an oracle, an ε or none) is not kept here: it is the class's own
metadata (:class:`advlab.attacks.contract.Attack`: ``access`` and ``kind``), so a new attack is
one line in :data:`ATTACKS` and the CLI, ``evaluate``, ``Cascade`` and the contract tests pick it
up.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.contract import Attack
from advlab.attacks.decision import BoundaryAttack, HopSkipJump
from advlab.attacks.fab import FAB, FABT
from advlab.attacks.gradient import FGM, FGSM, IFGSM, MIFGM, MIFGSM, PGD
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.minimal import FMN, CarliniWagnerL2, DeepFool
from advlab.attacks.score import NES, SimBA, SquareAttack
from advlab.attacks.sparse import JSMA, PGDL0
from advlab.attacks.tree import TreeAttack


@dataclass(frozen=True)
class Entry:
    """One named attack: its class, the options the name fixes, and how tables spell it."""

    cls: type
    fixed: Mapping[str, Any] = field(default_factory=dict)
    display: str = ""
    #: generic option names (as the CLI and specs spell them) that the class spells otherwise
    rename: Mapping[str, str] = field(default_factory=dict)

    @property
    def access(self) -> str:
        """``"gradients"``, ``"scores"`` or ``"labels"`` (the class's metadata)."""
        return getattr(self.cls, "access", "gradients")

    @property
    def kind(self) -> str:
        """``"bounded"``, ``"minimal"`` or ``"universal"`` (the class's metadata)."""
        return getattr(self.cls, "kind", "bounded")

    @property
    def black_box(self) -> bool:
        return self.access != "gradients"

    @property
    def oracle_output(self) -> str | None:
        """What an :class:`advlab.oracle.Oracle` must answer for this attack (``None``: white-box)."""
        return {"scores": "scores", "labels": "label"}.get(self.access)

    @property
    def takes_eps(self) -> bool:
        return self.kind != "minimal"


# ε is a ball's radius everywhere by name; SimBA's own ``eps`` is its step (the paper's name)
_SIMBA_OPTIONS = {"eps": "max_norm", "step_size": "eps"}

ATTACKS: dict[str, Entry] = {
    "fgsm": Entry(FGSM, {}, "FGSM"),
    "fgm": Entry(FGM, {}, "FGM"),
    "ifgsm": Entry(IFGSM, {}, "I-FGSM"),
    "bim": Entry(IFGSM, {}, "BIM"),
    "pgd": Entry(PGD, {}, "PGD"),
    "mifgsm": Entry(MIFGSM, {}, "MI-FGSM"),
    "mifgm": Entry(MIFGM, {}, "MI-FGM"),
    "apgdce": Entry(APGD, {"loss": "ce"}, "APGD-CE"),
    "apgddlr": Entry(APGD, {"loss": "dlr"}, "APGD-DLR"),
    "apgdt": Entry(APGDT, {}, "APGD-T"),
    "deepfool": Entry(DeepFool, {}, "DeepFool"),
    "cw": Entry(CarliniWagnerL2, {}, "C&W L2"),
    "cwl2": Entry(CarliniWagnerL2, {}, "C&W L2"),
    "fmn": Entry(FMN, {}, "FMN"),
    "fab": Entry(FAB, {}, "FAB"),
    "fabt": Entry(FABT, {}, "FAB-T"),
    "lbfgs": Entry(LBFGS, {}, "L-BFGS"),
    "jsma": Entry(JSMA, {}, "JSMA"),
    "pgdl0": Entry(PGDL0, {}, "PGD-L0"),
    "tree": Entry(TreeAttack, {}, "Tree attack"),
    "square": Entry(SquareAttack, {}, "Square"),
    "simba": Entry(SimBA, {}, "SimBA", _SIMBA_OPTIONS),
    "simbadct": Entry(SimBA, {"basis": "dct"}, "SimBA-DCT", _SIMBA_OPTIONS),
    "simbapixel": Entry(SimBA, {"basis": "pixel"}, "SimBA-pixel", _SIMBA_OPTIONS),
    "nes": Entry(NES, {}, "NES"),
    "hsj": Entry(HopSkipJump, {}, "HopSkipJump"),
    "hopskipjump": Entry(HopSkipJump, {}, "HopSkipJump"),
    "boundary": Entry(BoundaryAttack, {}, "Boundary"),
}

# Views derived from the table (never edited by hand), kept for callers of the old names.
#: black-box attacks and the oracle output they need ("scores" or "label")
BLACKBOX: dict[str, str] = {k: e.oracle_output for k, e in ATTACKS.items() if e.oracle_output}
#: attacks that look for the smallest perturbation instead of working within an eps
MINIMAL = frozenset(k for k, e in ATTACKS.items() if e.kind == "minimal")
DISPLAY_NAMES: dict[str, str] = {k: e.display for k, e in ATTACKS.items()}


def spelling(key: str) -> str:
    """How the CLI and the docs spell a key (``apgdce`` -> ``apgd-ce``; any spelling that
    :func:`attack_key` maps back to the key is accepted)."""
    display = ATTACKS[key].display
    return display.lower() if display.startswith(("APGD", "PGD-L0")) else key


def known_names(*, access: str | None = None, kind: str | None = None) -> str:
    """The keys of :func:`list_attacks` as the CLI spells them, comma-separated."""
    return ", ".join(spelling(k) for k in list_attacks(access=access, kind=kind))


def attack_key(name: str) -> str:
    """The registry key for a user's spelling (``"APGD-CE"`` -> ``"apgdce"``)."""
    return str(name).strip().lower().replace("-", "").replace("_", "").replace("&", "")


def list_attacks(*, access: str | None = None, kind: str | None = None) -> list[str]:
    """Registry keys, optionally only those with the given ``access`` and/or ``kind``."""
    return [k for k, e in ATTACKS.items()
            if (access is None or e.access == access) and (kind is None or e.kind == kind)]


def entry(name: str) -> Entry:
    """The entry of a user's spelling; an unknown name gets the closest names in the message."""
    key = attack_key(name)
    if key not in ATTACKS:
        close = difflib.get_close_matches(key, list(ATTACKS), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(spelling(k) for k in close)}?" if close else "."
        raise ValueError(f"unknown attack {name!r}{hint} Known attacks: {known_names()}")
    return ATTACKS[key]


def display_name(name: str) -> str:
    """How tables spell an attack (``"apgd-ce"`` -> ``"APGD-CE"``)."""
    return entry(name).display


def make_attack(name: str, *, strict: bool = True, **options: Any) -> Attack:
    """Build an attack configuration by name, e.g. ``make_attack("pgd", eps=0.1, steps=20)``.

    ``eps`` is always the radius of the ball (for SimBA, whose ``eps`` is its step, it sets
    ``max_norm``; ``step_size`` sets SimBA's step). Options set to ``None`` are left at the
    attack's default. With ``strict=False``, options the
    attack does not take (``steps`` for FGSM, say) are dropped, so one option set can configure
    several attacks; with ``strict=True`` they are an error.
    """
    e = entry(name)
    key = attack_key(name)
    accepted = {f.name for f in dataclasses.fields(e.cls)}
    given = {e.rename.get(k, k): v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown and strict:
        raise ValueError(f"{key} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    for k, v in e.fixed.items():
        if k in given and given[k] != v:
            raise ValueError(f"{key} fixes {k}={v!r}; got {k}={given[k]!r}")
    kwargs = {k: v for k, v in given.items() if k in accepted}
    kwargs.update(e.fixed)
    return e.cls(**kwargs)


__all__ = ["ATTACKS", "BLACKBOX", "DISPLAY_NAMES", "Entry", "MINIMAL", "attack_key", "display_name",
           "entry", "known_names", "list_attacks", "make_attack", "spelling"]
