"""#12: experiment specs: parsing, validation before anything runs (key, file:line, valid choices),
expansion into cells, and content hashes that are stable and change with any setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from advlab.runs.spec import SpecError, cell_hash, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "specs"

GOOD = """
[study]
name = "t"

[data.digits]
name = "digits"
n = 50

[models.cnn]
zoo = "small-cnn"
data = "digits"
epochs = 1

[models.pgd]
zoo = "small-cnn"
data = "digits"
epochs = 1
recipe = "pgd"
recipe_eps = 0.1

[[measure]]
kind = "robust"
models = ["cnn", "pgd"]
data = "digits"
attacks = ["fgsm", { name = "pgd", steps = 5 }]
eps = [0.05, 0.1]
seeds = [0, 1]

[[measure]]
kind = "minimal"
models = ["cnn"]
data = "digits"
attacks = ["deepfool"]

[[measure]]
kind = "transfer"
sources = ["cnn"]
targets = ["pgd"]
data = "digits"
attacks = ["mifgsm"]
eps = [0.1]
"""


def test_a_spec_expands_into_train_cells_first_then_measurements():
    spec = parse_spec(GOOD)
    kinds = [c.kind for c in spec.cells]
    assert kinds[:2] == ["train", "train"] and set(kinds[2:]) == {"robust", "minimal", "transfer"}
    robust = [c for c in spec.cells if c.kind == "robust"]
    assert len(robust) == 2 * 2 * 2          # models x attacks x seeds
    trained = {c.label: c.hash for c in spec.cells if c.kind == "train"}
    for c in robust:
        assert c.needs == (trained[c.config["model"]["name"]],)     # a model is a cell of its own
        assert c.config["model"]["cell"] in trained.values()
    transfer = next(c for c in spec.cells if c.kind == "transfer")
    assert set(transfer.needs) == set(trained.values())
    assert len({c.hash for c in spec.cells}) == len(spec.cells)


def test_hashes_are_stable_and_change_with_any_setting():
    a, b = parse_spec(GOOD), parse_spec(GOOD)
    assert [c.hash for c in a.cells] == [c.hash for c in b.cells]
    assert cell_hash("robust", {"x": 1, "y": [1, 2]}) == cell_hash("robust", {"y": [1, 2], "x": 1})
    changed = parse_spec(GOOD.replace("epochs = 1\nrecipe", "epochs = 2\nrecipe"))
    old = {c.label: c.hash for c in a.cells}
    new = {c.label: c.hash for c in changed.cells}
    assert old["cnn"] == new["cnn"] and old["pgd"] != new["pgd"]     # the changed model's cell
    assert old["fgsm pgd"] != new["fgsm pgd"]                         # and every cell that uses it
    assert old["fgsm cnn"] == new["fgsm cnn"]
    for a_text, b_text in (("n = 50", "n = 51"), ("steps = 5", "steps = 6"), ("0.05, 0.1]", "0.05, 0.11]")):
        x, y = parse_spec(GOOD), parse_spec(GOOD.replace(a_text, b_text))
        assert {c.hash for c in x.cells if c.kind == "robust"} != {c.hash for c in y.cells if c.kind == "robust"}


def _line_of(text: str, needle: str) -> int:
    return next(i + 1 for i, ln in enumerate(text.splitlines()) if needle in ln)


@pytest.mark.parametrize("old, new, message", [
    ("epochs = 1\nrecipe", "epoch = 1\nrecipe", "unknown key 'epoch' in [models.pgd] (a zoo model) (did you mean 'epochs'?)"),
    ('kind = "robust"', 'kind = "robustness"', "needs kind = one of robust, strong, minimal, transfer"),
    ('attacks = ["deepfool"]', 'attacks = ["deepfool"]\neps = [0.1]', "takes no eps"),
    ('attacks = ["fgsm", {', 'attacks = ["deepfool", {', "deepfool is a minimal-perturbation attack: it takes no eps"),
    ('attacks = ["fgsm", {', 'threat = "white-box"\nattacks = ["square", {', 'square is a black-box (query) attack but this measurement says threat = "white-box"'),
    ('attacks = ["fgsm", {', 'threat = "black-box"\nattacks = ["fgsm", {', 'fgsm needs gradients but this measurement says threat = "black-box"'),
    ('attacks = ["deepfool"]', 'attacks = ["hsj"]', "hsj is not a white-box minimal-perturbation attack"),
    ('models = ["cnn", "pgd"]', 'models = ["cnn", "pdg"]', "model 'pdg' is not defined; models of this spec: cnn, pgd"),
    ('zoo = "small-cnn"\ndata = "digits"\nepochs = 1\n\n', 'zoo = "small-cnnn"\ndata = "digits"\nepochs = 1\n\n', "unknown architecture 'small-cnnn'"),
    ('name = "digits"\nn = 50', 'name = "digitz"\nn = 50', "unknown dataset 'digitz'"),
    ('eps = [0.05, 0.1]', 'eps = [0.1, 0.05]', "strictly increasing"),
    ('eps = [0.05, 0.1]', 'eps = "0.1"', "eps must be a non-empty list"),
    ('seeds = [0, 1]', 'seeds = [0, -1]', "seeds must be an integer >= 0"),
    ('{ name = "pgd", steps = 5 }', '{ name = "pgd", stepz = 5 }', "attack option 'stepz' is not known"),
    ('{ name = "pgd", steps = 5 }', '{ name = "fgsm", steps = 5 }', "fgsm does not take steps"),
    ('recipe = "pgd"', 'recipe = "pgdd"', "unknown recipe 'pgdd'"),
    ('recipe = "pgd"', 'recipe = "pgd"\nhidden = [16]', "architecture 'small-cnn' takes no hidden widths"),
])
def test_a_bad_spec_is_refused_naming_the_key_the_line_and_the_choices(tmp_path, old, new, message):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert message in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_the_line_number_points_at_the_key():
    text = GOOD.replace("epochs = 1\nrecipe", "epoch = 1\nrecipe")
    with pytest.raises(SpecError) as err:
        parse_spec(text, path=Path("study.toml"))
    assert f"study.toml:{_line_of(text, 'epoch = 1')}:" in str(err.value)
    text = GOOD.replace("seeds = [0, 1]", "seeds = [0, 1]\nattack = 3")
    with pytest.raises(SpecError) as err:
        parse_spec(text, path=Path("s.toml"))
    assert f"s.toml:{_line_of(text, 'attack = 3')}:" in str(err.value) and "did you mean 'attacks'" in str(err.value)


def test_invalid_toml_and_missing_sections(tmp_path):
    with pytest.raises(SpecError, match="not valid TOML"):
        parse_spec("[models\nzoo=1")
    with pytest.raises(SpecError, match="defines no \\[models.NAME\\]"):
        parse_spec("[study]\nname='x'\n")
    with pytest.raises(SpecError, match="no \\[\\[measure\\]\\]"):
        parse_spec('[models.a]\nzoo = "mlp"\ndata = "digits"\n')
    with pytest.raises(SpecError, match="exactly one of zoo"):
        parse_spec('[models.a]\nzoo = "mlp"\ncheckpoint = "x"\n[[measure]]\nkind="robust"\n')
    with pytest.raises(SpecError, match="no checkpoint at"):
        parse_spec(f'[models.a]\ncheckpoint = "{tmp_path}/none"\n[[measure]]\nkind="robust"\n')
    with pytest.raises(FileNotFoundError, match="no spec file"):
        load_spec(tmp_path / "nope.toml")


def test_a_checkpoint_model_is_identified_by_its_weights(tmp_path):
    from advlab.models import build_seeded, save

    ck = tmp_path / "ck"
    save(build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=0), ck, card={"dataset": "digits"})
    text = (f'[models.m]\ncheckpoint = "{ck}"\n[[measure]]\nkind = "robust"\nmodels = ["m"]\ndata = "digits"\n'
            'attacks = ["fgsm"]\neps = [0.1]\n')
    a = parse_spec(text).cells[0]
    save(build_seeded("mlp", in_shape=(1, 8, 8), num_classes=10, seed=1), ck, card={"dataset": "digits"},
         overwrite=True)
    b = parse_spec(text).cells[0]
    assert a.config["model"]["sha256"] != b.config["model"]["sha256"] and a.hash != b.hash
    assert a.needs == ()


def test_every_example_spec_parses():
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files and any(f.name == "quick.toml" for f in files)
    kinds: set[str] = set()
    recipes: set[str] = set()
    for f in files:
        cells = load_spec(f).cells
        assert cells, f
        kinds |= {c.kind for c in cells}
        recipes |= {c.config["recipe"]["name"] for c in cells if c.kind == "train"}
    # a spec for each measurement kind, and one whose models are trained by defense recipes
    assert {"robust", "strong", "minimal", "transfer", "train"} <= kinds
    assert {"pgd", "trades", "fgsm-mix"} <= recipes


def test_transfer_cells_craft_with_every_iteration():
    """Reproducer (advlab reproduce --quick, claim 1): transfer cells ran I-FGSM and MI-FGSM with
    evaluation mode's early stop, so the source's examples stopped just past its boundary and
    transferred at 11% where FGSM's reached 35%. Crafting now runs all T iterations, as the
    papers do; an explicit early_stop is kept; FGSM (one step) has no such option."""
    from advlab.runs.spec import parse_spec

    spec = parse_spec("""
[data.d]
name = "digits"
[models.a]
zoo = "mlp"
data = "digits"
[models.b]
zoo = "mlp"
data = "digits"
seed = 1
[[measure]]
kind = "transfer"
sources = ["a"]
targets = ["b"]
data = "d"
attacks = ["fgsm", { name = "mifgsm", steps = 10 }, { name = "ifgsm", early_stop = true }]
eps = [0.1]
""")
    got = {c.config["attack"]["name"]: c.config["attack"] for c in spec.cells if c.kind == "transfer"}
    assert got["fgsm"] == {"name": "fgsm"}
    assert got["mifgsm"]["early_stop"] is False and got["ifgsm"]["early_stop"] is True


def test_hidden_widths_and_theorem_3_pairs_are_checked_and_keep_the_old_hashes():
    """``hidden = [...]`` builds the zoo architecture with those widths (a new model, a new hash);
    leaving it out keeps the hashes of the cells made before the key existed. Likewise a bounds
    study's ``transfer_pairs`` (Theorem 3)."""
    mlp = GOOD.replace('zoo = "small-cnn"\ndata = "digits"\nepochs = 1\n\n', 'zoo = "mlp"\ndata = "digits"\nepochs = 1\n\n', 1)
    plain = {c.label: c for c in parse_spec(mlp).cells}
    wide = {c.label: c for c in parse_spec(mlp.replace('zoo = "mlp"\n', 'zoo = "mlp"\nhidden = []\n', 1)).cells}
    assert "options" not in plain["cnn"].config and wide["cnn"].config["options"] == {"hidden": []}
    assert plain["cnn"].hash != wide["cnn"].hash and plain["pgd"].hash == wide["pgd"].hash
    for bad in ("[0]", "[16.5]", '"16"', "[true]"):
        with pytest.raises(SpecError, match="hidden must be a list of positive layer widths"):
            parse_spec(mlp.replace('zoo = "mlp"\n', f'zoo = "mlp"\nhidden = {bad}\n', 1))
    bounds = GOOD + '\n[[measure]]\nkind = "study"\nstudy = "bounds"\nmodels = ["cnn", "pgd"]\ndata = "digits"\neps = [0.0]\n'
    before = [c for c in parse_spec(bounds).cells if c.kind == "study"][0]
    pairs = [c for c in parse_spec(bounds + 'transfer_pairs = [["cnn", "pgd"]]\n').cells if c.kind == "study"][0]
    assert "transfer_pairs" not in before.config and pairs.config["transfer_pairs"] == [["cnn", "pgd"]]
    assert before.hash != pairs.hash
    for bad in ('[["cnn", "cnn"]]', '[["cnn", "mlp"]]', '[["cnn"]]', '"cnn"'):
        with pytest.raises(SpecError, match="transfer_pairs must be a list of pairs of two different names"):
            parse_spec(bounds + f"transfer_pairs = {bad}\n")
