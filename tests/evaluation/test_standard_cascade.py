"""#13: AutoAttack's "standard" list in the strong cascade (APGD-CE → APGD-T → FAB-T → Square),
beside advlab's faster default, with the same per-point worst case and resume."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import FABT, SquareAttack
from advlab.evaluation import strong_attacks, strong_evaluate
from advlab.runs.spec import SpecError, parse_spec


def test_the_standard_list_is_autoattacks_and_no_weaker_than_the_fast_one(cnn_model, digits, tmp_path):
    x, y = digits["x_test"][:60], digits["y_test"][:60]
    members = strong_attacks(0.1, version="standard", steps=10, square_budget=50)
    assert list(members) == ["APGD-CE", "APGD-T", "FAB-T", "Square"]
    assert isinstance(members["FAB-T"], FABT) and isinstance(members["Square"], SquareAttack)
    assert members["FAB-T"].eps == 0.1 and members["Square"].budget == 50
    fast = strong_evaluate(cnn_model, x, y, eps=0.1, steps=10, progress=False)
    std = strong_evaluate(cnn_model, x, y, eps=0.1, steps=10, progress=False, version="standard",
                          square_budget=50, checkpoint_path=tmp_path / "rec")
    assert std.names == ("APGD-CE", "APGD-T", "FAB-T", "Square")
    # the same first two stages, so the four can only break more points
    assert torch.equal(std.broken & fast.broken, fast.broken)
    assert std.robust_accuracy <= fast.robust_accuracy
    acc = list(std.stage_robust_accuracy)
    assert acc == sorted(acc, reverse=True)
    # resume: the same call on the same record reads it back, the same per-point outcome
    again = strong_evaluate(cnn_model, x, y, eps=0.1, steps=10, progress=False, version="standard",
                            square_budget=50, checkpoint_path=tmp_path / "rec")
    assert torch.equal(again.broken, std.broken) and torch.equal(again.broken_by, std.broken_by)
    with pytest.raises(ValueError, match="unknown strong-evaluation version"):
        strong_attacks(0.1, version="autoattack")
    # under L1 (L1-APGD, FAB-T L1) there is no Square: the standard list is the first three
    l1 = strong_attacks(5.0, "l1", version="standard")
    assert list(l1) == ["APGD-CE", "APGD-T", "FAB-T"] and all(a.norm == "l1" for a in l1.values())


SPEC = """
[data.digits]
name = "digits"
n = 20

[models.cnn]
zoo = "small-cnn"
data = "digits"
epochs = 1

[[measure]]
kind = "strong"
models = ["cnn"]
data = "digits"
eps = [0.1]
steps = 5
"""


def test_the_spec_strong_kind_takes_a_version_and_keeps_old_hashes(tmp_path):
    fast = parse_spec(SPEC, path=tmp_path / "a.toml")
    std = parse_spec(SPEC + 'version = "standard"\n', path=tmp_path / "b.toml")
    explicit = parse_spec(SPEC + 'version = "fast"\n', path=tmp_path / "c.toml")
    strong = [c for c in fast.cells if c.kind == "strong"][0]
    assert "version" not in strong.config   # a spec without it hashes as before #13
    assert [c.hash for c in explicit.cells] == [c.hash for c in fast.cells]
    assert [c for c in std.cells if c.kind == "strong"][0].config["version"] == "standard"
    with pytest.raises(SpecError, match="version must be"):
        parse_spec(SPEC + 'version = "plus"\n', path=tmp_path / "d.toml")


def test_evaluate_strong_version_standard_from_the_cli(tmp_path):
    from advlab.cli import main

    ckpt = tmp_path / "cnn"
    assert main(["train", "--data", "digits", "--model", "small-cnn", "--epochs", "2", "--out", str(ckpt),
                 "--no-progress"]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--attacks", "fgsm", "--eps", "0.1", "--strong",
                 "--strong-version", "standard", "--steps", "3", "--n", "20", "--out", str(out),
                 "--no-progress"]) == 0
    import json

    rows = json.loads((out / "results.json").read_text())["rows"]
    names = [r["attack"] for r in rows]
    assert "APGD-CE → APGD-T → FAB-T → Square" in names
    assert "AutoAttack standard" in (out / "strong.md").read_text()
